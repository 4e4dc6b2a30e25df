"""Match terms: how the learned ranking stage reads words, numbers and units in queries and products.

Terms are lower-cased runs of letters or of digits (`3/4` and `1.5` stay whole, `18v` is `18` and `v`),
with unit words mapped to one spelling (`inches` -> `in`, `volt` -> `v`), `"` and `'` after a number read
as inches and feet, numbers without leading zeros or trailing decimal zeros, and a plural `s` dropped. A
quantity is a number directly followed by a unit (`18 v`, `3/4 in`). These are the ranker's own terms,
independent of the lexical engine's analyzer, so features mean the same with tantivy and Elasticsearch.

>>> terms('DeWalt 20-Volt MAX 1/2 in. Drills')
['dewalt', '20', 'v', 'max', '1/2', 'in', 'drill']
>>> sorted(quantities(terms('2 gal. bucket, 5 gallons')))
['2 gal', '5 gal']
>>> sorted(trigrams(["saw"]))
[' sa', 'aw ', 'saw']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TERM = re.compile(r"[0-9]+(?:[./][0-9]+)*|[a-z]+")
_INCH = re.compile(r"(?<=\d)\s*(\"|''|\u201d|\u2033)")
_FOOT = re.compile(r"(?<=\d)\s*('|\u2019|\u2032)")
UNITS: dict[str, str] = {}
"""Every accepted spelling of a unit -> its one spelling."""
for _canonical, _spellings in {
    "in": "in inch inches", "ft": "ft feet foot", "yd": "yd yard yards", "mm": "mm", "cm": "cm",
    "m": "m meter meters metre metres", "gal": "gal gallon gallons", "qt": "qt quart quarts",
    "oz": "oz ounce ounces", "lb": "lb lbs pound pounds", "v": "v volt volts", "w": "w watt watts",
    "a": "a amp amps ampere", "ah": "ah", "mah": "mah", "btu": "btu", "psi": "psi", "cfm": "cfm", "gpm": "gpm",
    "kg": "kg kgs", "g": "g gm gms gram grams", "l": "l ltr litre litres liter liters", "ml": "ml",
    "pc": "pc pcs piece pieces pack packs pk count ct", "sq": "sq", "cu": "cu", "ga": "ga gauge",
    "grit": "grit", "hp": "hp", "lumen": "lumen lumens lm", "k": "k kelvin", "gb": "gb", "tb": "tb",
    "hz": "hz", "kw": "kw", "x": "x",
}.items():
    for _spelling in _spellings.split():
        UNITS[_spelling] = _canonical
_UNIT_NAMES = frozenset(UNITS.values())


def _term(token: str) -> str:
    unit = UNITS.get(token)
    if unit is not None:
        return unit
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss") and token.isalpha():
        return token[:-1]
    return token


def _number(token: str) -> str:
    if "." in token and "/" not in token:
        token = token.rstrip("0").rstrip(".") or "0"
    return token.lstrip("0") or "0"


def terms(text: str) -> list[str]:
    """The match terms of a text, in order, repeats kept."""
    text = _FOOT.sub(" ft ", _INCH.sub(" in ", text.lower()))
    return [_number(token) if token[0].isdigit() else _term(token) for token in _TERM.findall(text)]


def quantities(words: Sequence[str]) -> set[str]:
    """`number unit` pairs: a number directly followed by a unit term."""
    return {f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a[0].isdigit() and b in _UNIT_NAMES}


def bigrams(words: Sequence[str]) -> frozenset[str]:
    """Adjacent term pairs (`"a b"`)."""
    return frozenset(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))


def trigrams(words: Sequence[str]) -> frozenset[str]:
    """Character trigrams of each term padded with spaces (`"drill"` -> ` dr`, `dri`, ..., `ll `)."""
    out: set[str] = set()
    for word in words:
        padded = f" {word} "
        out.update(padded[i:i + 3] for i in range(len(padded) - 2))
    return frozenset(out)


def numbers(words: Sequence[str]) -> frozenset[str]:
    return frozenset(w for w in words if w[0].isdigit())


def phrase(words: Sequence[str]) -> str:
    """The terms as one string padded with spaces, so `phrase(q) in phrase(t)` tests contiguity."""
    return f" {' '.join(words)} "


__all__ = ["UNITS", "bigrams", "numbers", "phrase", "quantities", "terms", "trigrams"]
