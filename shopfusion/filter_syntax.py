"""The `--filter` syntax of the CLI (and of any text front end): `KEY OP VALUE` strings -> `Filters`.

    category=Tools > Drills        a category path prefix (one per search)
    brand=Makita                   repeat for any of several brands
    price=10..50   price=10..<50   inclusive range / upper bound excluded (what a facet bucket means)
    price>=10  price<=50  price<50 one bound each; bounds of one key combine (AND)
    price=25                       exactly 25
    colour=black                   any catalog attribute: repeat for any of several values (OR)
    weight=1..5  weight>=2         ranges on numeric attributes
    attributes.price=4995          an attribute whose name is also a built-in field

Different keys combine with AND. Values are compared after normalisation (case, whitespace, Unicode,
number form), so `Colour=BLACK` and `colour=black` are the same filter. Whether an attribute exists and
whether it is numeric is checked against the index when the search runs.

>>> parse_filters(["brand=HP", "brand=Dell", "colour=black", "price=10..<50"]).brands
('HP', 'Dell')
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shopfusion.errors import QueryError
from shopfusion.types import CATEGORY_SEPARATOR, AttributeFilter, Filters, normalize_text

_OPERATOR = re.compile(r"(>=|<=|<|>|=)")
EXAMPLES = "brand=Makita, category=Tools > Drills, price=10..50, price>=10, colour=black, weight=1..5"


@dataclass
class _Bounds:
    values: list[str] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    below: float | None = None


def parse_filters(values: Iterable[str]) -> Filters:
    """Parse `--filter` arguments; a malformed one is a `QueryError` with an example of the right form."""
    category: tuple[str, ...] = ()
    brands: list[str] = []
    price = _Bounds()
    attributes: dict[str, _Bounds] = {}
    names: dict[str, str] = {}
    for text in values:
        key, op, arg = _split(text)
        if key == "category":
            if op != "=":
                raise QueryError(f"filter {text!r}: a category takes '=', e.g. category=Tools > Drills")
            if category:
                raise QueryError(f"filter {text!r}: one category prefix per search (got a second one)")
            category = tuple(p.strip() for p in arg.split(CATEGORY_SEPARATOR.strip()) if p.strip())
        elif key == "brand":
            if op != "=":
                raise QueryError(f"filter {text!r}: a brand takes '=', e.g. brand=Makita")
            brands.append(arg)
        elif key in ("price", "price_min", "price_max"):
            if key != "price" and op != "=":
                raise QueryError(f"filter {text!r}: write price>=LOW or price<=HIGH")
            _add(price, text, {"price_min": ">=", "price_max": "<="}.get(key, op), arg, numeric_only=True)
        else:
            name = key[len("attributes."):] if key.startswith("attributes.") else key
            names.setdefault(name, text.partition(op)[0].strip().removeprefix("attributes."))
            _add(attributes.setdefault(name, _Bounds()), text, op, arg, numeric_only=False)
    if price.values:
        number = float(price.values[0])
        price.low = number if price.low is None else max(price.low, number)
        price.high = number if price.high is None else min(price.high, number)
    return Filters(
        category=category, brands=tuple(brands), price_min=price.low, price_max=price.high,
        price_below=price.below,
        attributes=tuple(AttributeFilter(names[name], tuple(b.values), b.low, b.high, b.below)
                         for name, b in attributes.items()),
    )


def _split(text: str) -> tuple[str, str, str]:
    if not isinstance(text, str):
        raise QueryError(f"a filter is a string such as brand=Makita, got {text!r}")
    match = _OPERATOR.search(text)
    if match is None:
        raise QueryError(f"filter {text!r}: write KEY=VALUE, e.g. {EXAMPLES}")
    key = normalize_text(text[:match.start()])
    op, arg = match.group(1), text[match.end():].strip()
    if not key:
        raise QueryError(f"filter {text!r} names no field: write KEY=VALUE, e.g. {EXAMPLES}")
    if op == ">":
        raise QueryError(f"filter {text!r}: lower bounds are inclusive, write {key}>={arg}")
    if not arg:
        example = {"brand": "brand=Makita", "category": "category=Tools > Drills", "price": "price=10..50"}
        raise QueryError(f"filter {text!r} has no value, and an empty value matches nothing: give one "
                         f"(e.g. {example.get(key, f'{key}=VALUE')}) or leave the filter out")
    return key, op, arg


def _add(bounds: _Bounds, text: str, op: str, arg: str, *, numeric_only: bool) -> None:
    """One `OP ARG` into the bounds of a key: a value, a range `A..B` / `A..<B`, or a single bound."""
    if op == "=" and ".." in arg:
        low, _, high = arg.partition("..")
        exclusive = high.strip().startswith("<")
        high = high.strip().removeprefix("<")
        if not low.strip() and not high.strip():
            raise QueryError(f"filter {text!r}: a range needs at least one bound, e.g. 10..50, ..50 or 10..")
        if low.strip():
            bounds.low = _tighter(bounds.low, _number(text, low), max)
        if high.strip():
            if exclusive:
                bounds.below = _tighter(bounds.below, _number(text, high), min)
            else:
                bounds.high = _tighter(bounds.high, _number(text, high), min)
    elif op == ">=":
        bounds.low = _tighter(bounds.low, _number(text, arg), max)
    elif op == "<=":
        bounds.high = _tighter(bounds.high, _number(text, arg), min)
    elif op == "<":
        bounds.below = _tighter(bounds.below, _number(text, arg), min)
    elif numeric_only:
        if bounds.values:
            raise QueryError(f"filter {text!r}: one exact price per search; use a range such as price=10..50")
        bounds.values.append(str(_number(text, arg)))
    else:
        bounds.values.append(arg)


def _tighter(current: float | None, new: float, pick: Callable[[float, float], float]) -> float:
    return new if current is None else pick(current, new)


def _number(text: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise QueryError(f"filter {text!r}: {value.strip()!r} is not a number (e.g. price=10..50)") from None
    if not math.isfinite(number):
        raise QueryError(f"filter {text!r}: {value.strip()!r} is not a bound to filter on: give a finite "
                         "number, e.g. price=10..50")
    return number


__all__ = ["EXAMPLES", "parse_filters"]
