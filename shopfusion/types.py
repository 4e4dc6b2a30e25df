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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

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


@dataclass(frozen=True)
class Filters:
    """Filters applied identically by the lexical and the vector leg.

    - `category`: a category path prefix, matched component by component and case-insensitively
      (`("Tools",)` matches `Tools > Drills`, not `Toolsets`).
    - `brands`: any of these brands, case-insensitive exact match.
    - `price_min` / `price_max`: inclusive bounds; a product without a price never matches a price bound.
    """

    category: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None

    def __post_init__(self) -> None:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            from shopfusion.errors import QueryError

            raise QueryError(
                f"price_min {self.price_min} is above price_max {self.price_max}: swap the bounds"
            )

    @property
    def empty(self) -> bool:
        return not self.category and not self.brands and self.price_min is None and self.price_max is None

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
        if self.price_min is not None or self.price_max is not None:
            if product.price is None or math.isnan(product.price):
                return False
            if self.price_min is not None and product.price < self.price_min:
                return False
            if self.price_max is not None and product.price > self.price_max:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": list(self.category),
            "brands": list(self.brands),
            "price_min": self.price_min,
            "price_max": self.price_max,
        }


def normalize_category(path: Sequence[str]) -> str:
    return CATEGORY_SEPARATOR.join(part.strip().lower() for part in path)


def normalize_brand(brand: str) -> str:
    return " ".join(brand.lower().split())


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULTS_SCHEMA,
            "query": self.query,
            "intent": asdict(self.intent) if self.intent else None,
            "fusion": dict(self.fusion),
            "message": self.message,
            "warnings": list(self.warnings),
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
