"""Facets: counts per brand, per category level, per attribute value, and price (or numeric attribute)
buckets, over the relevant set of a search.

The relevant set is the fused list of what both legs retrieved for the query under its filters (each
leg's top `depth`): exactly the products a caller can page through, whichever leg found them. The lexical
engine counts them with its own aggregations, restricted to those ids (tantivy `Searcher.aggregate`,
Elasticsearch `aggregations`), so the counts do not depend on the engine or on which leg retrieved a
product. Counts are conjunctive: a facet counts products that pass every filter, its own included.

Kinds, from the attribute catalog: `brand` and text attributes count their top `size` values;
`category` counts the top `size` paths of every level; `price` and numeric attributes count the
catalog's fixed buckets (`indexer.attributes.nice_edges`, `[low, high)`) and give min / max. A bucket's
`value` is what `--filter NAME=VALUE` takes to narrow to it (`10..<25` for a range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexer.attributes import BUILTINS, AttributeCatalog, FieldInfo
from indexer.stores.base import FacetCounts, FacetRequest, LexicalIndex
from shopfusion.errors import QueryError
from shopfusion.types import CATEGORY_SEPARATOR, Facet, FacetBucket, Facets

DEFAULT_FACET_SIZE = 10
MAX_FACET_SIZE = 1000


def facet_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"brand,category"` or `("brand", "colour")` -> the names, without blanks or repeats."""
    parts = value.split(",") if isinstance(value, str) else [p for item in value for p in str(item).split(",")]
    names = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names and (value if isinstance(value, str) else list(value)):
        raise QueryError("no facet named: give names such as --facets brand,category,price")
    return names


@dataclass(frozen=True)
class PlannedFacet:
    """A facet checked against the catalog: the store request and the field it counts."""

    request: FacetRequest
    info: FieldInfo

    @property
    def name(self) -> str:
        """The name results show: the field's normalised name (`attributes.NAME` for an attribute that
        shares its name with a built-in field)."""
        shadowed = not self.info.builtin and self.info.name in BUILTINS
        return f"attributes.{self.info.name}" if shadowed else self.info.name


def plan_facets(names: Sequence[str], catalog: AttributeCatalog, size: int) -> list[PlannedFacet]:
    """Check every name against the catalog (an unknown one is a `QueryError` naming close names)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_FACET_SIZE:
        raise QueryError(f"facet size must be an integer from 1 to {MAX_FACET_SIZE}, got {size!r}")
    planned: dict[str, PlannedFacet] = {}
    for name in names:
        info = catalog.field(name)
        if info.kind == "category":
            request = FacetRequest("category", "category", size)
        elif info.kind == "numeric":
            request = FacetRequest(info.name, "range", size, info.edges, attribute=not info.builtin)
        else:
            request = FacetRequest(info.name, "terms", size, attribute=not info.builtin)
        planned.setdefault(request.name, PlannedFacet(request, info))  # `Colour` and `colour`: one facet
    return list(planned.values())


def count_facets(lexical: LexicalIndex, ids: Sequence[str], planned: Sequence[PlannedFacet]) -> Facets:
    """Facets over the products `ids` (the relevant set), counted by the lexical engine."""
    counts = lexical.facet_counts(ids, [p.request for p in planned]) if ids else {}
    over = len(ids)
    return Facets(over=over, fields=tuple(_facet(p, counts.get(p.request.name, FacetCounts()), over)
                                          for p in planned))


def _facet(planned: PlannedFacet, counts: FacetCounts, over: int) -> Facet:
    request, info = planned.request, planned.info
    name = planned.name
    if request.kind == "range":
        edges = list(request.edges)
        buckets = tuple(
            FacetBucket(value=_range_value(low, high), label=_range_label(low, high), count=count, low=low, high=high)
            for low, high, count in zip([None, *edges], [*edges, None], counts.ranges, strict=False) if count)
        return Facet(name, "range", buckets, missing=over - counts.present, min=counts.min, max=counts.max)
    if request.kind == "category":
        levels: dict[int, list[tuple[str, int]]] = {}
        for value, count in counts.values.items():
            levels.setdefault(value.count(CATEGORY_SEPARATOR) + 1, []).append((value, count))
        shown: list[FacetBucket] = []
        for level in sorted(levels):
            ordered = sorted(levels[level], key=lambda item: (-item[1], item[0]))
            shown += [FacetBucket(value, info.label_of(value), count, level=level)
                      for value, count in ordered[:request.size]]
        top = levels.get(1, [])
        present = sum(count for _, count in top)
        hidden = sum(count for _, count in sorted(top, key=lambda item: (-item[1], item[0]))[request.size:])
        return Facet(name, "category", tuple(shown), missing=over - present, other=hidden)
    ordered = sorted(counts.values.items(), key=lambda item: (-item[1], item[0]))
    buckets = tuple(FacetBucket(value, info.label_of(value), count) for value, count in ordered[:request.size])
    other = counts.other + sum(count for _, count in ordered[request.size:])
    present = sum(counts.values.values()) + counts.other
    return Facet(name, "terms", buckets, missing=over - present, other=other)


def _range_value(low: float | None, high: float | None) -> str:
    """The `--filter` value of a bucket `[low, high)`: `10..<25`, `..<10`, `2500..`."""
    return (_number(low) if low is not None else "") + ".." + (f"<{_number(high)}" if high is not None else "")


def _range_label(low: float | None, high: float | None) -> str:
    if low is None:
        return f"under {_number(high)}"
    if high is None:
        return f"{_number(low)} and above"
    return f"{_number(low)} to under {_number(high)}"


def _number(value: float | None) -> str:
    return f"{value:.15g}"


__all__ = ["DEFAULT_FACET_SIZE", "PlannedFacet", "count_facets", "facet_names", "plan_facets"]
