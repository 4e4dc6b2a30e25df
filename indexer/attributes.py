"""The attribute catalog of one index version: which fields can be filtered, faceted and sorted on.

Built at index time from every product of the version (`CatalogBuilder`) and saved beside it as
`attributes.json`, so a query can be checked before any engine runs it: an unknown attribute is an error
that lists close names, a range on a text attribute is an error, and `shopfusion attributes` lists what
there is. For each field it records:

- `kind`: `numeric` when every value of the attribute is a plain number (`6`, `2.5`, `-3`), else `text`;
  the built-in fields are `brand` (text), `category` (a path) and `price` (numeric);
- `products`: how many products have it, `distinct`: how many distinct normalised values;
- `values`: the `VALUE_CAP` most frequent values with their counts and a display label (the first
  spelling seen), `min` / `max`, and for numeric fields the facet bucket `edges` (`nice_edges`).

Names and values are normalised with `shopfusion.types.normalize_text` / `normalize_value`, as the
stores index them.

>>> from shopfusion.types import Product
>>> builder = CatalogBuilder()
>>> builder.add(Product("1", "Mouse", brand="HP", attributes={"Colour": "Black", "weight": "85"}))
>>> builder.add(Product("2", "Mouse", brand="Dell", attributes={"colour": "White", "weight": "90.5"}))
>>> catalog = builder.build()
>>> catalog.field("colour").kind, catalog.field("weight").kind, catalog.field("weight").max
('text', 'numeric', 90.5)
"""

from __future__ import annotations

import difflib
import json
import math
import os
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from shopfusion.errors import IndexStateError, QueryError
from shopfusion.types import (
    CATEGORY_SEPARATOR,
    AttributeFilter,
    Filters,
    Product,
    attribute_values,
    normalize_brand,
    normalize_category,
    normalize_text,
    normalize_value,
    value_number,
)

CATALOG_FILE = "attributes.json"
CATALOG_FORMAT = 1
VALUE_CAP = 1000
"""Values listed per field (the most frequent); facet labels of rarer values are the values themselves."""
DISTINCT_CAP = 100_000
"""Distinct values tracked per field while building; a field with more reports `distinct_capped`."""
MAX_BUCKETS = 8
BUILTINS = ("brand", "category", "price")
FieldKind = Literal["text", "numeric", "category"]


@dataclass(frozen=True)
class FieldInfo:
    """One filterable field of the catalog (see the module docstring)."""

    name: str
    kind: FieldKind
    products: int
    distinct: int
    builtin: bool = False
    label: str = ""
    values: tuple[tuple[str, str, int], ...] = ()
    distinct_capped: bool = False
    min: float | None = None
    max: float | None = None
    edges: tuple[float, ...] = ()

    def label_of(self, value: str) -> str:
        return self._labels.get(value, value)

    @cached_property
    def _labels(self) -> dict[str, str]:
        return {key: label for key, label, _ in self.values}

    def to_dict(self, values: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "builtin": self.builtin,
                                "label": self.label or self.name, "products": self.products,
                                "distinct": self.distinct, "distinct_capped": self.distinct_capped}
        if self.kind == "numeric":
            data.update(min=self.min, max=self.max, edges=list(self.edges))
        shown = self.values if values is None else self.values[:values]
        data["values"] = [{"value": v, "label": lab, "count": c} for v, lab, c in shown]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldInfo:
        return cls(name=data["name"], kind=data["kind"], products=int(data["products"]),
                   distinct=int(data["distinct"]), builtin=bool(data.get("builtin")),
                   label=data.get("label", ""), distinct_capped=bool(data.get("distinct_capped")),
                   values=tuple((v["value"], v["label"], int(v["count"])) for v in data.get("values", ())),
                   min=data.get("min"), max=data.get("max"), edges=tuple(data.get("edges", ())))


@dataclass
class AttributeCatalog:
    """The filterable fields of one index version: the built-ins and every catalog attribute."""

    products: int
    fields: dict[str, FieldInfo] = field(default_factory=dict)

    # -- lookup ------------------------------------------------------------------------------------
    def field(self, name: str) -> FieldInfo:
        """The field called `name` (built-in first; `attributes.NAME` forces the attribute) or a
        `QueryError` naming close matches."""
        found = self.find(name)
        if found is None:
            raise QueryError(self._unknown(name))
        return found

    def find(self, name: str) -> FieldInfo | None:
        key = normalize_text(name)
        if key.startswith("attributes."):
            return self.fields.get("attributes." + key[len("attributes."):])
        if key in BUILTINS:
            return self.fields.get(key)
        return self.fields.get("attributes." + key)

    def attribute(self, name: str) -> FieldInfo:
        """A catalog attribute (never a built-in field) or a `QueryError` naming close matches."""
        key = normalize_text(name)
        key = key[len("attributes."):] if key.startswith("attributes.") else key
        found = self.fields.get("attributes." + key)
        if found is None:
            raise QueryError(self._unknown(key))
        return found

    @property
    def attributes(self) -> list[FieldInfo]:
        return [info for info in self.fields.values() if not info.builtin]

    def close_names(self, name: str, n: int = 6) -> list[str]:
        """Attribute names close to `name`: by spelling, or with a word close to it (`color` finds
        `product_colour`), most common first."""
        key = normalize_text(name)
        names = [info.name for info in self.attributes]
        close = set(difflib.get_close_matches(key, names, n=n, cutoff=0.6))
        for other in names:
            words = other.replace("_", " ").split()
            if key in other or difflib.get_close_matches(key, words, n=1, cutoff=0.8):
                close.add(other)
        counts = {info.name: info.products for info in self.attributes}
        return sorted(close, key=lambda other: (-counts[other], other))[:n]

    def _unknown(self, name: str) -> str:
        close = self.close_names(name)
        hint = (f"close names: {', '.join(close)}" if close else
                f"this index has {len(self.attributes)} attributes")
        return (f"unknown attribute {name!r} ({hint}): `shopfusion attributes --index DIR` lists them all;"
                " built-in fields are brand, category and price")

    # -- checking a query ----------------------------------------------------------------------------
    def check_filters(self, filters: Filters | None) -> None:
        """Raise a `QueryError` that says how to fix any attribute filter this index cannot answer."""
        if filters is None:
            return
        for attribute in filters.attributes:
            self.check_attribute_filter(attribute)

    def check_attribute_filter(self, attribute: AttributeFilter) -> None:
        info = self.attribute(attribute.name)
        if info.kind != "numeric" and attribute.is_range:
            numeric = [i.name for i in sorted(self.attributes, key=lambda i: -i.products) if i.kind == "numeric"]
            raise QueryError(
                f"{info.name!r} is a text attribute: a range applies to numeric attributes only"
                f" (e.g. {', '.join(numeric[:4]) or 'none in this index'}); filter it by value instead,"
                f" e.g. {info.name}={info.values[0][0] if info.values else 'VALUE'}")
        if info.kind == "numeric":
            for value in attribute.values:
                if value_number(normalize_value(value)) is None:
                    raise QueryError(
                        f"{info.name!r} is a numeric attribute ({info.min:g} to {info.max:g}): {value!r} is"
                        f" not a number; give a number or a range, e.g. {info.name}={info.min:g}..{info.max:g}")

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        data = {"format": CATALOG_FORMAT, "products": self.products,
                "fields": [info.to_dict() for info in self.fields.values()]}
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AttributeCatalog:
        target = Path(path)
        if not target.is_file():
            raise IndexStateError(
                f"{target} is missing: this index was built by a shopfusion without attribute filters;"
                " re-index it once (`shopfusion index CATALOG --index DIR`; unchanged products keep their"
                " vectors)")
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
            if data.get("format") != CATALOG_FORMAT:
                raise ValueError(f"format {data.get('format')}")
            fields = [FieldInfo.from_dict(item) for item in data["fields"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexStateError(f"{target} is unreadable ({exc}): re-index with `shopfusion index`") from exc
        return cls(products=int(data["products"]), fields={_field_key(f): f for f in fields})

    def to_dict(self, values: int | None = 20) -> dict[str, Any]:
        return {"products": self.products, "fields": [info.to_dict(values) for info in self.fields.values()]}


def _field_key(info: FieldInfo) -> str:
    return info.name if info.builtin else "attributes." + info.name


class _FieldStats:
    """Running statistics of one field while the catalog is built."""

    def __init__(self) -> None:
        self.products = 0
        self.numeric = True
        self.values: dict[str, list[Any]] = {}  # value -> [count, first label]
        self.capped = False
        self.numbers = array("d")
        self.label = ""

    def add(self, value: str, label: str, number: float | None, *, same_product: bool = False) -> None:
        """Count one value; `same_product` for a further value of a product already counted (category
        prefixes)."""
        if not same_product:
            self.products += 1
        entry = self.values.get(value)
        if entry is not None:
            entry[0] += 1
        elif len(self.values) < DISTINCT_CAP:
            self.values[value] = [1, label]
        else:
            self.capped = True
        if number is None:
            self.numeric = False
        elif self.numeric:
            self.numbers.append(number)

    def info(self, name: str, kind: FieldKind | None = None, builtin: bool = False) -> FieldInfo:
        kind = kind or ("numeric" if self.numeric and self.products else "text")
        top = sorted(self.values.items(), key=lambda item: (-item[1][0], item[0]))[:VALUE_CAP]
        low = high = None
        edges: tuple[float, ...] = ()
        if kind == "numeric" and self.numbers:
            ordered = sorted(self.numbers)
            low, high = ordered[0], ordered[-1]
            edges = nice_edges(_quantile(ordered, 0.05), _quantile(ordered, 0.95))
        return FieldInfo(name=name, kind=kind, products=self.products, distinct=len(self.values),
                         builtin=builtin, label=self.label or name,
                         values=tuple((v, e[1], e[0]) for v, e in top), distinct_capped=self.capped,
                         min=low, max=high, edges=edges)


class CatalogBuilder:
    """Feed every product of a version with `add`, then `build` the catalog."""

    def __init__(self) -> None:
        self.products = 0
        self.brand = _FieldStats()
        self.category = _FieldStats()
        self.price = _FieldStats()
        self.attributes: dict[str, _FieldStats] = {}

    def add(self, product: Product) -> None:
        self.products += 1
        if product.brand and normalize_brand(product.brand):
            self.brand.add(normalize_brand(product.brand), product.brand, None)
        for depth in range(1, len(product.category_path) + 1):
            prefix = product.category_path[:depth]
            self.category.add(normalize_category(prefix), CATEGORY_SEPARATOR.join(prefix), None,
                              same_product=depth > 1)
        if product.price is not None and math.isfinite(product.price):
            self.price.add(normalize_value(repr(float(product.price))), f"{product.price:g}", float(product.price))
        raw_names = {normalize_text(name): name for name in sorted(product.attributes, reverse=True)}
        raw_values = {normalize_text(name): str(value) for name, value in sorted(product.attributes.items(),
                                                                                 reverse=True)}
        for key, value in attribute_values(product).items():
            stats = self.attributes.get(key)
            if stats is None:
                stats = self.attributes[key] = _FieldStats()
                stats.label = raw_names[key]
            stats.add(value, raw_values[key].strip(), value_number(value))

    def add_all(self, products: Iterable[Product]) -> None:
        for product in products:
            self.add(product)

    def build(self) -> AttributeCatalog:
        fields = {
            "brand": self.brand.info("brand", "text", builtin=True),
            "category": self.category.info("category", "category", builtin=True),
            "price": self.price.info("price", "numeric", builtin=True),
        }
        for key in sorted(self.attributes):
            fields["attributes." + key] = self.attributes[key].info(key)
        return AttributeCatalog(products=self.products, fields=fields)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def nice_edges(low: float, high: float, max_buckets: int = MAX_BUCKETS) -> tuple[float, ...]:
    """Round bucket edges covering `[low, high]` (the 5th to 95th percentile of a field), at most
    `max_buckets - 1` of them; the first and last buckets are open-ended.

    Wide positive ranges (prices: `high / low > 20`) get a 1-2.5-5 series, others equal nice steps.

    >>> nice_edges(3.0, 2000.0)
    (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    >>> nice_edges(-20.0, 60.0)
    (-20.0, 0.0, 20.0, 40.0, 60.0)
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return ()
    if low > 0 and high / low > 20:
        exponents = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for mantissas in ((1.0, 2.5, 5.0), (1.0, 5.0), (1.0,)):  # coarser until few enough
            edges = [round(m * 10.0 ** e, 10) for e in exponents for m in mantissas]
            edges = [x for x in edges if low <= x <= high]
            if len(edges) <= max_buckets:
                break
        while len(edges) > max_buckets:
            edges = edges[::2]
        return tuple(edges)
    raw_step = (high - low) / max(1, max_buckets - 2)
    magnitude = 10.0 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw_step)
    start = math.floor(low / step) * step
    edges = []
    value = start
    while value <= high + step * 1e-9 and len(edges) < max_buckets + 1:
        edges.append(round(value, 10))
        value += step
    return tuple(edges)


__all__ = ["BUILTINS", "CATALOG_FILE", "AttributeCatalog", "CatalogBuilder", "FieldInfo", "nice_edges"]
