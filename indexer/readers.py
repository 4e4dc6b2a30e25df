"""Catalog readers: JSONL, CSV and Parquet (optionally gzip-compressed for JSONL/CSV), read as a stream.

Readers never judge a record; they yield every record with its position (1-based line for JSONL/CSV, row
number for Parquet), its raw text, and either the parsed object or the reason it could not be parsed.
`indexer.validation` decides what is a valid product. Memory use is constant in the catalog size.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = path.write_text('{"id": 1, "title": "Drill"}\\nnot json\\n')
>>> [(r.line, r.error is None) for r in read_catalog(path)]
[(1, True), (2, False)]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from shopfusion.errors import CatalogError, MissingDependencyError

CatalogFormat = Literal["jsonl", "csv", "parquet"]
FORMATS: dict[str, CatalogFormat] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
    ".pq": "parquet",
}
MAX_RAW_CHARS = 10_000
"""Raw text kept in a reject record is cut to this length (the record itself may be huge)."""


@dataclass(frozen=True)
class RawRecord:
    source: str
    line: int
    raw: str
    data: dict[str, Any] | None
    error: str | None = None


def detect_format(path: Path) -> CatalogFormat:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise CatalogError(
        f"cannot tell the format of {path.name}: name it .jsonl, .csv or .parquet (optionally .gz),"
        " or pass --format"
    )


def read_catalog(path: str | os.PathLike[str], fmt: CatalogFormat | None = None) -> Iterator[RawRecord]:
    """Yield every record of a catalog file, parsed or with the reason it could not be."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog {path} not found: check the path")
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "parquet":
        return _read_parquet(path)
    raise CatalogError(f"unknown catalog format {fmt!r}: use jsonl, csv or parquet")


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    with _open_binary(path) as handle:
        for number, raw_bytes in enumerate(handle, start=1):
            try:
                text = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r\n")
                yield RawRecord(source, number, _cut(raw), None,
                                f"invalid UTF-8 at byte {exc.start}: re-export the catalog as UTF-8")
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRecord(source, number, _cut(text), None,
                                f"unparseable JSON ({exc.msg} at column {exc.colno}): fix the line")
                continue
            if not isinstance(data, dict):
                yield RawRecord(source, number, _cut(text), None,
                                f"not a JSON object (got {type(data).__name__}): each line must be one product")
                continue
            yield RawRecord(source, number, _cut(text), data)


def _read_csv(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    with _open_binary(path) as binary:
        text_stream = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text_stream)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [name.strip().lstrip("\ufeff") for name in header]
        if "id" not in header or "title" not in header:
            raise CatalogError(
                f"{path}: the CSV header must name the columns `id` and `title` (found {header[:8]})"
            )
        previous_end = reader.line_num
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            raw = ",".join(row)
            if not any(cell.strip() for cell in row):
                continue
            if _has_surrogates(raw):
                yield RawRecord(source, start, _cut(raw.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "replace")), None, "invalid UTF-8: re-export the catalog as UTF-8")
                continue
            if len(row) != len(header):
                yield RawRecord(source, start, _cut(raw), None,
                                f"expected {len(header)} columns, got {len(row)}: quote fields that hold commas")
                continue
            data = {name: (value if value != "" else None) for name, value in zip(header, row, strict=True)}
            yield RawRecord(source, start, _cut(raw), data)


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependencyError("pyarrow", "default") from exc
    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise CatalogError(f"{path} is not a readable Parquet file: {exc}") from exc
    number = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(source, number, _cut(json.dumps(row, default=str, ensure_ascii=False)), row)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…"
