"""JSON output: the one conversion every `--json` document goes through (the HTTP service should too).

JSON has no NaN or Infinity. Python's `json` module writes them as bare `NaN` / `Infinity` tokens, which
most parsers (JavaScript's `JSON.parse`, `jq`, Go, Java) refuse, so one NaN score would make a whole
response unreadable. Here every non-finite float becomes `null` ("no number"), the same meaning the
typed values give `None` (a leg that did not score a product has `raw: null`). Other conversions:
numpy scalars and arrays become numbers and lists, `Decimal` a float, paths and unknown objects their
`str`, and a lone surrogate in a string (text that is not valid Unicode) becomes U+FFFD, so the output
is always valid UTF-8 JSON.

>>> dumps({"score": float("nan"), "hits": [1.5, float("inf")]}, indent=None)
'{"score": null, "hits": [1.5, null]}'
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data (dict, list, str, int, finite float, bool, None)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, Mapping):
        return {str(jsonable(k)) if not isinstance(k, str) else jsonable(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return jsonable(item())
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return jsonable(tolist())
    return jsonable(str(value))


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """One JSON document; never contains NaN or Infinity (see the module docstring)."""
    return json.dumps(jsonable(value), indent=indent, ensure_ascii=False, allow_nan=False)
