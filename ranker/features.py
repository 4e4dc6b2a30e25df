"""Features of the learned ranking stage: one table of names and definitions, one extraction.

The stage scores each (query, candidate) pair by a feature vector; `FEATURES` is the one place that names
and defines every feature, in column order. `extract` computes the matrix of one query's candidates from
a `CandidateSet` (what retrieval produced, see `ranker.stage`), and both the trainer and the searcher call
it, so there is no training/serving skew: a test asserts that the vectors are identical.

Product-side work (tokenising titles, finding numbers and units, analysing fields for BM25) happens once
per product, into the flat arrays of a `ranker.product_table.ProductTable`; per query a few numpy
operations over the candidates' entries remain, which keeps the stage within a few milliseconds for 400
candidates. Terms, numbers and units are read as `ranker.terms` defines them.

>>> [f.name for f in FEATURES][:4]
['lexical_score', 'lexical_rank', 'lexical_present', 'lexical_norm']
>>> FEATURES[FEATURE_NAMES.index("quantity_conflict")].definition[:40]
'1 when the product states a quantity in '
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from indexer.stores.base import TEXT_FIELDS
from ranker.product_table import GROUPS, STATIC, ProductTable, QueryTerms
from shopfusion.types import LegHit

FEATURE_SET_VERSION = 1
"""Bumped whenever a feature's definition changes; a ranker trained on another version is refused."""

INTENT_LABELS: tuple[str, ...] = ("product_lookup.specific", "product_lookup.attribute", "product_lookup.broad",
                                  "product_information", "comparison", "service")
"""The intent taxonomy (`ranker.intent.LABELS`); a test keeps the two equal."""

ABSENT_RANK = 1000
"""The rank a leg is given for a product it did not retrieve (independent of the depth asked for)."""
RRF_K = 60.0
LEGS: tuple[str, ...] = ("lexical", "dense")

Kind = Literal["candidate", "query"]


@dataclass(frozen=True)
class Feature:
    """`scaled`: the value depends on the catalog's scoring scale (BM25 magnitudes, text lengths); with
    per-query normalisation (for transfer to another catalog) a scaled candidate feature is min-max
    normalised within the query and a scaled query-level feature is left out (set to 0).
    `direction`: +1 when, all else equal, a larger value should never make a product less relevant, -1
    for the opposite, 0 when either can hold (the monotone constraints of `RankerParams.monotone`).
    `title_only`: reads the title alone (on a catalog of titles only it duplicates an all-fields
    feature, so a ranker trained there learns title habits another catalog may not share).
    `catalog_specific`: says how a catalog or its queries are written (which fields are filled, query
    length in characters) more than whether a product is relevant.
    A portable ranker (`PORTABLE_EXCLUDED`) leaves out every scaled, title-only or catalog-specific
    feature."""

    name: str
    definition: str
    kind: Kind = "candidate"
    scaled: bool = False
    direction: int = 0
    title_only: bool = False
    catalog_specific: bool = False


def _leg_features(leg: str, what: str) -> tuple[Feature, ...]:
    scaled = leg == "lexical"
    return (
        Feature(f"{leg}_score", f"{what} of the product for the query, whether or not the {leg} leg retrieved it",
                scaled=scaled, direction=1),
        Feature(f"{leg}_rank", f"log2(1 + rank) in the {leg} leg's list; log2(1 + {ABSENT_RANK}) when not retrieved",
                direction=-1),
        Feature(f"{leg}_present", f"1 when the {leg} leg retrieved the product within its depth", direction=1),
        Feature(f"{leg}_norm", f"{leg}_score min-max normalised over the query's candidates", direction=1),
        Feature(f"{leg}_z", f"{leg}_score as a z-score over the query's candidates", direction=1),
        Feature(f"{leg}_gap", f"(top {leg}_score among the candidates - this one) / |top| (0 for the best)",
                direction=-1),
    )


FEATURES: tuple[Feature, ...] = (
    *_leg_features("lexical", "BM25 (title x2 + brand, description, category, attributes)"),
    *_leg_features("dense", "cosine similarity of the query and product embeddings"),
    Feature("fused_linear", "0.5 * lexical_norm + 0.5 * dense_norm (static linear fusion)", direction=1),
    Feature("fused_rrf", f"sum over legs of 1 / ({RRF_K:g} + rank), 0 for a leg that did not retrieve it",
            direction=1),
    *(Feature(f"bm25_{name}", f"BM25 of the {name} field alone (unboosted), from the lexical engine",
              scaled=True, direction=1, title_only=name == "title") for name in TEXT_FIELDS),
    Feature("bm25_title_share", "2 * bm25_title / lexical_score: how much of the lexical match is in the title",
            title_only=True),
    Feature("title_coverage", "share of the query's distinct terms found in the title", direction=1, title_only=True),
    Feature("all_coverage", "share of the query's distinct terms found in any field", direction=1),
    Feature("title_precision", "share of the title's distinct terms that are query terms", direction=1,
            title_only=True),
    Feature("title_phrase", "1 when the query's terms (2 or more) appear in the title contiguously and in order",
            direction=1, title_only=True),
    Feature("text_phrase", "1 when the query's terms (2 or more) appear contiguously in some field", direction=1),
    Feature("title_bigrams", "share of the query's adjacent term pairs that are adjacent in the title", direction=1,
            title_only=True),
    Feature("title_first_term", "1 when the title's first term is a query term (often the brand)", title_only=True),
    Feature("head_in_title", "1 when the query's last term (the head noun of most product queries) is in the title",
            direction=1, title_only=True),
    Feature("title_trigrams", "share of the query's character trigrams found in the title (misspellings)",
            direction=1, title_only=True),
    Feature("number_match", "share of the query's numbers found in the product's text (0 without numbers)",
            direction=1),
    Feature("quantity_match", "share of the query's quantities (number + unit) the product states", direction=1),
    Feature("quantity_conflict", "1 when the product states a quantity in a unit of the query, never the query's",
            direction=-1),
    Feature("brand_match", "1 when every term of the product's brand is a query term", direction=1),
    Feature("category_match", "share of the leaf category's terms that are query terms", direction=1),
    Feature("category_coverage", "share of the query's distinct terms found in the category path", direction=1),
    Feature("title_length", "number of terms in the title", scaled=True, title_only=True),
    Feature("text_length", "log(1 + characters of all text fields)", scaled=True),
    Feature("has_brand", "1 when the product has a brand", catalog_specific=True),
    Feature("has_category", "1 when the product has a category path", catalog_specific=True),
    Feature("has_description", "1 when the product has a description", catalog_specific=True),
    Feature("has_attributes", "1 when the product has attributes", catalog_specific=True),
    Feature("query_length", "number of distinct query terms", kind="query"),
    Feature("query_chars", "number of characters of the query", kind="query", catalog_specific=True),
    Feature("query_numbers", "number of numbers in the query", kind="query"),
    Feature("query_quantities", "number of quantities (number + unit) in the query", kind="query"),
    Feature("q_lexical_top", "top lexical_score among the candidates", kind="query", scaled=True),
    Feature("q_lexical_gap12", "(first - second score of the lexical leg) / first", kind="query"),
    Feature("q_lexical_gap110", "(first - tenth score of the lexical leg) / first", kind="query"),
    Feature("q_dense_top", "top dense_score among the candidates", kind="query"),
    Feature("q_dense_gap12", "first - second score of the dense leg", kind="query"),
    Feature("q_dense_gap110", "first - tenth score of the dense leg", kind="query"),
    Feature("q_overlap10", "share of the lexical leg's top 10 that is also in the dense leg's top 10", kind="query"),
    Feature("q_lexical_hits", "log(1 + number of products the lexical leg retrieved)", kind="query"),
    *(Feature(f"intent_{label}", f"the intent model's probability of `{label}` (0 with rules only)", kind="query")
      for label in INTENT_LABELS),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
PORTABLE_EXCLUDED: tuple[str, ...] = tuple(f.name for f in FEATURES if f.scaled or f.title_only or f.catalog_specific)
"""What a ranker meant to serve other catalogs leaves out (`shopfusion train ranker --portable`)."""
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
GROUP = {name: i for i, name in enumerate(GROUPS)}
assert FEATURE_NAMES[_COLUMN["title_length"]:_COLUMN["title_length"] + len(STATIC)] == STATIC


@dataclass(frozen=True)
class CandidateSet:
    """Everything the features of one query read; built by `ranker.stage` for search, re-rank and
    training alike.

    `table` / `slots`: the candidates' product data (`ranker.product_table`), `fields`: the per-field
    BM25 matrix `(n, len(TEXT_FIELDS))`, `dense`: cosine similarities `(n,)`, `legs`: each retrieval leg's
    list as retrieved (ranks and presence come from here), `intent`: the intent model's probabilities over
    `INTENT_LABELS` (empty: all 0)."""

    query: str
    ids: tuple[str, ...]
    table: ProductTable
    slots: np.ndarray
    fields: np.ndarray
    dense: np.ndarray
    legs: Mapping[str, Sequence[LegHit]]
    intent: Mapping[str, float] = field(default_factory=dict)


FIELD_BOOSTS = np.array([2.0 if name == "title" else 1.0 for name in TEXT_FIELDS], dtype=np.float32)


# -- extraction ------------------------------------------------------------------------------------------
def _minmax(x: np.ndarray) -> np.ndarray:
    if not len(x):
        return x
    low, high = float(x.min()), float(x.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.ones_like(x)
    return (x - low) / (high - low)


def _zscore(x: np.ndarray) -> np.ndarray:
    if not len(x):
        return x
    spread = float(x.std())
    if spread <= 1e-12 * max(1.0, abs(float(x.mean()))):
        return np.zeros_like(x)
    return (x - x.mean()) / spread


def _leg_ranks(position: Mapping[str, int], hits: Sequence[LegHit]) -> np.ndarray:
    """Each candidate's rank in a leg's list (0: not retrieved); a repeated id keeps its best rank."""
    ranks = np.zeros(len(position), dtype=np.float64)
    for hit in reversed(hits):
        row = position.get(hit.product_id)
        if row is not None:
            ranks[row] = hit.rank
    return ranks


def extract(candidates: CandidateSet, needed: Collection[str] | None = None) -> np.ndarray:
    """The feature matrix `(len(candidates.ids), len(FEATURES))`, float32, columns in `FEATURES` order.

    `needed`: the features a model reads (serving); the phrase, first-term and head tests it does not read
    are left at 0 instead of computed. Every feature a model reads has the value it has without `needed`."""
    c = candidates
    want = (lambda name: True) if needed is None else set(needed).__contains__
    n = len(c.ids)
    x = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if not n:
        return x.astype(np.float32)
    col = _COLUMN
    q = QueryTerms.of(c.query)
    position = {pid: i for i, pid in enumerate(c.ids)}

    # retrieval legs
    lexical = (c.fields.astype(np.float64) @ FIELD_BOOSTS.astype(np.float64))
    dense = c.dense.astype(np.float64)
    fused_rrf = np.zeros(n)
    for leg, score in (("lexical", lexical), ("dense", dense)):
        ranks = _leg_ranks(position, c.legs.get(leg, ()))
        present = ranks > 0
        top = float(score.max())
        x[:, col[f"{leg}_score"]] = score
        x[:, col[f"{leg}_rank"]] = np.log2(1.0 + np.where(present, ranks, ABSENT_RANK))
        x[:, col[f"{leg}_present"]] = present
        x[:, col[f"{leg}_norm"]] = _minmax(score)
        x[:, col[f"{leg}_z"]] = _zscore(score)
        x[:, col[f"{leg}_gap"]] = (top - score) / max(abs(top), 1e-9)
        fused_rrf += np.where(present, 1.0 / (RRF_K + ranks), 0.0)
    x[:, col["fused_linear"]] = 0.5 * x[:, col["lexical_norm"]] + 0.5 * x[:, col["dense_norm"]]
    x[:, col["fused_rrf"]] = fused_rrf
    for i, name in enumerate(TEXT_FIELDS):
        x[:, col[f"bm25_{name}"]] = c.fields[:, i]
    x[:, col["bm25_title_share"]] = np.divide(2.0 * c.fields[:, 0], lexical, out=np.zeros(n), where=lexical > 0)

    # term matches: one pass over the candidates' entries in the product table
    table, slots = c.table, c.slots
    size = max(len(q.distinct), 1)
    head = q.terms[-1] if q.terms and want("head_in_title") else None
    counts, head_hits = table.match_counts(slots, q, head=head)
    sizes = table.sizes(slots)  # distinct title terms, brand terms, leaf terms
    g = GROUP
    x[:, col["title_coverage"]] = counts[:, g["title"]] / size
    x[:, col["title_precision"]] = counts[:, g["title"]] / np.maximum(sizes[:, 0], 1)
    x[:, col["all_coverage"]] = counts[:, g["all"]] / size
    if len(q.terms) >= 2:
        if want("title_phrase"):  # only a candidate holding every query term can hold the phrase
            for i in np.flatnonzero(counts[:, g["title"]] >= len(q.distinct)).tolist():
                x[i, col["title_phrase"]] = q.phrase in table.title_text[int(slots[i])]
        if want("text_phrase"):
            for i in np.flatnonzero(counts[:, g["all"]] >= len(q.distinct)).tolist():
                x[i, col["text_phrase"]] = q.phrase in table.all_text[int(slots[i])]
        x[:, col["title_bigrams"]] = counts[:, g["bigram"]] / len(q.bigrams)
    if want("title_first_term"):
        x[:, col["title_first_term"]] = table.first_term_in(slots, q)
    x[:, col["head_in_title"]] = head_hits
    if q.trigrams:
        x[:, col["title_trigrams"]] = counts[:, g["trigram"]] / len(q.trigrams)
    if q.numbers:
        x[:, col["number_match"]] = counts[:, g["number"]] / len(q.numbers)
    if q.quantities:
        x[:, col["quantity_match"]] = counts[:, g["quantity"]] / len(q.quantities)
        x[:, col["quantity_conflict"]] = (counts[:, g["unit"]] > 0) & (counts[:, g["quantity"]] == 0)
    x[:, col["brand_match"]] = (sizes[:, 1] > 0) & (counts[:, g["brand"]] >= sizes[:, 1])
    x[:, col["category_match"]] = np.divide(counts[:, g["leaf"]], sizes[:, 2], out=np.zeros(n), where=sizes[:, 2] > 0)
    x[:, col["category_coverage"]] = counts[:, g["category"]] / size
    start = col["title_length"]
    x[:, start:start + len(STATIC)] = table.static.data[slots]

    # the query and its retrieval as a whole
    x[:, col["query_length"]] = len(q.distinct)
    x[:, col["query_chars"]] = len(c.query)
    x[:, col["query_numbers"]] = len(q.numbers)
    x[:, col["query_quantities"]] = len(q.quantities)
    lexical_hits = [h.score for h in c.legs.get("lexical", ())]
    dense_hits = [h.score for h in c.legs.get("dense", ())]
    x[:, col["q_lexical_top"]] = float(lexical.max())
    if lexical_hits and lexical_hits[0] > 0:
        x[:, col["q_lexical_gap12"]] = (lexical_hits[0] - _at(lexical_hits, 1)) / lexical_hits[0]
        x[:, col["q_lexical_gap110"]] = (lexical_hits[0] - _at(lexical_hits, 9)) / lexical_hits[0]
    x[:, col["q_dense_top"]] = float(dense.max())
    if dense_hits:
        x[:, col["q_dense_gap12"]] = dense_hits[0] - _at(dense_hits, 1)
        x[:, col["q_dense_gap110"]] = dense_hits[0] - _at(dense_hits, 9)
    top_lexical = {h.product_id for h in list(c.legs.get("lexical", ()))[:10]}
    top_dense = {h.product_id for h in list(c.legs.get("dense", ()))[:10]}
    x[:, col["q_overlap10"]] = len(top_lexical & top_dense) / 10.0
    x[:, col["q_lexical_hits"]] = math.log1p(len(lexical_hits))
    for label in INTENT_LABELS:
        x[:, col[f"intent_{label}"]] = float(c.intent.get(label, 0.0))
    return x.astype(np.float32)


def _at(values: Sequence[float], i: int) -> float:
    return values[min(i, len(values) - 1)]


# -- what a model reads: column selection and per-query normalisation ------------------------------------------
Normalization = Literal["none", "query"]


def model_matrix(x: np.ndarray, names: Sequence[str], normalization: Normalization = "none",
                 offsets: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The columns a model was trained on, in its order, from full `extract` matrices.

    `normalization="query"` (for transfer to other catalogs) min-max normalises each scaled candidate
    feature within each query and zeroes scaled query-level ones; `offsets` delimit the queries of a
    stacked matrix (`[0, n1, n1 + n2, ...]`; default: one query)."""
    unknown = [name for name in names if name not in _COLUMN]
    if unknown:
        from shopfusion.errors import ConfigError

        raise ConfigError(f"the ranker uses features this shopfusion does not compute ({unknown}): retrain it"
                          " with `shopfusion train ranker`")
    columns = [_COLUMN[name] for name in names]
    out = np.array(x[:, columns], dtype=np.float32)
    if normalization == "none":
        return out
    bounds = list(offsets) if offsets is not None else [0, len(x)]
    for j, name in enumerate(names):
        spec = FEATURES[_COLUMN[name]]
        if not spec.scaled:
            continue
        if spec.kind == "query":
            out[:, j] = 0.0
            continue
        for start, end in zip(bounds, bounds[1:], strict=False):
            out[start:end, j] = _minmax(out[start:end, j].astype(np.float64))
    return out


__all__ = ["FEATURES", "FEATURE_NAMES", "FEATURE_SET_VERSION", "INTENT_LABELS", "CandidateSet", "Feature",
           "extract", "model_matrix"]
