"""Issue 14, bad input: every hostile or odd catalog gives a reject with a reason or a `CatalogError` that
says how to fix it, never a traceback, and no value is changed silently."""

from __future__ import annotations

import decimal
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.readers import CSV_FIELD_LIMIT, RawRecord, read_catalog
from indexer.validation import validate
from shopfusion.errors import CatalogError
from shopfusion.types import Product, Reject


def _validated(path: Path, **kw) -> list[Product | Reject]:
    return [validate(r, **kw) for r in read_catalog(path)]


def _one(record: dict) -> Product | Reject:
    return validate(RawRecord("c.jsonl", 1, json.dumps(record), record))


def test_deeply_nested_json_is_one_reject(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "x", "attributes": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
                    + json.dumps({"id": "b", "title": "fine"}) + "\n")
    results = _validated(path)
    assert isinstance(results[0], Reject) and "nested too deeply" in results[0].reason
    assert isinstance(results[1], Product) and results[1].id == "b"


def test_nested_attributes_inside_the_limit_are_kept_as_json() -> None:
    deep: object = "leaf"
    for _ in range(50):
        deep = [deep]
    result = _one({"id": "a", "title": "x", "attributes": {"tree": deep}})
    assert isinstance(result, Product) and result.attributes["tree"].startswith("[[[")


@pytest.mark.parametrize("price_json, fragment", [
    ("9" * 400, "too large"),
    ("9" * 5000, "unparseable JSON"),   # past Python's 4,300-digit int limit: a parse error, not a crash
    ("1e400", "finite"),
    ('"1e400"', "too large"),
    ('"12,50"', "ambiguous"),
    ('"1,250"', "ambiguous"),
    ('"1.234,56"', "ambiguous"),
    ('"1_000"', "must be a number"),
    ('"$12"', "must be a number"),
    ('"NaN"', "must be a number"),
])
def test_bad_prices_are_rejected_with_a_reason(tmp_path: Path, price_json: str, fragment: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "x", "price": ' + price_json + "}\n")
    [result] = _validated(path)
    assert isinstance(result, Reject) and fragment in result.reason, result


@pytest.mark.parametrize("text, expected", [
    ("12.50", 12.5), (" 7 ", 7.0), ("1,234.50", 1234.5), ("1,234,567", 1234567.0), ("1e3", 1000.0), ("", None),
])
def test_unambiguous_price_strings_are_read_exactly(text: str, expected: float | None) -> None:
    result = _one({"id": "a", "title": "x", "price": text})
    assert isinstance(result, Product) and result.price == expected


def test_ids_are_compared_exactly_as_given(tmp_path: Path) -> None:
    results = [_one({"id": v, "title": "x"}) for v in (" padded ", "padded", 12, "12", "a\tb", "  ")]
    products = [r for r in results if isinstance(r, Product)]
    assert [p.id for p in products] == [" padded ", "padded", "12", "12"]
    assert isinstance(results[4], Reject) and "control characters" in results[4].reason
    assert isinstance(results[5], Reject) and "`id` is empty" in results[5].reason


def test_padded_and_plain_ids_stay_two_products(tmp_path: Path, hash_settings) -> None:
    from indexer.pipeline import run_index

    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": " padded ", "title": "one"}) + "\n"
                    + json.dumps({"id": "padded", "title": "two"}) + "\n")
    summary = run_index(path, tmp_path / "idx", settings=hash_settings)
    assert (summary.added, summary.duplicates, summary.total) == (2, 0, 2)


def test_csv_cell_over_128_kib_is_read_and_judged_by_the_field_limit(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,title,description\n1,x," + "a" * 140_000 + "\n2,ok,fine\n")
    results = _validated(path)
    assert isinstance(results[0], Reject) and "max_field_chars" in results[0].reason
    assert isinstance(results[1], Product) and results[1].id == "2"
    accepted = _validated(path, max_field_chars=200_000)
    assert isinstance(accepted[0], Product) and len(accepted[0].description or "") == 140_000


def test_csv_cell_over_the_parser_limit_is_one_reject(tmp_path: Path, monkeypatch) -> None:
    import csv

    import indexer.readers as readers

    monkeypatch.setattr(readers, "CSV_FIELD_LIMIT", 1000)
    old = csv.field_size_limit(1000)
    try:
        path = tmp_path / "c.csv"
        path.write_text("id,title\n1," + "a" * 5000 + "\n2,ok\n")
        results = _validated(path)
    finally:
        csv.field_size_limit(old)
    assert isinstance(results[0], Reject) and "unparseable CSV row" in results[0].reason
    assert isinstance(results[1], Product) and results[1].id == "2"
    assert CSV_FIELD_LIMIT >= 16 * 1024 * 1024


def test_gz_that_is_not_gzip_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_text(json.dumps({"id": "a", "title": "x"}) + "\n")
    with pytest.raises(CatalogError, match="not gzip-compressed"):
        list(read_catalog(path))


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.csv.gz"])
def test_truncated_gzip_is_a_catalog_error_naming_the_line(tmp_path: Path, name: str) -> None:
    header = "id,title\n" if name.startswith("c.csv") else ""
    rows = "".join((f"{n},title {n}\n" if header else json.dumps({"id": n, "title": f"t {n}"}) + "\n")
                   for n in range(2000))
    data = gzip.compress((header + rows).encode())
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"truncated .* after line \d+"):
        list(read_catalog(path))


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "title": "x"}).encode() + b"\n")
    [result] = _validated(path)
    assert isinstance(result, Product) and result.id == "a"
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfid,title\n1,Drill\n")
    [row] = _validated(csv_path)
    assert isinstance(row, Product) and row.id == "1"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
@pytest.mark.parametrize("name", ["c.jsonl", "c.csv"])
def test_utf16_and_utf32_exports_are_a_catalog_error(tmp_path: Path, encoding: str, name: str) -> None:
    text = "id,title\n1,x\n" if name.endswith(".csv") else json.dumps({"id": "a", "title": "x"}) + "\n"
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    with pytest.raises(CatalogError, match="UTF-(16|32).*UTF-8"):
        list(read_catalog(path))


@pytest.mark.parametrize("name", ["c.jsonl", "c.csv"])
def test_binary_files_named_as_text_say_what_they_are_without_echoing_bytes(tmp_path: Path, name: str) -> None:
    parquet = tmp_path / name
    pq.write_table(pa.table({"id": ["a"], "title": ["Drill"]}), parquet)
    with pytest.raises(CatalogError, match=r"is a Parquet file.*name it \.parquet"):
        list(read_catalog(parquet))
    packed = tmp_path / f"packed-{name}"
    packed.write_bytes(gzip.compress(b"id,title\n1,x\n"))
    with pytest.raises(CatalogError, match=r"gzip-compressed.*\.gz"):
        list(read_catalog(packed))
    binary = tmp_path / f"binary-{name}"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200) + b"\xd0a\x00@")
    with pytest.raises(CatalogError, match="is a binary file") as error:
        list(read_catalog(binary))
    assert "ELF" not in str(error.value)


def test_a_stray_nul_in_a_text_catalog_is_that_rows_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,title\n1,Dr\x00ill\n2,Hose\n")
    results = _validated(path)
    assert [r.id for r in results if isinstance(r, Product)][-1] == "2"


def test_parquet_decimal_prices_and_map_attributes(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    table = pa.table({
        "id": ["a", "b"],
        "title": ["Drill", "Hose"],
        "price": pa.array([decimal.Decimal("12.50"), decimal.Decimal("1234567.89")], pa.decimal128(12, 2)),
        "attributes": pa.array([[("color", "red"), ("size", "L")], []], pa.map_(pa.string(), pa.string())),
        "specs": pa.array([[("weight", decimal.Decimal("1.5"))], None],
                          pa.map_(pa.string(), pa.decimal128(4, 1))),
    })
    pq.write_table(table, path)
    first, second = _validated(path)
    assert isinstance(first, Product) and isinstance(second, Product)
    assert first.price == 12.5 and second.price == 1234567.89
    assert first.attributes == {"color": "red", "size": "L", "specs": '{"weight": "1.5"}'}
    assert second.attributes == {}


def test_a_catalog_error_during_indexing_leaves_the_index_unchanged(tmp_path: Path, tiny_catalog: Path,
                                                                  hash_settings) -> None:
    from indexer.pipeline import run_index

    run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)
    before = (tmp_path / "idx" / "manifest.json").read_bytes()
    data = gzip.compress(tiny_catalog.read_bytes() * 50)
    broken = tmp_path / "c.jsonl.gz"
    broken.write_bytes(data[:-20])
    with pytest.raises(CatalogError, match="truncated"):
        run_index(broken, tmp_path / "idx", settings=hash_settings, replace=True)
    assert (tmp_path / "idx" / "manifest.json").read_bytes() == before


def test_lone_surrogates_in_a_catalog_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "bad \\ud800 x"}\n{"id": "b\\udc00", "title": "ok"}\n'
                    '{"id": "c", "title": "t", "attributes": {"k\\udfff": "v"}}\n{"id": "d", "title": "fine"}\n')
    results = _validated(path)
    assert [type(r).__name__ for r in results] == ["Reject", "Reject", "Reject", "Product"]
    assert all("lone surrogate" in r.reason for r in results[:3] if isinstance(r, Reject))
