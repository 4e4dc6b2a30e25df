"""Bad input: every kind of malformed record is rejected with its line and reason; the rest is read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.readers import RawRecord, detect_format, read_catalog
from indexer.validation import validate
from shopfusion.errors import CatalogError
from shopfusion.types import Product, Reject


def _validated(path: Path, **kw):
    return [validate(r, **kw) for r in read_catalog(path)]


def test_jsonl_every_malformed_kind(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "ok1", "title": "Good drill"}),                    # 1 ok
        '{"id": "broken", "title": ',                                         # 2 unparseable
        json.dumps(["not", "an", "object"]),                                  # 3 not an object
        json.dumps({"title": "No id"}),                                       # 4 missing id
        json.dumps({"id": "  ", "title": "Empty id"}),                        # 5 empty id
        json.dumps({"id": "no-title"}),                                       # 6 missing title
        json.dumps({"id": "t", "title": ""}),                                 # 7 empty title
        json.dumps({"id": "w1", "title": "x", "price": "cheap"}),             # 8 wrong type
        json.dumps({"id": "w2", "title": "x", "brand": ["a"]}),               # 9 wrong type
        json.dumps({"id": "w3", "title": "x", "attributes": [1, 2]}),         # 10 wrong type
        json.dumps({"id": "big", "title": "x", "description": "y" * 500}),    # 11 oversized
        "",                                                                   # 12 blank: skipped
        json.dumps({"id": "ok2", "title": "Bell\x07 ring\x00er"}),            # 13 ok, controls stripped
        json.dumps({"id": "neg", "title": "x", "price": -3}),                 # 14 negative price
        json.dumps({"id": True, "title": "x"}),                               # 15 bool id
    ]
    path = tmp_path / "c.jsonl"
    data = "\n".join(lines).encode() + b"\n" + b'{"id": "bad-utf8", "title": "caf\xe9"}\n'  # 16 invalid UTF-8
    path.write_bytes(data)
    results = _validated(path, max_field_chars=100)
    products = [r for r in results if isinstance(r, Product)]
    rejects = [r for r in results if isinstance(r, Reject)]
    assert [p.id for p in products] == ["ok1", "ok2"]
    assert products[1].title == "Bell ringer"
    assert [r.line for r in rejects] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16]
    reasons = {r.line: r.reason for r in rejects}
    assert "unparseable JSON" in reasons[2]
    assert "not a JSON object" in reasons[3]
    assert "`id` is missing" in reasons[4]
    assert "`id` is empty" in reasons[5]
    assert "`title` is missing" in reasons[6]
    assert "`title` is empty" in reasons[7]
    assert "`price` must be a number" in reasons[8]
    assert "`brand` must be a string" in reasons[9]
    assert "`attributes` must be a mapping" in reasons[10]
    assert "above the limit of 100" in reasons[11] and "max_field_chars" in reasons[11]
    assert "must not be negative" in reasons[14]
    assert "`id` must be a string or an integer" in reasons[15]
    assert "invalid UTF-8" in reasons[16]
    assert all(r.raw for r in rejects)
    assert len(results) == 15  # every non-blank line is accounted for


def test_product_shapes_are_normalised(tmp_path: Path) -> None:
    record = {"id": 42, "title": " Drill ", "category_path": "Tools > Power Tools>Drills", "price": "1,299.50",
              "attributes": {"voltage": 18, "cordless": True, "weight": 1.5, "colors": ["red", "black"]},
              "ean": "123", "extra_null": None}
    product = validate(RawRecord("x", 1, "", record))
    assert isinstance(product, Product)
    assert product.id == "42" and product.title == "Drill"
    assert product.category_path == ("Tools", "Power Tools", "Drills")
    assert product.price == 1299.5
    assert product.attributes == {"voltage": "18", "cordless": "true", "weight": "1.5",
                                  "colors": "red, black", "ean": "123"}


def test_csv_catalog_with_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        b'id,title,brand,price,category_path\n'
        b'1,Cordless drill,Makita,99.5,Tools > Drills\n'
        b'2,"Hose, 25 m",Gardena,,Garden\n'
        b'3,Missing columns\n'
        b',No id,Acme,1,\n'
        b'5,"Multi\nline title",Acme,2,\n'
        b'6,Caf\xe9,Acme,3,\n'
        b'7,Lamp,Philips,abc,\n'
    )
    results = [(r.line, validate(r)) for r in read_catalog(path)]
    ok = {item.id: line for line, item in results if isinstance(item, Product)}
    bad = {line: item.reason for line, item in results if isinstance(item, Reject)}
    assert ok == {"1": 2, "2": 3, "5": 6}
    assert set(bad) == {4, 5, 8, 9}
    assert "expected 5 columns" in bad[4]
    assert "`id` is missing" in bad[5]
    assert "invalid UTF-8" in bad[8]
    assert "`price` must be a number" in bad[9]


def test_csv_without_id_column_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("sku,name\n1,x\n")
    with pytest.raises(CatalogError, match="`id` and `title`"):
        list(read_catalog(path))


def test_parquet_catalog(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    table = pa.table({"id": ["a", "b", None], "title": ["Drill", None, "Hose"], "price": [1.0, 2.0, None],
                      "category_path": [["Tools"], [], ["Garden"]]})
    pq.write_table(table, path)
    results = [validate(r) for r in read_catalog(path)]
    assert isinstance(results[0], Product) and results[0].category_path == ("Tools",)
    assert isinstance(results[1], Reject) and results[1].line == 2 and "title" in results[1].reason
    assert isinstance(results[2], Reject) and results[2].line == 3 and "id" in results[2].reason


def test_gzip_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps({"id": "a", "title": "Drill"}) + "\n")
    assert [r.data["id"] for r in read_catalog(path)] == ["a"]


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="--format"):
        detect_format(tmp_path / "catalog.xml")
    with pytest.raises(CatalogError, match="not found"):
        read_catalog(tmp_path / "absent.jsonl")
