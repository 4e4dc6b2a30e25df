"""Paging and sorting over the relevant set of a search.

The relevant set is the fused list of what each leg retrieved under the filters (its top `depth`). Its
relevance order is deterministic (`ranker.fusion` breaks ties by best leg rank, then product id), so the
same query over the same index version and depth gives the same pages, page after page.

`sort` re-orders that set, never the whole catalog: by `price`, `brand`, `category` or any attribute,
ascending (`price`) or descending (`-price`); products without a value come last, and equal values keep
their relevance order. A page is the slice `offset` to `offset + size` of that order. A page past the end
of the set is empty and `Page.total` says how many products there are; to page further, raise `depth`
(more candidates per leg), which also changes the set itself.

>>> from ranker.fusion import Fused
>>> fused = [Fused(pid, 1.0 / (i + 1), {}) for i, pid in enumerate("abcde")]
>>> shown, page = select_page(fused, offset=2, size=2, depth=5)
>>> [f.product_id for f in shown], page.total, page.number
(['c', 'd'], 5, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from indexer.attributes import AttributeCatalog
from ranker.fusion import Fused
from shopfusion.errors import QueryError
from shopfusion.types import Page, normalize_text

RELEVANCE = "relevance"


@dataclass(frozen=True)
class SortKey:
    """Sort by `field` (`price`, `brand`, `category` or `attributes.<name>`); `numeric` compares numbers,
    otherwise normalised text."""

    field: str
    descending: bool = False
    numeric: bool = False

    @property
    def text(self) -> str:
        name = self.field[len("attributes."):] if self.field.startswith("attributes.") else self.field
        return ("-" if self.descending else "") + name


SortValues = Callable[[Sequence[str], SortKey], Sequence[Any]]
"""Looks up the sort value of each product id (None when it has none)."""


def parse_sort(text: str | None, catalog: Callable[[], AttributeCatalog]) -> SortKey | None:
    """`price`, `-price`, `brand`, `-weight`, `relevance` (or None) -> a `SortKey` (None: relevance).
    An unknown field is a `QueryError` that names close ones."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise QueryError(f"sort must be a field name such as 'price' or '-price', got {text!r}")
    spec = text.strip()
    descending = spec.startswith("-")
    name = spec[1:].strip() if descending or spec.startswith("+") else spec
    if not normalize_text(name):
        raise QueryError(f"sort {text!r} names no field: use e.g. price, -price, brand or an attribute")
    if normalize_text(name) == RELEVANCE:
        if descending:
            raise QueryError("sort by relevance is always best first: drop the '-'")
        return None
    info = catalog().field(name)
    field = info.name if info.builtin else f"attributes.{info.name}"
    return SortKey(field, descending, numeric=info.kind == "numeric")


def select_page(fused: Sequence[Fused], *, offset: int, size: int, depth: int, sort: SortKey | None = None,
                values: SortValues | None = None) -> tuple[list[Fused], Page]:
    """The page `offset .. offset + size` of `fused` (the relevant set, best first), re-ordered by
    `sort` first when given (`values` looks the sort values up)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise QueryError(f"offset must be a whole number >= 0, got {offset!r}")
    ordered = list(fused)
    if sort is not None:
        if values is None:
            raise QueryError("sorting needs the index's columns: search through HybridSearcher")
        found = values([f.product_id for f in ordered], sort)
        present = [(value, f) for value, f in zip(found, ordered, strict=True) if value is not None]
        absent = [f for value, f in zip(found, ordered, strict=True) if value is None]
        present.sort(key=lambda item: item[0], reverse=sort.descending)  # stable: ties keep relevance order
        ordered = [f for _, f in present] + absent
    page = Page(offset=offset, size=size, total=len(ordered), depth=depth,
                sort=sort.text if sort is not None else RELEVANCE)
    return ordered[offset:offset + size], page


__all__ = ["RELEVANCE", "SortKey", "parse_sort", "select_page"]
