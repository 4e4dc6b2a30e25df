"""Record validation: a raw catalog record becomes a `Product` or a `Reject` with a reason that says how
to fix it. Control characters in text are stripped, not rejected.

Accepted shapes: `id` (string or integer), `title` (string), optional `description`, `brand` (strings),
`category_path` (list of strings or "A > B > C"), `price` (number or numeric string, >= 0), `attributes`
(mapping of scalars or lists of scalars). Every other non-null field is kept as an attribute.

Values are never changed silently:
- ids are kept exactly as given (`" padded "` and `"padded"` are two products); an integer id becomes its
  decimal string (`12` and `"12"` are one product); an id holding control characters is rejected;
- a price string must be a plain decimal number (`12.5`, `1e3`) or use commas only as thousands
  separators with a decimal point (`1,234.50`, `1,234,567`); `12,50` and `1,250` are ambiguous (decimal
  comma or thousands?) and rejected with that reason, never read as 1250;
- Parquet DECIMAL prices are read exactly (`decimal.Decimal`) and then stored as floats.

>>> from indexer.readers import RawRecord
>>> validate(RawRecord("c.jsonl", 3, "{}", {"id": "1", "title": "Drill\\x07", "price": "9.5"})).title
'Drill'
>>> validate(RawRecord("c.jsonl", 4, "{}", {"title": "Drill"})).reason
'field `id` is missing: every product needs a unique id'
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from indexer.readers import RawRecord
from shopfusion.types import CATEGORY_SEPARATOR, Product, Reject

KNOWN_FIELDS = {"id", "title", "description", "brand", "category_path", "price", "attributes"}
MAX_ID_CHARS = 512
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPLIT_CATEGORY = re.compile(r"\s*>\s*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_GROUPED_NUMBER = re.compile(r"^[+-]?\d{1,3}(,\d{3})+\.\d+$|^[+-]?\d{1,3}(,\d{3}){2,}$")


class InvalidRecord(ValueError):
    pass


def validate(record: RawRecord, max_field_chars: int = 100_000) -> Product | Reject:
    """Turn one raw record into a Product, or a Reject naming the field and the fix."""
    if record.error is not None or record.data is None:
        return Reject(record.source, record.line, record.error or "unreadable record", record.raw)
    try:
        return _product(record.data, max_field_chars)
    except InvalidRecord as exc:
        return Reject(record.source, record.line, str(exc), record.raw)
    except RecursionError:
        return Reject(record.source, record.line, "a value is nested too deeply: flatten the record", record.raw)


def _product(data: Mapping[str, Any], limit: int) -> Product:
    product_id = _id(data.get("id"))
    title = _text(data, "title", limit, required=True)
    assert title is not None
    attributes = _attributes(data.get("attributes"), limit)
    for key, value in data.items():
        if key not in KNOWN_FIELDS and value is not None:
            attributes[clean_text(str(key))] = _attribute_value(key, value, limit)
    return Product(
        id=product_id,
        title=title,
        description=_text(data, "description", limit),
        brand=_text(data, "brand", limit),
        category_path=_category(data.get("category_path"), limit),
        price=_price(data.get("price")),
        attributes=attributes,
    )


def clean_text(text: str) -> str:
    """Strip control characters (keeping tab and newlines) and surrounding whitespace; refuse text that
    is not valid Unicode (a lone surrogate, as a JSON escape like `\\ud800` can produce)."""
    _check_unicode(text)
    return _CONTROL.sub("", text).strip()


def _check_unicode(text: str) -> None:
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise InvalidRecord(f"text {text[:40]!r} holds a lone surrogate (U+{ord(bad.group()):04X}) at character"
                            f" {bad.start()}: it is not valid Unicode, fix the export")


def _id(value: Any) -> str:
    if value is None:
        raise InvalidRecord("field `id` is missing: every product needs a unique id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRecord(f"field `id` must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise InvalidRecord("field `id` is empty: every product needs a unique id")
    _check_unicode(text)
    if len(text) > MAX_ID_CHARS:
        raise InvalidRecord(f"field `id` is {len(text)} characters, above the limit of {MAX_ID_CHARS}")
    if _CONTROL.search(text) or "\n" in text or "\r" in text or "\t" in text:
        raise InvalidRecord(f"field `id` {text[:40]!r} holds control characters: ids are compared exactly as"
                            " given, fix the id in the catalog")
    return text


def _text(data: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidRecord(f"field `{name}` is missing: every product needs a {name}")
        return None
    if not isinstance(value, str):
        raise InvalidRecord(f"field `{name}` must be a string, got {type(value).__name__}")
    _check_size(name, value, limit)
    text = clean_text(value)
    if not text:
        if required:
            raise InvalidRecord(f"field `{name}` is empty: every product needs a {name}")
        return None
    return text


def _check_size(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidRecord(
            f"field `{name}` is {len(value)} characters, above the limit of {limit}"
            " (raise index.max_field_chars if this is intended)"
        )


def _category(value: Any, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        _check_size("category_path", value, limit)
        parts = _SPLIT_CATEGORY.split(value)
    elif isinstance(value, list | tuple):
        if not all(isinstance(part, str) for part in value):
            raise InvalidRecord("field `category_path` must be a list of strings or a string like 'A > B > C'")
        _check_size("category_path", CATEGORY_SEPARATOR.join(value), limit)
        parts = list(value)
    else:
        raise InvalidRecord(
            f"field `category_path` must be a list of strings or a string like 'A > B > C',"
            f" got {type(value).__name__}"
        )
    return tuple(part for part in (clean_text(p) for p in parts) if part)


def _price(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRecord("field `price` must be a number, got bool")
    if isinstance(value, str):
        value = _price_text(value)
        if value is None:
            return None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidRecord("field `price` must be a finite number")
    elif not isinstance(value, int | float):
        raise InvalidRecord(f"field `price` must be a number, got {type(value).__name__}")
    try:
        price = float(value)
    except OverflowError:
        price = math.inf
    if math.isinf(price) and isinstance(value, int | decimal.Decimal):
        raise InvalidRecord(f"field `price` is too large to be a price ({str(value)[:20]}...): fix the value")
    if math.isnan(price) or math.isinf(price):
        raise InvalidRecord("field `price` must be a finite number")
    if price < 0:
        raise InvalidRecord(f"field `price` must not be negative, got {price}")
    return price


def _price_text(value: str) -> decimal.Decimal | None:
    """A price string read exactly; anything but an unambiguous number is rejected with why."""
    stripped = value.strip()
    if not stripped:
        return None
    if _GROUPED_NUMBER.match(stripped):
        stripped = stripped.replace(",", "")
    elif "," in stripped and re.fullmatch(r"[+-]?[\d.,]+", stripped):
        raise InvalidRecord(
            f"field `price` {value[:40]!r} is ambiguous (a decimal comma or a thousands separator?): write"
            " it with a decimal point and no thousands separators, e.g. 12.50 or 1250"
        )
    if not _PLAIN_NUMBER.match(stripped):
        raise InvalidRecord(f"field `price` must be a number, got {value[:40]!r}")
    return decimal.Decimal(stripped)


def _attributes(value: Any, limit: int) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):  # CSV cells carry attributes as a JSON object
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidRecord("field `attributes` must be a JSON object (mapping of name to value)") from None
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"field `attributes` must be a mapping, got {type(value).__name__}")
    return {clean_text(str(k)): _attribute_value(k, v, limit) for k, v in value.items() if v is not None}


def _attribute_value(key: Any, value: Any, limit: int) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str | int | float | decimal.Decimal):
        text = str(value)
    elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float | bool) for v in value):
        text = ", ".join(str(v) for v in value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    _check_size(f"attributes.{key}", text, limit)
    return clean_text(text)
