"""ProductStore bulk loading: grouped commits, nothing lost at the end, a failure leaves only what was committed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from indexer.docstore import ProductStore, StoredProduct
from shopfusion.types import Product


def _rows(start: int, n: int) -> list[StoredProduct]:
    return [StoredProduct(Product(id=f"p{i}", title=f"product {i}"), f"c{i}", f"t{i}") for i in range(start, start + n)]


def test_bulk_commits_in_groups_and_at_the_end(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "s.sqlite")
    reader = ProductStore(tmp_path / "s.sqlite")
    store.begin_bulk(rows_per_commit=250)
    for start in range(0, 1000, 100):
        store.write_many(_rows(start, 100))
        if start == 200:  # 300 rows written: the first group of 250+ is committed, the rest not yet
            assert reader.count() == 300
    store.write_many(_rows(1000, 30))
    assert reader.count() == 900  # groups commit at 300, 600, 900 rows: 900..1029 are still open
    store.end_bulk()
    assert reader.count() == 1030 == store.count()
    store.write_many(_rows(0, 5))  # outside a bulk load: its own transaction, replacing by id
    assert reader.count() == 1030
    store.close()
    reader.close()


def test_an_unfinished_bulk_load_keeps_only_committed_groups(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "s.sqlite")
    store.begin_bulk(rows_per_commit=100)
    store.write_many(_rows(0, 150))  # committed (>= 100 rows)
    store.write_many(_rows(150, 20))  # open
    store.close()  # what a crash leaves
    reopened = ProductStore(tmp_path / "s.sqlite")
    assert reopened.count() == 150
    reopened.close()


def test_attribute_counts_count_products_per_normalised_name(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "s.sqlite")
    products = [Product("a", "x", attributes={"Colour": "Black", "weight": "75"}),
                Product("b", "x", attributes={"colour ": "White"}),
                Product("c", "x", attributes={"ＷＥＩＧＨＴ": "80", "size": "M"}),
                Product("d", "x")]
    store.write_many([StoredProduct(p, f"c{p.id}", f"t{p.id}") for p in products])
    assert store.attribute_counts() == {"colour": 2, "weight": 2, "size": 1}

    class NoJson:  # an SQLite built without its JSON functions
        def __init__(self, conn) -> None:  # type: ignore[no-untyped-def]
            self.conn = conn

        def execute(self, sql: str, *args):  # type: ignore[no-untyped-def]
            if "json_each" in sql:
                raise sqlite3.OperationalError("no such table: json_each")
            return self.conn.execute(sql, *args)

    real = store._conn
    store._conn = NoJson(real)  # type: ignore[assignment]
    assert store.attribute_counts() == {"colour": 2, "weight": 2, "size": 1}
    store._conn = real
    store.close()
