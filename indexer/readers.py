"""Catalog readers: JSONL, CSV and Parquet (optionally gzip-compressed for JSONL/CSV), read as a stream.

Readers never judge a record; they yield every record with its position (1-based line for JSONL/CSV, row
number for Parquet), its raw text, and either the parsed object or the reason it could not be parsed.
`indexer.validation` decides what is a valid product. Memory use is constant in the catalog size.

A record that cannot be parsed (nested deeper than Python's parser allows, a number of thousands of
digits, a CSV cell over `CSV_FIELD_LIMIT`) is one reject; a file that cannot be read at all (UTF-16 or
UTF-32 text, a `.gz` that is not gzip, a truncated or corrupt gzip stream, an unreadable Parquet file) is
a `CatalogError` that names the fix, raised before anything is published. A UTF-8 byte-order mark at the
start of a file is skipped. Parquet values come back as plain Python: MAP columns become mappings and
DECIMAL values stay exact (`decimal.Decimal`) for validation to judge.

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
import zlib
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
CSV_FIELD_LIMIT = 16 * 1024 * 1024
"""Characters one CSV cell may hold before the row is rejected (Python's default, 128 KiB, would make a
long description a parse error; validation applies `index.max_field_chars` to what is read)."""
_GZIP_MAGIC = b"\x1f\x8b"
_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}
_UTF8_BOM = b"\xef\xbb\xbf"


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
    """The catalog's bytes, decompressed when it is named `.gz`; refuses what is not UTF-8 text."""
    if path.suffix.lower() == ".gz":
        with path.open("rb") as probe:
            magic = probe.read(2)
        if magic != _GZIP_MAGIC:
            raise CatalogError(f"{path} is named .gz but is not gzip-compressed: rename it without .gz"
                               " (or compress it with `gzip`)")
        handle: IO[bytes] = gzip.open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
    else:
        handle = path.open("rb")
    try:
        head = handle.peek(512)[:512] if hasattr(handle, "peek") else b""  # type: ignore[union-attr]
    except (OSError, EOFError, zlib.error) as exc:
        handle.close()
        raise _stream_error(path, 0, exc) from exc
    _check_text_encoding(path, head)
    return handle


_BINARY_FORMATS = {b"PAR1": "a Parquet file", b"PK\x03\x04": "a ZIP archive (or an Excel workbook)",
                   _GZIP_MAGIC: "gzip-compressed"}
_BINARY_FIX = {b"PAR1": "name it .parquet (or pass --format parquet)",
               b"PK\x03\x04": "unzip it, or save the sheet as CSV (UTF-8)",
               _GZIP_MAGIC: "name it with .gz at the end (or pass the uncompressed file)"}


def _check_text_encoding(path: Path, head: bytes) -> None:
    for bom, name in _WIDE_BOMS.items():
        if head.startswith(bom):
            raise CatalogError(f"{path} is {name} text: re-export it as UTF-8 (for example"
                               f" `iconv -f {name} -t UTF-8 {path.name} > catalog.utf8`)")
    if len(head) >= 2 and head[:2].count(0) == 1:  # "{\0" or "\0{": UTF-16 without a byte-order mark
        raise CatalogError(f"{path} looks like UTF-16 text (NUL bytes between characters): re-export it as"
                           " UTF-8")
    for magic, what in _BINARY_FORMATS.items():
        if head.startswith(magic):
            raise CatalogError(f"{path} is {what}, not JSONL or CSV text: {_BINARY_FIX[magic]}")
    if head.count(0) > max(2, len(head) // 64):  # not text (a stray NUL in a row is that row's problem)
        raise CatalogError(f"{path} is a binary file (NUL bytes in its first {len(head)} bytes), not JSONL or"
                           " CSV text: check the path, or export the catalog as JSONL, CSV or Parquet")


def _stream_error(path: Path, line: int, exc: BaseException) -> CatalogError:
    """A compressed stream that breaks mid-file: the catalog as a whole cannot be trusted."""
    where = f"after line {line}" if line else "at its start"
    if isinstance(exc, EOFError):
        what = "is truncated (the gzip stream ends before its end marker)"
    else:
        what = f"is corrupt ({type(exc).__name__}: {exc})"
    return CatalogError(f"{path} {what} {where}: download or export it again; nothing was indexed from it")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of every line, with a leading UTF-8 BOM removed and stream errors named."""
    number = 0
    with _open_binary(path) as handle:
        try:
            for number, raw_bytes in enumerate(handle, start=1):
                yield number, (raw_bytes[3:] if number == 1 and raw_bytes.startswith(_UTF8_BOM) else raw_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            raise _stream_error(path, number, exc) from exc


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    for number, raw_bytes in _lines(path):
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
        except RecursionError:
            yield RawRecord(source, number, _cut(text), None,
                            "JSON nested too deeply to parse: flatten the record")
            continue
        except ValueError as exc:  # an integer of more than 4,300 digits
            yield RawRecord(source, number, _cut(text), None, f"unparseable JSON ({exc}): fix the line")
            continue
        if not isinstance(data, dict):
            yield RawRecord(source, number, _cut(text), None,
                            f"not a JSON object (got {type(data).__name__}): each line must be one product")
            continue
        yield RawRecord(source, number, _cut(text), data)


def _read_csv(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with _open_binary(path) as binary:
        text_stream = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text_stream)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (OSError, EOFError, zlib.error) as exc:
            raise _stream_error(path, 0, exc) from exc
        except csv.Error as exc:
            raise CatalogError(f"{path}: the CSV header cannot be read ({exc})") from exc
        header = [name.strip().lstrip("\ufeff") for name in header]
        if "id" not in header or "title" not in header:
            raise CatalogError(
                f"{path}: the CSV header must name the columns `id` and `title` (found {header[:8]})"
            )
        previous_end = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as exc:
                raise _stream_error(path, previous_end, exc) from exc
            except csv.Error as exc:
                start, previous_end = previous_end + 1, reader.line_num
                yield RawRecord(source, start, "", None,
                                f"unparseable CSV row ({exc}): check its quoting (a cell may hold at most"
                                f" {CSV_FIELD_LIMIT:,} characters)")
                continue
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
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependencyError("pyarrow", "default") from exc
    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise CatalogError(f"{path} is not a readable Parquet file: {exc}") from exc
    schema = parquet.schema_arrow
    plain = {f.name: f.type for f in schema if _has_map(pa, f.type)}
    number = 0
    batches = parquet.iter_batches(batch_size=2048)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # pyarrow raises OSError / ArrowInvalid for damaged row groups
            raise CatalogError(f"{path} is damaged after row {number} ({type(exc).__name__}: {exc}):"
                               " export it again; nothing was indexed from it") from exc
        for row in batch.to_pylist():
            number += 1
            for name, kind in plain.items():
                row[name] = _plain(pa, row.get(name), kind)
            yield RawRecord(source, number, _cut(json.dumps(row, default=str, ensure_ascii=False)), row)


def _has_map(pa: Any, kind: Any) -> bool:
    if pa.types.is_map(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_map(pa, kind.value_type)
    if pa.types.is_struct(kind):
        return any(_has_map(pa, kind.field(i).type) for i in range(kind.num_fields))
    return False


def _plain(pa: Any, value: Any, kind: Any) -> Any:
    """A value as `to_pylist` gives it, with MAP values (lists of key/value pairs) made mappings."""
    if value is None:
        return None
    if pa.types.is_map(kind):
        return {str(k): _plain(pa, v, kind.item_type) for k, v in value}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_plain(pa, v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {kind.field(i).name: _plain(pa, value.get(kind.field(i).name), kind.field(i).type)
                for i in range(kind.num_fields)}
    return value


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…"
