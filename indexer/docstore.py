"""The product store of one index version (SQLite): every product by id with its content and text hashes.

The lexical and vector legs return ids; hits are filled in from here. The store also tells the next
indexing run which products are unchanged (same content hash) and which vectors can be reused (same text
hash), and lets `verify` compare both legs against one list of ids.

A damaged file (truncated, not a database, a malformed page) is an `IndexStateError` that says how to
repair it, never a raw `sqlite3` traceback; `scan` checks every row's document against its content hash,
so a flipped byte inside a product is found and named.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from indexer.vectorfile import EmbeddingJournal
from shopfusion.errors import IndexStateError
from shopfusion.types import Product, normalize_text

__all__ = ["EmbeddingJournal", "ProductStore", "StoredProduct", "StoreRow"]
StoreRow = tuple[str, str, str, str, str | None, int | None]
"""A raw row: (id, content hash, text hash, JSON doc, source, line); copied between stores unparsed."""

CACHE_KIB = 65_536
"""SQLite page cache per store (a bound, not a reservation): large enough for the id index of about a
million products, so a bulk load does not spill dirty pages to the WAL over and over."""
BULK_ROWS = 50_000
ROW_COLUMNS = "id, content_hash, text_hash, doc, source, line"
"""The columns of a raw row (`StoreRow`), in order."""
_INSERT = ("INSERT OR REPLACE INTO products (id, content_hash, text_hash, doc, source, line)"
           " VALUES (?, ?, ?, ?, ?, ?)")
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    doc TEXT NOT NULL,
    source TEXT,
    line INTEGER
)
"""


@dataclass(frozen=True)
class StoredProduct:
    product: Product
    content_hash: str
    text_hash: str
    source: str | None = None
    line: int | None = None


def _translated(method: Callable[..., _T]) -> Callable[..., _T]:
    """SQLite failures of a damaged file as `IndexStateError` naming the file and the repair."""

    @functools.wraps(method)
    def wrapper(self: ProductStore, *args: Any, **kwargs: Any) -> _T:
        with self.damage():
            return method(self, *args, **kwargs)

    return wrapper


class ProductStore:
    """Products by id in one SQLite file. Writes happen in explicit transactions (`write_many`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.damage():
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._conn.execute(_SCHEMA)
        self._bulk_rows = 0  # > 0 between `begin_bulk` and `end_bulk`
        self._uncommitted = 0

    @contextlib.contextmanager
    def damage(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise IndexStateError(
                f"the product store {self.path} is damaged ({exc}): run `shopfusion verify --repair`"
                " (or re-index with --replace)") from None

    def _product(self, pid: str, doc: str) -> Product:
        try:
            return Product.from_dict(json.loads(doc))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexStateError(f"the product store {self.path} holds a damaged record for {pid!r} ({exc}):"
                                  " run `shopfusion verify --repair`") from None

    def close(self) -> None:
        self._conn.close()

    @_translated
    def checkpoint(self) -> None:
        """Fold the WAL into the main file, so a version is one self-contained file."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def write_many(self, rows: Iterable[StoredProduct]) -> None:
        """Insert or replace `rows`: one transaction, or part of the current one after `begin_bulk`."""
        values = [(r.product.id, r.content_hash, r.text_hash,
                   json.dumps(r.product.to_dict(), ensure_ascii=False), r.source, r.line) for r in rows]
        if self._bulk_rows:
            self._conn.executemany(_INSERT, values)
            self._uncommitted += len(values)
            if self._uncommitted >= self._bulk_rows:
                self._conn.execute("COMMIT")
                self._conn.execute("BEGIN")
                self._uncommitted = 0
            return
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(_INSERT, values)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    @_translated
    def begin_bulk(self, rows_per_commit: int = BULK_ROWS) -> None:
        """Group the following `write_many` calls into transactions of about `rows_per_commit` rows until
        `end_bulk` (a staging load, which a failure throws away whole). Ids arrive in catalog order, so
        every commit rewrites most pages of the id index: committing each 1,000 rows made staging a
        million products 35 times slower than 100,000 (`benchmarks/bench_scale.py`, README)."""
        self._conn.execute("BEGIN")
        self._bulk_rows, self._uncommitted = max(1, rows_per_commit), 0

    @_translated
    def end_bulk(self) -> None:
        if self._bulk_rows:
            self._bulk_rows = 0
            self._conn.execute("COMMIT")

    @_translated
    def contains(self, product_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone() is not None

    @_translated
    def delete(self, ids: Iterable[str]) -> None:
        self._conn.execute("BEGIN")
        self._conn.executemany("DELETE FROM products WHERE id = ?", ((pid,) for pid in ids))
        self._conn.execute("COMMIT")

    @_translated
    def get_many(self, ids: Sequence[str]) -> dict[str, Product]:
        return {pid: self._product(pid, doc) for pid, doc in self._where_in("SELECT id, doc FROM products", "id", ids)}

    @_translated
    def hashes(self) -> dict[str, tuple[str, str]]:
        """id -> (content hash, text hash) for every product."""
        return {pid: (c, t) for pid, c, t in self._conn.execute(
            "SELECT id, content_hash, text_hash FROM products")}

    @_translated
    def attribute_counts(self) -> dict[str, int]:
        """Normalised attribute name -> how many products name it. SQLite's JSON functions read the
        stored documents (no product is parsed in Python); an SQLite built without them is read row by row."""
        try:
            rows = self._conn.execute(
                "SELECT a.key, COUNT(*) FROM products, json_each(products.doc, '$.attributes') AS a"
                " GROUP BY a.key").fetchall()
        except sqlite3.OperationalError as exc:
            if "json_each" not in str(exc):
                raise
            names: dict[str, int] = {}
            for (doc,) in self._conn.execute("SELECT doc FROM products"):
                for name in json.loads(doc).get("attributes") or {}:
                    names[name] = names.get(name, 0) + 1
            rows = list(names.items())
        counts: dict[str, int] = {}
        for name, n in rows:
            key = normalize_text(str(name))
            if key:
                counts[key] = counts.get(key, 0) + int(n)
        return counts

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredProduct]:
        """Every product in id order (the order both legs are built in)."""
        for _, stored in self.scan(batch, check=False):
            if stored is not None:
                yield stored

    def scan(self, batch: int = 1000, *, check: bool = True) -> Iterator[tuple[str, StoredProduct | None]]:
        """(id, product) for every row in id order; with `check`, a row whose document is unreadable or
        does not hash to its recorded content hash comes as (id, None) instead of raising."""
        with self.damage():
            cursor = self._conn.execute(
                "SELECT id, doc, content_hash, text_hash, source, line FROM products ORDER BY id")
        while True:
            with self.damage():
                rows = cursor.fetchmany(batch)
            if not rows:
                return
            for pid, doc, content_hash, text_hash, source, line in rows:
                try:
                    product = self._product(pid, doc)
                except IndexStateError:
                    if not check:
                        raise
                    yield pid, None
                    continue
                if check and (product.id != pid or product.content_hash() != content_hash
                              or product.text_hash() != text_hash):
                    yield pid, None
                    continue
                yield pid, StoredProduct(product, content_hash, text_hash, source, line)

    @_translated
    def ids(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT id FROM products")}

    @_translated
    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM products").fetchone()[0])

    # -- bulk operations for large catalogs: raw rows, SQL-side joins, numpy keys -----------------------
    def iter_rows(self, batch: int = 1000) -> Iterator[list[StoreRow]]:
        """Raw rows in id order, `batch` at a time (nothing parsed: for copying between stores)."""
        cursor = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM products ORDER BY id")
        while rows := cursor.fetchmany(batch):
            yield rows

    def write_rows(self, rows: Iterable[StoreRow]) -> None:
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany("INSERT OR REPLACE INTO products (id, content_hash, text_hash, doc, source, line)"
                                   " VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def copy_from(self, other: ProductStore, *, skip_text_hashes: Iterable[str] = ()) -> None:
        """Copy every row of `other` here (a row with the same id is replaced), inside SQLite and unparsed;
        rows whose text hash is in `skip_text_hashes` are left out."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS skip_text (text_hash TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM skip_text")
        self._conn.executemany("INSERT OR IGNORE INTO skip_text VALUES (?)", ((t,) for t in skip_text_hashes))
        with self._attached(other, "source_store"):
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO products (id, content_hash, text_hash, doc, source, line)"
                    " SELECT id, content_hash, text_hash, doc, source, line FROM source_store.products"
                    " WHERE text_hash NOT IN (SELECT text_hash FROM skip_text)")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def iter_keys(self, batch: int = 50_000) -> Iterator[list[tuple[str, str]]]:
        """(id, text hash) of every product, `batch` at a time."""
        cursor = self._conn.execute("SELECT id, text_hash FROM products")
        while rows := cursor.fetchmany(batch):
            yield rows

    def rows_with_text(self, text_hashes: Iterable[str]) -> list[StoreRow]:
        """Raw rows whose text hash is one of `text_hashes` (a short list: failed embeddings)."""
        return list(self._where_in(f"SELECT {ROW_COLUMNS} FROM products", "text_hash", text_hashes))

    def compare(self, old: ProductStore) -> dict[str, int]:
        """Counts of this store's products against `old`: added, updated, unchanged, and `missing` (in
        `old` only), computed by SQLite without loading either store."""
        with self._attached(old, "old"):
            added, unchanged = self._conn.execute(
                "SELECT SUM(o.id IS NULL), SUM(o.content_hash = p.content_hash) FROM products p"
                " LEFT JOIN old.products o ON o.id = p.id").fetchone()
            missing = self._conn.execute(
                "SELECT COUNT(*) FROM old.products o WHERE NOT EXISTS"
                " (SELECT 1 FROM products p WHERE p.id = o.id)").fetchone()[0]
        total = self.count()
        added, unchanged = int(added or 0), int(unchanged or 0)
        return {"added": added, "unchanged": unchanged, "updated": total - added - unchanged,
                "missing": int(missing)}

    def text_hash_keys(self, *, not_in: ProductStore | None = None) -> np.ndarray:
        """The distinct text hashes (`S32`, sorted) of the products here, or of those whose id `not_in`
        lacks."""
        query = "SELECT DISTINCT text_hash FROM products"
        if not_in is None:
            return _keys(self._conn.execute(query))
        with self._attached(not_in, "other"):
            return _keys(self._conn.execute(
                "SELECT DISTINCT text_hash FROM products p WHERE NOT EXISTS"
                " (SELECT 1 FROM other.products o WHERE o.id = p.id)"))

    def iter_text_rows(self, batch: int = 1000) -> Iterator[list[tuple[int, str, str]]]:
        """(rowid, text hash, JSON doc), in storage order, `batch` at a time."""
        cursor = self._conn.execute("SELECT rowid, text_hash, doc FROM products")
        while rows := cursor.fetchmany(batch):
            yield rows

    def docs_by_rowid(self, rowids: Sequence[int]) -> dict[int, Product]:
        return {rowid: Product.from_dict(json.loads(doc))
                for rowid, doc in self._where_in("SELECT rowid, doc FROM products", "rowid", [int(r) for r in rowids])}

    def rows_of(self, ids: Sequence[str]) -> list[StoreRow]:
        """Raw rows of the given ids that are here."""
        return list(self._where_in(f"SELECT {ROW_COLUMNS} FROM products", "id", ids))

    def hashes_of(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """id -> (content hash, text hash) for the given ids that are here."""
        return {pid: (c, t) for pid, c, t in self._where_in("SELECT id, content_hash, text_hash FROM products", "id", ids)}

    def _where_in(self, select: str, column: str, values: Iterable[Any]) -> Iterator[Any]:
        """Rows of `select ... WHERE column IN values`, for any number of distinct values (SQLite allows
        999 parameters per statement, so they go 900 at a time)."""
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            yield from self._conn.execute(f"{select} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)

    def _attached(self, other: ProductStore, alias: str) -> _Attached:
        return _Attached(self._conn, other.path, alias)


class _Attached:
    """`ATTACH` another store's file to this connection for one SQL-side join (read only)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, alias: str) -> None:
        self.conn, self.path, self.alias = conn, path, alias

    def __enter__(self) -> None:
        self.conn.execute(f"ATTACH DATABASE ? AS {self.alias}", (str(self.path),))

    def __exit__(self, *exc: object) -> None:
        self.conn.execute(f"DETACH DATABASE {self.alias}")


def _keys(cursor: sqlite3.Cursor) -> np.ndarray:
    keys = np.array([row[0].encode("ascii") for row in cursor], dtype="S32")
    keys.sort()
    return keys
