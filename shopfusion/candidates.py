"""The one parser for re-rank inputs, shared by the CLI, the Python client and the HTTP service.

Three shapes are accepted as they come, so that another engine's response can be forwarded untouched:

- shopfusion's candidate list: a JSON array (or an object with a `candidates` array, or JSONL) whose
  items are ids or objects with `id`, an optional `score` and product fields (`title`, `brand`, ...) or
  `text`; any other field of such an object is kept as a product attribute;
- an Elasticsearch / OpenSearch `_search` response body: `hits.hits[]` with `_id`, `_score` and
  `_source` (or `fields`, when `_source` is switched off);
- a Solr response body: `response.docs[]` with `id` and `score` (ask Solr for `fl=*,score`).

A `fields` mapping names where each product field lives in the source when the names differ, e.g.
`{"title": "name", "brand": "manufacturer.name"}` (dotted paths reach into nested objects; a list gives
fallbacks tried in order). Keys: `id`, `score`, `title`, `description`, `brand`, `category`, `price`,
`attributes`, `text`. For Elasticsearch and Solr only mapped fields are read (a `_source` may hold anything,
embeddings included).

A candidate whose source yields no title or text cannot be scored unless the index holds its id; the
parser writes down why (`Candidate.note`, e.g. "its source has no `title` (fields: name, price)") so the
response can report it instead of scoring it 0. Scores must be finite numbers: NaN, Infinity and booleans
are refused, never coerced.

>>> es = {"hits": {"hits": [{"_id": "p1", "_score": 7.5, "_source": {"name": "Cordless drill"}}]}}
>>> parsed = parse_candidates(es, {"title": "name"})
>>> parsed.format, parsed.candidates[0].product.title, parsed.candidates[0].score
('elasticsearch', 'Cordless drill', 7.5)
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shopfusion.errors import QueryError
from shopfusion.types import Candidate, Product

Format = Literal["shopfusion", "elasticsearch", "solr"]
FIELD_KEYS = ("id", "score", "title", "description", "brand", "category", "price", "attributes", "text")
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "product_id"),
    "score": ("score",),
    "title": ("title",),
    "description": ("description",),
    "brand": ("brand",),
    "category": ("category_path", "category"),
    "price": ("price",),
    "attributes": ("attributes",),
    "text": ("text",),
}
_PRODUCT_KEYS = {"title", "description", "brand", "category", "price", "attributes", "text"}
MAX_NOTE_FIELDS = 8


@dataclass(frozen=True)
class FieldMap:
    """Where each product field lives in a candidate's source: field -> paths tried in order."""

    paths: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, mapping: FieldMap | Mapping[str, Any] | None) -> FieldMap:
        if isinstance(mapping, FieldMap):
            return mapping
        paths = dict(DEFAULT_FIELDS)
        if mapping is None:
            return cls(paths)
        if not isinstance(mapping, Mapping):
            raise QueryError('`fields` must be an object like {"title": "name", "brand": "manufacturer"}')
        for key, value in mapping.items():
            if key not in FIELD_KEYS:
                raise QueryError(f"`fields` names an unknown field {key!r}: use some of {list(FIELD_KEYS)}")
            values = [value] if isinstance(value, str) else value
            if (not isinstance(values, list | tuple) or not values
                    or not all(isinstance(v, str) and v.strip() for v in values)):
                raise QueryError(f"`fields.{key}` must be a source field name or a list of them, got {value!r}")
            paths[key] = tuple(v.strip() for v in values)
        return cls(paths)

    def explicit(self, key: str) -> bool:
        return self.paths[key] != DEFAULT_FIELDS[key]

    def lookup(self, source: Mapping[str, Any], key: str) -> Any:
        for path in self.paths[key]:
            value = _get_path(source, path)
            if value is not None:
                return value
        return None

    def used_paths(self) -> set[str]:
        return {path.split(".", 1)[0] for paths in self.paths.values() for path in paths}


@dataclass(frozen=True)
class CandidateList:
    """Parsed candidates in the caller's order, and which input shape they came in."""

    candidates: tuple[Candidate, ...]
    format: Format

    def __len__(self) -> int:
        return len(self.candidates)


def candidate_items(data: Any) -> tuple[list[Any], Format]:
    """The raw items of a re-rank input and its shape, without parsing them (to count them first)."""
    if isinstance(data, list | tuple):
        return list(data), "shopfusion"
    if not isinstance(data, Mapping):
        raise QueryError("candidates must be a JSON array, an object with `candidates`, an Elasticsearch/"
                         f"OpenSearch `_search` response or a Solr response; got {type(data).__name__}")
    if "candidates" in data:
        items = data["candidates"]
        if not isinstance(items, list):
            raise QueryError("`candidates` must be an array of ids or objects with `id`")
        return items, "shopfusion"
    hits = data.get("hits")
    if isinstance(hits, Mapping) and "hits" in hits:
        if not isinstance(hits["hits"], list):
            raise QueryError("`hits.hits` of the Elasticsearch response must be an array")
        return hits["hits"], "elasticsearch"
    response = data.get("response")
    if isinstance(response, Mapping) and "docs" in response:
        if not isinstance(response["docs"], list):
            raise QueryError("`response.docs` of the Solr response must be an array")
        return response["docs"], "solr"
    if "id" in data or "product_id" in data:
        return [data], "shopfusion"  # one candidate object on its own
    raise QueryError("candidates object not recognised: expected `candidates`, `hits.hits` (Elasticsearch/"
                     f"OpenSearch) or `response.docs` (Solr); its keys are {sorted(data)[:MAX_NOTE_FIELDS]}")


def parse_candidates(data: Any, fields: FieldMap | Mapping[str, Any] | None = None, *,
                     max_field_chars: int = 100_000) -> CandidateList:
    """Candidates from any accepted shape (see the module docstring); errors name the item and the fix."""
    items, fmt = candidate_items(data)
    field_map = FieldMap.of(fields)
    out: list[Candidate] = []
    for position, item in enumerate(items):
        where = {"shopfusion": f"candidate {position}", "elasticsearch": f"hits.hits[{position}]",
                 "solr": f"response.docs[{position}]"}[fmt]
        if isinstance(item, Candidate):
            out.append(item)
        elif fmt == "shopfusion" and isinstance(item, str | int) and not isinstance(item, bool):
            out.append(Candidate(_clean_id(item, where)))
        elif not isinstance(item, Mapping):
            raise QueryError(f"{where}: a candidate must be an id or an object with `id`, got {type(item).__name__}")
        elif fmt == "elasticsearch":
            out.append(_from_es_hit(item, field_map, where, max_field_chars))
        else:
            out.append(_from_object(item, field_map, where, max_field_chars, keep_extra=fmt == "shopfusion"))
    return CandidateList(tuple(out), fmt)


def candidate_from(value: Candidate | str | Mapping[str, Any], fields: FieldMap | Mapping[str, Any] | None = None) -> Candidate:
    """One shopfusion-format candidate: an id, an object with `id`, or a `Candidate` as it is."""
    return parse_candidates([value], fields).candidates[0]


def _from_es_hit(hit: Mapping[str, Any], fields: FieldMap, where: str, limit: int) -> Candidate:
    source = hit.get("_source")
    if source is None and isinstance(hit.get("fields"), Mapping):  # `_source: false` + `fields: [...]`
        source = {key: value[0] if isinstance(value, list) and len(value) == 1 else value
                  for key, value in hit["fields"].items()}
    if source is None:
        source = {}
    if not isinstance(source, Mapping):
        raise QueryError(f"{where}: `_source` must be an object, got {type(source).__name__}")
    product_id = fields.lookup(source, "id") if fields.explicit("id") else hit.get("_id")
    score = fields.lookup(source, "score") if fields.explicit("score") else hit.get("_score")
    if product_id is None:
        raise QueryError(f"{where} has no `_id`" + (f" and no `{'`/`'.join(fields.paths['id'])}` in its"
                                                     " `_source`" if fields.explicit("id") else ""))
    return _candidate(_clean_id(product_id, where), _score(score, where), source, fields, where, limit,
                      keep_extra=False)


def _from_object(item: Mapping[str, Any], fields: FieldMap, where: str, limit: int, *,
                 keep_extra: bool) -> Candidate:
    product_id = fields.lookup(item, "id")
    if product_id is None or str(product_id).strip() == "":
        names = "`/`".join(fields.paths["id"])
        raise QueryError(f"{where} has no `{names}`: every candidate needs an id"
                         " (name its field with fields.id)")
    return _candidate(_clean_id(product_id, where), _score(fields.lookup(item, "score"), where), item, fields,
                      where, limit, keep_extra=keep_extra)


def _candidate(product_id: str, score: float | None, source: Mapping[str, Any], fields: FieldMap, where: str,
               limit: int, *, keep_extra: bool) -> Candidate:
    from indexer.readers import RawRecord
    from indexer.validation import validate

    title = fields.lookup(source, "title")
    text = fields.lookup(source, "text")
    if _blank(title) and _blank(text):
        present = sorted(str(key) for key in source if key not in {"_id", "_score"})
        shown = ", ".join(present[:MAX_NOTE_FIELDS]) + (", ..." if len(present) > MAX_NOTE_FIELDS else "")
        wanted = "`/`".join(fields.paths["title"])
        texts = [key for key in present if isinstance(source.get(key), str)]
        likely = sorted(texts, key=lambda key: ("name" not in key.lower() and "title" not in key.lower(),
                                                present.index(key)))
        note = f"its source has no `{wanted}` or text" + (
            f" (its fields: {shown}); name the title field with fields, e.g. {{\"title\": \"{likely[0]}\"}}"
            if likely else f" (its fields: {shown})" if present else " (no product fields were sent)")
        return Candidate(product_id, score, None, note)
    data: dict[str, Any] = {"id": product_id, "title": _joined(title if not _blank(title) else text)}
    for key, target in (("description", "description"), ("brand", "brand"), ("category", "category_path"),
                        ("price", "price"), ("attributes", "attributes")):
        value = fields.lookup(source, key)
        if value is not None:
            data[target] = value if key in {"category", "attributes", "price"} else _joined(value)
    if not _blank(title) and not _blank(text):
        data["description"] = " ".join(p for p in (data.get("description"), _joined(text)) if p)
    if keep_extra:
        used = fields.used_paths() | {"score", "text", "product_id"}
        for key, value in source.items():
            if key not in used and key not in data:
                data[key] = value
    checked = validate(RawRecord("candidates", 0, "", data), max_field_chars=limit)
    if not isinstance(checked, Product):
        return Candidate(product_id, score, None, f"its product fields are invalid: {checked.reason}")
    return Candidate(product_id, score, checked)


def _get_path(source: Mapping[str, Any], path: str) -> Any:
    if path in source:
        return source[path]
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _joined(value: Any) -> Any:
    """Solr and ES `fields` give multi-valued text as arrays: one string, parts separated by spaces."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return value


def _clean_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise QueryError(f"{where}: the id must be a string or an integer, got {value!r}")
    text = str(value).strip()
    if not text:
        raise QueryError(f"{where}: the id is empty")
    return text


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"{where}: the score must be a number, got {value!r}; send a number or leave it out")
    score = float(value)
    if not math.isfinite(score):
        raise QueryError(f"{where}: the score must be a finite number, got {value!r}; send a number or leave it out")
    return score


# -- reading JSON ---------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> Any:
    raise QueryError(f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity): send a finite number or null")


def loads_strict(text: str | bytes, source: str = "the request body") -> Any:
    """`json.loads` that refuses NaN/Infinity and reports over-deep nesting as a QueryError."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise QueryError(f"{source} is nested too deeply to be candidates or a search response") from None
    except UnicodeDecodeError as exc:
        raise QueryError(f"{source} is not UTF-8 text ({exc.reason}): send JSON") from None


def load_candidates_text(text: str, source: str) -> Any:
    """A JSON document, or JSONL (one candidate per line), from `text`."""
    stripped = text.strip()
    if not stripped:
        raise QueryError(f"{source} is empty: give a JSON array of candidates, a search response or JSONL")
    try:
        return loads_strict(stripped, source)
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise QueryError(f"{source}: not valid JSON ({whole.msg} at line {whole.lineno}"
                             f" column {whole.colno})") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(loads_strict(line, f"{source} line {number}"))
            except json.JSONDecodeError as exc:
                raise QueryError(f"{source} line {number}: not valid JSON ({exc.msg})") from None
    return items


def read_candidates_file(path: str | Path, *, max_bytes: int = 256 * 1024 * 1024) -> Any:
    """The candidates of a file, or of standard input when `path` is `-` (JSON or JSONL, UTF-8)."""
    name = "standard input" if str(path) == "-" else f"candidates file {path}"
    if str(path) == "-":
        raw = sys.stdin.buffer.read(max_bytes + 1)
    else:
        try:
            with Path(path).open("rb") as handle:
                raw = handle.read(max_bytes + 1)
        except OSError as exc:
            raise QueryError(f"{name} cannot be read: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise QueryError(f"{name} is larger than {max_bytes} bytes: send fewer candidates")
    if b"\x00" in raw[:65536]:
        raise QueryError(f"{name} looks binary (it holds NUL bytes): give JSON or JSONL text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryError(f"{name} is not UTF-8 text (byte {exc.start}): give JSON or JSONL") from None
    return load_candidates_text(text, name)


__all__ = ["DEFAULT_FIELDS", "FIELD_KEYS", "CandidateList", "FieldMap", "candidate_from", "candidate_items",
           "load_candidates_text", "loads_strict", "parse_candidates", "read_candidates_file"]
