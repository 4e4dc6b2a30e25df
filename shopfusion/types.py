"""Typed values shared by every shopfusion package.

All are frozen dataclasses: a `Product` read from a catalog, the `Filters` a search applies identically to
both retrieval legs, a `LegHit` one leg returns, the `LegScore` breakdown `explain` shows, and the fused
`Hit` / `Results` a caller gets back.

>>> p = Product(id="sku-1", title="Cordless drill", brand="Makita", category_path=("Tools", "Drills"))
>>> p.category_text
'Tools > Drills'
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from functools import lru_cache, wraps
from typing import Any, Literal, TypeVar

CATEGORY_SEPARATOR = " > "

LegName = Literal["lexical", "dense", "engine"]
RESULTS_SCHEMA = "shopfusion.results/1"
"""The version of `Results.to_dict()` (the CLI's `--json` and the HTTP API's bodies). Adding a field keeps
the version; renaming or removing one, or changing a meaning, bumps it."""
FusionMethod = Literal["rrf", "linear"]
Normalization = Literal["minmax", "zscore"]


@dataclass(frozen=True)
class Product:
    """One catalog item. `id` and `title` are required; everything else is optional.

    `attributes` holds the catalog's attribute mapping plus any extra fields of the record, with values
    kept as strings so that every engine indexes them the same way.
    """

    id: str
    title: str
    description: str | None = None
    brand: str | None = None
    category_path: tuple[str, ...] = ()
    price: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def category_text(self) -> str:
        return CATEGORY_SEPARATOR.join(self.category_path)

    @property
    def attribute_text(self) -> str:
        return " ; ".join(f"{key}: {value}" for key, value in sorted(self.attributes.items()))

    def embedding_text(self) -> str:
        """The text the dense leg embeds: title first (encoders truncate), then brand, category, details."""
        parts = [self.title]
        if self.brand:
            parts.append(self.brand)
        if self.category_path:
            parts.append(self.category_text)
        if self.description:
            parts.append(self.description)
        if self.attributes:
            parts.append(self.attribute_text)
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = _fields(self)  # every field, without asdict's deep copy (this runs per hit per response)
        data["category_path"] = list(self.category_path)
        data["attributes"] = dict(self.attributes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Product:
        return cls(
            id=data["id"],
            title=data["title"],
            description=data.get("description"),
            brand=data.get("brand"),
            category_path=tuple(data.get("category_path") or ()),
            price=data.get("price"),
            attributes=dict(data.get("attributes") or {}),
        )

    def content_hash(self) -> str:
        """Hash of every field: tells an updated product from an unchanged one."""
        return _sha(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False))

    def text_hash(self) -> str:
        """Hash of the embedded text only: a product whose text is unchanged is never re-embedded."""
        return _sha(self.embedding_text())


def _fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, one level deep (asdict copies recursively: 10x slower)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


MAX_FILTER_VALUE_CHARS = 1000
"""Attribute values longer than this (normalised) are searchable text but not filter or facet values:
every engine and the vector leg skip them alike (Lucene refuses terms over 32 KB)."""
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")


_R = TypeVar("_R")
_CACHED_CHARS = 256
"""Values up to this length are memoised: a catalog repeats the same attribute names and values millions of
times (1M products: 5M normalisations), and the cache stays bounded (entries x 256 characters)."""


def _memoised_for_short(function: Callable[[str], _R]) -> Callable[[str], _R]:
    """`function(text)` through an LRU cache for short texts; long ones are computed each time, so the cache
    never holds a long description. Only for pure functions of one string."""
    cached = lru_cache(maxsize=1 << 16)(function)

    @wraps(function)
    def call(text: str) -> _R:
        return cached(text) if len(text) <= _CACHED_CHARS else function(text)

    return call


@_memoised_for_short
def normalize_text(text: str) -> str:
    """The one normalisation of filter and facet values, at index time and at query time alike:
    Unicode NFKC, case folding, whitespace collapsed (`"  Dark\u00a0GREY "` -> `"dark grey"`)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(unicodedata.normalize("NFKC", folded).split())


def canonical_number(text: str) -> str | None:
    """`text` as a canonical decimal (`"6.50"` -> `"6.5"`, `"1e3"` -> `"1000"`, `"007"` -> `"7"`), or None
    when it is not a plain number. Exact (no float rounding), so long codes stay distinct."""
    if not _NUMBER.fullmatch(text):
        return None
    number = Decimal(text)
    if abs(number.adjusted()) > 30:  # 1e999 would print a thousand digits: keep it as text
        return None
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


@_memoised_for_short
def normalize_value(value: str) -> str:
    """An attribute value as filters, facets and sorting see it: `normalize_text`, and plain numbers in
    canonical form, so `6`, `6.0` and `6.00` are one value everywhere."""
    text = normalize_text(value)
    return canonical_number(text) or text


@_memoised_for_short
def value_number(normalized: str) -> float | None:
    """The number a normalised attribute value holds, or None (numeric ranges skip such values)."""
    if canonical_number(normalized) != normalized:
        return None
    number = float(normalized)
    return number if math.isfinite(number) else None


def attribute_values(product: Product) -> dict[str, str]:
    """The product's filterable attributes: normalised name -> normalised value. Names that normalise
    alike keep the first in sorted order; empty values and values over `MAX_FILTER_VALUE_CHARS` are left
    out. Every store indexes exactly this, so all engines agree."""
    values: dict[str, str] = {}
    for name, raw in sorted(product.attributes.items()):
        key = normalize_text(name)
        value = normalize_value(str(raw))
        if key and value and len(value) <= MAX_FILTER_VALUE_CHARS and key not in values:
            values[key] = value
    return values


def _query_error(message: str) -> Exception:
    from shopfusion.errors import QueryError

    return QueryError(message)


def _bound(owner: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _query_error(f"{owner}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _query_error(f"{owner}: {name} must be a finite number, got {value!r}: give a bound such as 10 or"
                           " leave it out")
    return float(value)


def _strings(what: str, value: Any, example: str) -> tuple[str, ...]:
    """A sequence of non-empty strings (numbers are accepted and written as text); a bare string is an
    error, never a sequence of letters."""
    if isinstance(value, str):
        raise _query_error(f"{what} must be a sequence of strings such as {example}, got the bare string "
                           f"{value!r} (it would be read as its letters): write ({value!r},)")
    if not isinstance(value, Sequence):
        raise _query_error(f"{what} must be a sequence of strings such as {example}, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _query_error(f"{what}: {item!r} is not a string")
        if isinstance(item, float) and not math.isfinite(item):
            raise _query_error(f"{what}: {item!r} is not a value to filter on")
        text = item if isinstance(item, str) else str(item)
        if not normalize_text(text):
            raise _query_error(f"{what}: an empty value matches nothing: give a value (e.g. {example}) or"
                               " leave the filter out")
        out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class AttributeFilter:
    """A filter on one catalog attribute (see `shopfusion attributes`).

    - `values`: any of these (OR), compared after `normalize_value` (case, whitespace, Unicode, number
      form); on a numeric attribute they are numbers (`weight=6` matches `6.0`).
    - `min` / `max`: inclusive bounds, `below`: exclusive upper bound (what a facet bucket `[low, high)`
      means); numeric attributes only. A product without the attribute never matches.

    >>> AttributeFilter("Colour", ("Black", "dark  grey")).value_keys
    ('black', 'dark grey')
    """

    name: str
    values: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not normalize_text(self.name):
            raise _query_error(f"an attribute filter needs an attribute name, got {self.name!r}")
        owner = f"attribute filter {self.name!r}"
        object.__setattr__(self, "values", _strings(f"the values of {owner}", self.values, "('black',)"))
        for bound in ("min", "max", "below"):
            object.__setattr__(self, bound, _bound(owner, bound, getattr(self, bound)))
        if not self.values and self.min is None and self.max is None and self.below is None:
            raise _query_error(f"{owner} has neither values nor bounds: give values=('black',) or min/max")
        _check_order(owner, self.min, self.max, self.below)

    @property
    def key(self) -> str:
        return normalize_text(self.name)

    @property
    def value_keys(self) -> tuple[str, ...]:
        return tuple(sorted({normalize_value(v) for v in self.values}))

    @property
    def is_range(self) -> bool:
        return self.min is not None or self.max is not None or self.below is not None

    def accepts(self, value: str | None) -> bool:
        """Reference semantics for one normalised value (None: the product lacks the attribute)."""
        if value is None:
            return False
        if self.values and value not in self.value_keys:
            return False
        if self.is_range:
            return in_range(value_number(value), self.min, self.max, self.below)
        return True

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.values:
            data["values"] = list(self.values)
        for bound in ("min", "max", "below"):
            if getattr(self, bound) is not None:
                data[bound] = getattr(self, bound)
        return data


def in_range(number: float | None, low: float | None, high: float | None, below: float | None) -> bool:
    """`low <= number <= high` and `number < below`, each bound optional; a missing number never matches."""
    if number is None or math.isnan(number):
        return False
    if low is not None and number < low:
        return False
    if high is not None and number > high:
        return False
    return not (below is not None and number >= below)


def _check_order(owner: str, low: float | None, high: float | None, below: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise _query_error(f"{owner}: the lower bound {low:g} is above the upper bound {high:g}: swap the bounds")
    if low is not None and below is not None and low >= below:
        raise _query_error(f"{owner}: the range [{low:g}, {below:g}) is empty: the lower bound must be below"
                           " the exclusive upper bound")


@dataclass(frozen=True)
class Filters:
    """Filters applied identically by the lexical and the vector leg, before either takes its top k.

    - `category`: a category path prefix, matched component by component after `normalize_text`
      (`("Tools",)` matches `Tools > Drills`, not `Toolsets`).
    - `brands`: any of these brands (OR), compared after `normalize_text`.
    - `price_min` / `price_max`: inclusive bounds, `price_below`: exclusive upper bound; a product
      without a price never matches a price bound.
    - `attributes`: `AttributeFilter`s, all of which must hold (AND); a mapping `{name: values}` is
      accepted and turned into them.

    Different fields combine with AND. Values of the wrong type are a `QueryError` (a bare string where
    a sequence is expected is never read as its letters):

    >>> Filters(brands=("HP",), attributes={"colour": ("black", "grey")}).attributes[0].values
    ('black', 'grey')
    """

    category: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    attributes: tuple[AttributeFilter, ...] = ()
    price_below: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _strings("category", self.category, "('Tools', 'Drills')"))
        object.__setattr__(self, "brands", _strings("brands", self.brands, "('HP', 'Dell')"))
        for bound in ("price_min", "price_max", "price_below"):
            object.__setattr__(self, bound, _bound("price filter", bound, getattr(self, bound)))
        _check_order("price filter", self.price_min, self.price_max, self.price_below)
        object.__setattr__(self, "attributes", _attribute_filters(self.attributes))

    @property
    def empty(self) -> bool:
        return (not self.category and not self.brands and not self.has_price and not self.attributes)

    @property
    def has_price(self) -> bool:
        return self.price_min is not None or self.price_max is not None or self.price_below is not None

    @property
    def category_key(self) -> str:
        return normalize_category(self.category)

    @property
    def brand_keys(self) -> tuple[str, ...]:
        return tuple(sorted({normalize_brand(b) for b in self.brands}))

    def matches(self, product: Product) -> bool:
        """Reference semantics; the stores implement the same test natively."""
        if self.category:
            path = normalize_category(product.category_path)
            key = self.category_key
            if not (path == key or path.startswith(key + CATEGORY_SEPARATOR)):
                return False
        if self.brands and normalize_brand(product.brand or "") not in self.brand_keys:
            return False
        if self.has_price and not in_range(product.price, self.price_min, self.price_max, self.price_below):
            return False
        if self.attributes:
            values = attribute_values(product)
            if not all(f.accepts(values.get(f.key)) for f in self.attributes):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "category": list(self.category),
            "brands": list(self.brands),
            "price_min": self.price_min,
            "price_max": self.price_max,
        }
        if self.price_below is not None:
            data["price_below"] = self.price_below
        if self.attributes:
            data["attributes"] = [f.to_dict() for f in self.attributes]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filters:
        """The inverse of `to_dict` (for JSON requests); unknown keys are an error that lists the known."""
        known = {"category", "brands", "price_min", "price_max", "price_below", "attributes"}
        if not isinstance(data, Mapping):
            raise _query_error(f"filters must be an object with keys {sorted(known)}, got {type(data).__name__}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise _query_error(f"unknown filter key(s) {unknown}: use {sorted(known)}")
        attributes = data.get("attributes") or ()
        if isinstance(attributes, Sequence) and not isinstance(attributes, str):
            attributes = tuple(AttributeFilter(**item) if isinstance(item, Mapping) else item
                               for item in attributes)
        return cls(category=data.get("category") or (), brands=data.get("brands") or (),
                   price_min=data.get("price_min"), price_max=data.get("price_max"),
                   price_below=data.get("price_below"), attributes=attributes)


def _attribute_filters(value: Any) -> tuple[AttributeFilter, ...]:
    if isinstance(value, Mapping):
        return tuple(AttributeFilter(str(name), values) for name, values in value.items())
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _query_error("attributes must be a sequence of AttributeFilter or a mapping such as "
                           f"{{'colour': ('black',)}}, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, AttributeFilter):
            raise _query_error(f"attributes: {item!r} is not an AttributeFilter: write "
                               "AttributeFilter('colour', ('black',)) or use a mapping {'colour': ('black',)}")
    return tuple(value)


def normalize_category(path: Sequence[str]) -> str:
    return CATEGORY_SEPARATOR.join(normalize_text(part) for part in path)


def normalize_brand(brand: str) -> str:
    return normalize_text(brand)


@dataclass(frozen=True)
class LegHit:
    """One result of one retrieval leg: rank starts at 1, higher score is better."""

    product_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class LegScore:
    """How one leg contributed to a fused score (shown by `explain`)."""

    raw: float | None
    normalized: float | None
    rank: int | None
    contribution: float


@dataclass(frozen=True)
class FeatureContribution:
    """How one feature of the learned ranking stage moved a hit's score (shown by `explain`): its value
    for this hit and its contribution (LightGBM's per-feature contribution; they sum to the score). The
    model's average score appears as one more item, with `value` None."""

    feature: str
    value: float | None
    contribution: float


@dataclass(frozen=True)
class Hit:
    """One result. `legs`: each retrieval leg's share (with `explain`); `contributions`: when a learned
    ranker ordered the hits, its largest per-feature contributions (with `explain`)."""

    product_id: str
    score: float
    rank: int
    product: Product | None = None
    legs: Mapping[str, LegScore] | None = None
    contributions: tuple[FeatureContribution, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"product_id": self.product_id, "score": self.score, "rank": self.rank}
        if self.product is not None:
            data["product"] = self.product.to_dict()
        if self.legs is not None:
            data["legs"] = {name: _fields(leg) for name, leg in self.legs.items()}
        if self.contributions is not None:
            data["contributions"] = [_fields(item) for item in self.contributions]
        return data


@dataclass(frozen=True)
class Intent:
    """The intent predicted for a query and the fusion settings chosen for it."""

    label: str
    probability: float
    policy: Mapping[str, Any] = field(default_factory=dict)


FacetKind = Literal["terms", "category", "range"]


@dataclass(frozen=True)
class FacetBucket:
    """One facet value and how many products of the relevant set have it.

    `value` is what to filter on to narrow to this bucket (a normalised value, a category path, or a
    range written `LOW..<HIGH`, the syntax `--filter` takes); `label` is for display (the catalog's
    most common spelling). Category buckets carry their `level` (1 = top level); range buckets their
    bounds `[low, high)`, either open (None)."""

    value: str
    label: str
    count: int
    level: int | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "label": self.label, "count": self.count}
        if self.level is not None:
            data["level"] = self.level
        if self.low is not None or self.high is not None:
            data["low"], data["high"] = self.low, self.high
        return data


@dataclass(frozen=True)
class Facet:
    """Counts for one field: `terms` (brand, a text attribute: the top values), `category` (the top
    values of every level) or `range` (price, a numeric attribute: fixed buckets plus min and max).
    `missing`: products of the relevant set without a value; `other`: products whose value is not
    among the buckets shown."""

    name: str
    kind: FacetKind
    buckets: tuple[FacetBucket, ...]
    missing: int = 0
    other: int = 0
    min: float | None = None
    max: float | None = None

    def counts(self) -> dict[str, int]:
        return {bucket.value: bucket.count for bucket in self.buckets}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "buckets": [b.to_dict() for b in self.buckets],
                                "missing": self.missing, "other": self.other}
        if self.kind == "range":
            data["min"], data["max"] = self.min, self.max
        return data


@dataclass(frozen=True)
class Facets:
    """Facet counts over the relevant set: the products both legs retrieved for the query and the
    filters (each leg's top `depth`, fused), i.e. exactly the products a caller can page through. `over`
    is how many products that is."""

    over: int
    fields: tuple[Facet, ...] = ()

    def __getitem__(self, name: str) -> Facet:
        for facet in self.fields:
            if facet.name == name:
                return facet
        raise KeyError(f"no facet {name!r}; computed: {[f.name for f in self.fields]}")

    def to_dict(self) -> dict[str, Any]:
        return {"over": self.over, "fields": {facet.name: facet.to_dict() for facet in self.fields}}


@dataclass(frozen=True)
class Page:
    """Where the hits sit in the relevant set: hits are `offset + 1` to `offset + len(hits)` of `total`
    products, in `sort` order (`relevance`, or a field with `-` for descending). The relevant set is
    each leg's top `depth` fused; a page past `total` is empty (raise the depth to page further)."""

    offset: int
    size: int
    total: int
    depth: int
    sort: str = "relevance"

    @property
    def number(self) -> int:
        return self.offset // self.size + 1 if self.size else 1

    @property
    def exhausted(self) -> bool:
        return self.offset + self.size >= self.total

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "size": self.size, "number": self.number, "total": self.total,
                "depth": self.depth, "sort": self.sort, "exhausted": self.exhausted}


@dataclass(frozen=True)
class Results:
    """What a search or re-rank returns.

    `message` is for the shopper (for example: this looks like a customer-service question; products are
    shown anyway); `warnings` are for the operator: something did not run as configured (a model that
    does not fit the index's encoder, a retrieval leg that is down) and what was used instead. Both are
    in `to_dict()` and shown by the CLI, so nothing changes silently."""

    query: str
    hits: tuple[Hit, ...]
    fusion: Mapping[str, Any]
    intent: Intent | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    unscored: tuple[Unscored, ...] = ()
    """Re-rank candidates that could not be scored (not in the index and no text), and why; they are the
    last hits, in the caller's order (re-ranking never drops a candidate)."""
    facets: Facets | None = None
    page: Page | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULTS_SCHEMA,
            "query": self.query,
            "intent": asdict(self.intent) if self.intent else None,
            "fusion": dict(self.fusion),
            "message": self.message,
            "warnings": list(self.warnings),
            "page": self.page.to_dict() if self.page else None,
            "facets": self.facets.to_dict() if self.facets else None,
            "hits": [hit.to_dict() for hit in self.hits],
            "unscored": [_fields(u) for u in self.unscored],
        }


@dataclass(frozen=True)
class Unscored:
    """A re-rank candidate that could not be scored, and why (so nothing is silently scored 0)."""

    product_id: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A result from another engine to re-rank: its id, optionally that engine's score, and optionally
    the product itself (for items the index does not hold)."""

    product_id: str
    score: float | None = None
    product: Product | None = None
    note: str | None = None
    """Why it carries no product (set by `shopfusion.candidates`); reported if the index lacks it too."""


@dataclass(frozen=True)
class Reject:
    """A catalog record that was not indexed, with where it came from and why."""

    source: str
    line: int
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
