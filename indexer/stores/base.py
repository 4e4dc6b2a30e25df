"""The two index Protocols every backend implements, and the per-item bulk report they share.

An index directory holds versions (see `indexer.manifest`); a store instance is one version of one leg.
The ingest pipeline writes a new version, commits it, and only then switches the manifest, so a reader
never sees a half-written version.

Both legs must apply `Filters` with the same semantics as `Filters.matches`; the shared conformance suite
(`tests/indexer/stores/conformance.py`) checks every implementation against it. Lexical stores also
count facets over a given set of products (`facet_counts`) with their engine's own aggregations; the
reference semantics are `reference_facet_counts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from shopfusion.types import (
    Filters,
    LegHit,
    Product,
    attribute_values,
    normalize_brand,
    normalize_category,
    normalize_text,
    value_number,
)

if TYPE_CHECKING:
    from indexer.stores.bm25 import FieldStatistics

TEXT_FIELDS: tuple[str, ...] = ("title", "description", "brand", "category", "attributes")
"""The lexical text fields, in the column order of `field_scores` / `score_products` matrices."""


def field_texts(product: Product) -> dict[str, str]:
    """The text each lexical field indexes for `product` (empty fields left out); both engines index
    exactly these strings."""
    texts = {"title": product.title, "description": product.description or "", "brand": product.brand or "",
             "category": product.category_text, "attributes": product.attribute_text}
    return {name: text for name, text in texts.items() if text}


@dataclass
class BulkReport:
    """Per-item outcome of a bulk write: what succeeded and, for each failure, why."""

    succeeded: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def merge(self, other: BulkReport) -> None:
        self.succeeded += other.succeeded
        self.failed.update(other.failed)


@dataclass(frozen=True)
class FacetRequest:
    """One facet to count: `field` is `brand`, `category`, `price` or an attribute's normalised name.

    - `terms`: the `size` most frequent values (count descending, then value);
    - `category`: every path prefix of every level (the caller keeps the top of each level);
    - `range`: one count per bucket `(-inf, e0), [e0, e1), ..., [en, inf)` of `edges`, and min / max.
    """

    field: str
    kind: Literal["terms", "category", "range"]
    size: int = 10
    edges: tuple[float, ...] = ()
    attribute: bool = False

    @property
    def name(self) -> str:
        return f"attributes.{self.field}" if self.attribute else self.field


@dataclass
class FacetCounts:
    """What a store counted for one `FacetRequest`: value counts and how many more products have a
    value outside them (`other`), or range bucket counts with `present` (products with a number) and
    the min / max among them."""

    values: dict[str, int] = field(default_factory=dict)
    other: int = 0
    ranges: list[int] = field(default_factory=list)
    present: int = 0
    min: float | None = None
    max: float | None = None


def range_specs(edges: Sequence[float]) -> list[dict[str, float]]:
    """Range-aggregation buckets `(-inf, e0), [e0, e1), ..., [en, inf)`, as both engines write them."""
    specs: list[dict[str, float]] = [{"to": edges[0]}]
    specs += [{"from": low, "to": high} for low, high in zip(edges, edges[1:], strict=False)]
    specs.append({"from": edges[-1]})
    return specs


def reference_facet_counts(products: Iterable[Product], request: FacetRequest) -> FacetCounts:
    """The counts every store must produce for `request` over `products` (a Python reference for tests;
    the stores use their engines' aggregations)."""
    values: dict[str, int] = {}
    numbers: list[float] = []
    for product in products:
        if request.field == "brand" and not request.attribute:
            keys = [normalize_brand(product.brand)] if product.brand and normalize_brand(product.brand) else []
        elif request.field == "category" and not request.attribute:
            keys = [normalize_category(product.category_path[:d]) for d in range(1, len(product.category_path) + 1)]
        elif request.field == "price" and not request.attribute:
            keys = [] if product.price is None else [repr(float(product.price))]
            if product.price is not None:
                numbers.append(float(product.price))
        else:
            value = attribute_values(product).get(normalize_text(request.field))
            keys = [] if value is None else [value]
            number = None if value is None else value_number(value)
            if number is not None:
                numbers.append(number)
        for key in keys:
            values[key] = values.get(key, 0) + 1
    if request.kind == "range":
        edges = list(request.edges)
        ranges = [sum(1 for n in numbers if low <= n < high)
                  for low, high in zip([-np.inf, *edges], [*edges, np.inf], strict=True)] if edges else []
        return FacetCounts(ranges=ranges, present=len(numbers), min=min(numbers, default=None),
                           max=max(numbers, default=None))
    ordered = sorted(values.items(), key=lambda item: (-item[1], item[0]))
    if request.kind == "category":
        return FacetCounts(values=dict(ordered))
    return FacetCounts(values=dict(ordered[:request.size]), other=sum(c for _, c in ordered[request.size:]))


@runtime_checkable
class LexicalIndex(Protocol):
    """A BM25 index over product text (title boosted, brand, description, category, attributes)."""

    name: str

    def plan_attribute_fields(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Before a new version's first write: how many products have each attribute (normalised name ->
        products, asked for only by an engine that lays attributes out by it; see the Elasticsearch store)."""
        ...

    def upsert(self, products: Iterable[Product]) -> BulkReport:
        """Add or replace products by id; failures are reported per product, never raised one by one."""
        ...

    def delete(self, ids: Iterable[str]) -> None: ...

    def commit(self) -> None:
        """Make every write so far durable and visible to searches."""
        ...

    def search(self, query: str, k: int, filters: Filters | None = None) -> list[LegHit]:
        """Top-k by BM25 among products matching `filters`; ranks start at 1."""
        ...

    def score(self, query: str, ids: Sequence[str]) -> dict[str, float]:
        """BM25 scores of just these products; a product that does not match the query is absent."""
        ...

    def facet_counts(self, ids: Sequence[str], requests: Sequence[FacetRequest]) -> dict[str, FacetCounts]:
        """Facet counts over just the products `ids`, by `FacetRequest.name`, with the engine's own
        aggregations (semantics: `reference_facet_counts`)."""
        ...

    def field_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """Unboosted BM25 of each text field for just these products, computed by the engine.

        A float32 matrix of shape `(len(ids), len(TEXT_FIELDS))`, rows in the order of `ids`; 0 where a
        field does not match or the product is not indexed. The learned ranking stage reads it as
        features, so every engine must give the same values within tolerance on the same data."""
        ...

    def score_products(self, query: str, products: Sequence[Product]) -> np.ndarray:
        """The same per-field BM25 matrix for products the index does not hold, scored with the index's
        statistics (its document count, document frequencies and average field lengths) as if they were
        indexed, so that re-ranked outside candidates compare with indexed ones."""
        ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def activate(self) -> None:
        """Make this version the one external readers see (Elasticsearch: swap the alias)."""
        ...

    def drop(self) -> None:
        """Delete this version's data."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LocallyAnalyzed(Protocol):
    """A lexical index whose analyzer runs in this process (tantivy). The learned ranking stage then
    analyses each candidate once, keeps the tokens, and scores them with the index's statistics
    (`indexer.stores.bm25`, exactly what `score_products` does) instead of running one search per field:
    the same numbers as `field_scores`, in a fraction of the time."""

    def field_statistics(self, query: str) -> FieldStatistics:
        """The index's BM25 statistics for the query's analysed terms."""
        ...

    def analyze_fields(self, product: Product) -> dict[str, list[str]]:
        """Each text field of `product` analysed as the index analyses it (duplicates kept)."""
        ...


@runtime_checkable
class VectorIndex(Protocol):
    """Dense vectors by product id, searched by inner product (vectors are L2-normalised)."""

    @property
    def dim(self) -> int: ...

    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        """Add or replace vectors; the products provide the filter fields (category, brand, price,
        attributes)."""
        ...

    def delete(self, ids: Iterable[str]) -> None: ...

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[LegHit]: ...

    def score(self, vector: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Inner product of `vector` with each listed product that is in the index."""
        ...

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def commit(self) -> None:
        """Write the index files atomically."""
        ...
