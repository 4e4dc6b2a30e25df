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
from typing import Protocol, runtime_checkable

import numpy as np

from shopfusion.types import Filters, LegHit, Product


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
