"""The two index Protocols every backend implements, and the per-item bulk report they share.

An index directory holds versions (see `indexer.manifest`); a store instance is one version of one leg.
The ingest pipeline writes a new version, commits it, and only then switches the manifest, so a reader
never sees a half-written version.

Both legs must apply `Filters` with the same semantics as `Filters.matches`; the shared conformance suite
(`tests/indexer/stores/conformance.py`) checks every implementation against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from shopfusion.types import Filters, LegHit, Product

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


@runtime_checkable
class LexicalIndex(Protocol):
    """A BM25 index over product text (title boosted, brand, description, category, attributes)."""

    name: str

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
        """Add or replace vectors; the products provide the filter fields (category, brand, price)."""
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
