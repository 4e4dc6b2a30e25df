"""Request bodies of the HTTP API (validated with pydantic) and the documented response schema.

Requests mirror the Python client's keyword arguments. Responses are `Results.to_dict()` exactly, the
same document `shopfusion search --json` prints, versioned by its `schema` field
(`shopfusion.results/1`); the JSON Schema below documents today's fields and allows new ones, so a field
added to `Results` appears in the API without a change here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shopfusion.types import RESULTS_SCHEMA

Finite = Field(default=None, allow_inf_nan=False)


class RangeBody(BaseModel):
    """Bounds on a numeric attribute: `min` / `max` inclusive, `below` exclusive (a facet bucket)."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    below: float | None = Field(default=None, allow_inf_nan=False)


class FiltersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: list[str] | str | None = Field(
        default=None, description='A category path prefix: ["Tools", "Drills"] or "Tools > Drills".')
    brands: list[str] = Field(default_factory=list, description="Any of these brands (case-insensitive).")
    price_min: float | None = Field(default=None, allow_inf_nan=False)
    price_max: float | None = Field(default=None, allow_inf_nan=False)
    price_below: float | None = Field(default=None, allow_inf_nan=False,
                                      description="Exclusive upper bound (what a facet bucket means).")
    attributes: dict[str, list[str | float] | RangeBody] = Field(default_factory=dict, description=(
        'Catalog attributes (listed by `GET /attributes`): any of some values, '
        '{"colour": ["black", "grey"]}, or a range on a numeric one, {"weight": {"min": 1, "max": 5}}.'
        " Different attributes must all hold."))


class FusionBody(BaseModel):
    """Per-call fusion overrides; left out, the intent policy chooses."""

    model_config = ConfigDict(extra="forbid")

    fusion: Literal["rrf", "linear"] | None = None
    alpha: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                description="Linear fusion: weight of the dense leg.")
    normalization: Literal["minmax", "zscore"] | None = None
    rrf_k: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    explain: bool = Field(default=False, description="Per-leg raw, normalised score, rank and contribution.")


class SearchBody(FusionBody):
    query: str = Field(description="The shopper's query.")
    k: int | None = Field(default=None, ge=1, description="Number of hits (default search.k; at most limits.max_k).")
    depth: int | None = Field(default=None, ge=1, description="Candidates per leg before fusion (limits.max_depth).")
    mode: Literal["hybrid", "lexical", "dense"] = "hybrid"
    filters: FiltersBody | None = None
    facets: list[str] | str | None = Field(default=None, description=(
        'Fields to count over the relevant set (each leg\'s top `depth`, fused): "brand,category,price,colour".'))
    facet_size: int = Field(default=10, ge=1, le=1000, description="Values per facet (per level for category).")
    sort: str | None = Field(default=None, description="Re-order the relevant set: price, -price, brand, an attribute.")
    page: int | None = Field(default=None, ge=1, description="Page of `k` hits (1-based) of the relevant set.")
    offset: int | None = Field(default=None, ge=0, description="Or: skip this many hits of the relevant set.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "cordless drill", "k": 5},
        {"query": "cordless drill", "k": 10, "filters": {"category": "Tools > Power Tools", "brands": ["Makita"],
                                                         "price_max": 200}, "explain": True},
        {"query": "wireless mouse", "k": 10, "page": 2, "sort": "-price", "facets": "brand,price,colour",
         "filters": {"attributes": {"colour": ["black"], "weight": {"max": 100}}, "price_below": 50}},
    ]})


class RerankBody(FusionBody):
    query: str
    candidates: Any = Field(description=(
        "What to re-rank, as it came: a list of ids or objects with `id`, optional `score` and product fields"
        " or `text`; or an Elasticsearch/OpenSearch `_search` response body (`hits.hits[]`); or a Solr"
        " response body (`response.docs[]`)."))
    fields: dict[str, str | list[str]] | None = Field(default=None, description=(
        "Which source field holds each product field, e.g. {\"title\": \"name\", \"brand\": \"maker.name\"};"
        " keys: id, score, title, description, brand, category, price, attributes, text."))
    engine_weight: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                                 description="Weight of the other engine's scores as a third leg (0: shown only).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "cordless drill", "candidates": ["p01", {"id": "x-1", "title": "Ryobi cordless drill 18V"}]},
        {"query": "cordless drill", "fields": {"title": "name"}, "candidates": {"hits": {"hits": [
            {"_id": "p02", "_score": 9.1, "_source": {"name": "Bosch hammer drill 750W"}},
            {"_id": "ext-9", "_score": 4.0, "_source": {"name": "Ryobi cordless drill 18V"}}]}}},
        {"query": "cordless drill", "candidates": {"response": {"docs": [
            {"id": "p01", "score": 2.5, "title": ["Makita cordless drill 18V"]}]}}},
    ]})


LEG = {"type": "object", "properties": {
    "raw": {"type": ["number", "null"]}, "normalized": {"type": ["number", "null"]},
    "rank": {"type": ["integer", "null"]}, "contribution": {"type": "number"}}}
RESULTS_JSON_SCHEMA: dict[str, Any] = {
    "title": "Results",
    "description": ("`Results.to_dict()`: the body of /search and /rerank and the output of `--json`."
                    f" Versioned by `schema` ({RESULTS_SCHEMA}); new fields may appear without a version bump."),
    "type": "object",
    "required": ["schema", "query", "hits"],
    "additionalProperties": True,
    "properties": {
        "schema": {"type": "string", "const": RESULTS_SCHEMA},
        "query": {"type": "string"},
        "intent": {"type": ["object", "null"], "description": "Predicted intent, its probability and policy row."},
        "fusion": {"type": "object", "description": "How the scores were fused (method, alpha, depth, counts)."},
        "message": {"type": ["string", "null"], "description": "For the shopper (e.g. a service question)."},
        "warnings": {"type": "array", "items": {"type": "string"}, "description": "For the operator."},
        "hits": {"type": "array", "items": {"type": "object", "additionalProperties": True, "properties": {
            "product_id": {"type": "string"}, "score": {"type": "number"}, "rank": {"type": "integer"},
            "product": {"type": "object"}, "legs": {"type": "object", "additionalProperties": LEG}}}},
        "unscored": {"type": "array", "description": "Re-rank candidates that could not be scored, and why (they are the last hits).",
                     "items": {"type": "object", "properties": {"product_id": {"type": "string"},
                                                                "reason": {"type": "string"}}}},
        "page": {"type": ["object", "null"], "description": (
            "Where the hits sit in the relevant set (search): offset, size, number, total, depth, sort, exhausted."
            " A page past `total` is empty: raise `depth` to page further.")},
        "facets": {"type": ["object", "null"], "description": (
            "Counts over the relevant set when `facets` were asked for: `over` (its size) and `fields`: per"
            " field its `kind` (terms, category, range), `buckets` (value to filter on, label, count; level or"
            " low/high), `missing`, `other`, and min/max for ranges.")},
    },
}
RESULTS_EXAMPLE: dict[str, Any] = {
    "schema": RESULTS_SCHEMA, "query": "cordless drill",
    "intent": {"label": "product", "probability": 0.93, "policy": {"method": "linear", "alpha": 0.5}},
    "fusion": {"mode": "hybrid", "method": "linear", "alpha": 0.5, "normalization": "minmax", "depth": 200},
    "message": None, "warnings": [],
    "hits": [{"product_id": "p01", "score": 0.97, "rank": 1, "product": {
        "id": "p01", "title": "Makita cordless drill 18V", "description": "Compact drill driver", "brand": "Makita",
        "category_path": ["Tools", "Power Tools", "Drills"], "price": 129.0, "attributes": {"voltage": "18V"}}}],
    "unscored": [],
}
ERROR_JSON_SCHEMA: dict[str, Any] = {
    "title": "Error", "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "type", "message"], "properties": {
        "status": {"type": "integer"}, "type": {"type": "string"},
        "message": {"type": "string", "description": "What went wrong and how to fix the request."}}}},
    "example": {"error": {"status": 400, "type": "QueryError", "message": (
        "k = 5000 is more than limits.max_k = 1000: ask for fewer (or raise SHOPFUSION_LIMITS_MAX_K)")}},
}
