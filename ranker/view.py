"""What a search returns of its relevant set: which page, in which order, and which facets.

`ResultView` is the caller's request (page offset, sort, facet names); `plan_view` checks it and the
filters against the index's attribute catalog before any leg runs (an unknown attribute or sort field, a
range on a text attribute: a `QueryError` that says how to fix it); `ViewPlan.apply` then cuts the page
from the fused list and counts the facets over all of it. The searcher calls these two and nothing else.

>>> ResultView(offset=20, sort="-price", facets="brand,category").facets
('brand', 'category')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from indexer.attributes import AttributeCatalog
from indexer.stores.base import LexicalIndex
from ranker.facets import DEFAULT_FACET_SIZE, PlannedFacet, count_facets, facet_names, plan_facets
from ranker.fusion import Fused
from ranker.paging import SortKey, SortValues, parse_sort, select_page
from shopfusion.errors import QueryError
from shopfusion.types import Facets, Filters, Page


@dataclass(frozen=True)
class ResultView:
    """`offset`: how many products of the relevant set to skip (page `n` of size `k` is offset
    `(n - 1) * k`); `sort`: `price`, `-price`, `brand`, an attribute, or None for relevance; `facets`:
    field names to count (a sequence, or one comma-separated string); `facet_size`: values per facet."""

    offset: int = 0
    sort: str | None = None
    facets: Sequence[str] | str = field(default=())
    facet_size: int = DEFAULT_FACET_SIZE

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise QueryError(f"offset must be a whole number >= 0, got {self.offset!r}")
        object.__setattr__(self, "facets", facet_names(self.facets) if self.facets else ())

    @classmethod
    def for_page(cls, page: int, k: int, **kwargs: object) -> ResultView:
        """Page `page` (1-based) of `k` hits."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise QueryError(f"page must be a whole number >= 1, got {page!r}")
        return cls(offset=(page - 1) * k, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ViewPlan:
    view: ResultView
    sort: SortKey | None
    facets: tuple[PlannedFacet, ...]

    def apply(self, fused: Sequence[Fused], *, k: int, depth: int, lexical: LexicalIndex,
              values: SortValues) -> tuple[list[Fused], Page, Facets | None]:
        """The page to show, where it sits, and the facets over the whole relevant set `fused`."""
        shown, page = select_page(fused, offset=self.view.offset, size=k, depth=depth, sort=self.sort,
                                  values=values)
        facets = count_facets(lexical, [f.product_id for f in fused], self.facets) if self.facets else None
        return shown, page, facets


def plan_view(view: ResultView | None, filters: Filters | None,
              catalog: Callable[[], AttributeCatalog]) -> ViewPlan:
    """Check `view` and the attribute filters against the catalog (loaded only when something needs it)."""
    view = view or ResultView()
    if filters is not None and filters.attributes:
        catalog().check_filters(filters)
    sort = parse_sort(view.sort, catalog)
    facets = tuple(plan_facets(view.facets, catalog(), view.facet_size)) if view.facets else ()
    return ViewPlan(view, sort, facets)


__all__ = ["ResultView", "ViewPlan", "plan_view"]
