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
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shopfusion.errors import IndexStateError
from shopfusion.types import Product

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
            self._conn.execute(_SCHEMA)

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
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO products (id, content_hash, text_hash, doc, source, line)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ((r.product.id, r.content_hash, r.text_hash,
                  json.dumps(r.product.to_dict(), ensure_ascii=False), r.source, r.line) for r in rows),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

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
        out: dict[str, Product] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for pid, doc in self._conn.execute(f"SELECT id, doc FROM products WHERE id IN ({marks})", chunk):
                out[pid] = self._product(pid, doc)
        return out

    @_translated
    def hashes(self) -> dict[str, tuple[str, str]]:
        """id -> (content hash, text hash) for every product."""
        return {pid: (c, t) for pid, c, t in self._conn.execute(
            "SELECT id, content_hash, text_hash FROM products")}

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


class EmbeddingJournal:
    """Vectors computed by the current run, one file per finished batch, keyed by text hash.

    A killed run leaves its journal in `staging/`; the next run with the same model reads it back and
    embeds only what is missing. Files are written to a temporary name and renamed, so a batch file is
    either complete or absent."""

    def __init__(self, path: str | os.PathLike[str], model_id: str) -> None:
        self.path = Path(path)
        self.model_id = model_id
        marker = self.path / "model.json"
        if marker.is_file() and self._marked_model(marker) != model_id:
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            tmp = marker.with_name("model.json.tmp")
            tmp.write_text(json.dumps({"model_id": model_id}), encoding="utf-8")
            os.replace(tmp, marker)  # a run killed here leaves no half-written marker

    @staticmethod
    def _marked_model(marker: Path) -> str | None:
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("model_id")
        except (json.JSONDecodeError, OSError, AttributeError):
            return None  # unreadable: treat as another model, the journal is rebuilt

    def clear(self) -> None:
        for file in self.path.glob("*"):
            file.unlink()

    def load(self) -> dict[str, np.ndarray]:
        vectors: dict[str, np.ndarray] = {}
        for file in sorted(self.path.glob("batch-*.npz")):
            try:
                with np.load(file) as data:
                    for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                        vectors[str(key)] = vector
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                file.unlink(missing_ok=True)  # unreadable leftovers are simply embedded again
        return vectors

    def append(self, batch_id: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        target = self.path / f"batch-{batch_id}.npz"
        tmp = self.path / f".batch-{batch_id}.tmp"  # never matched by load()'s glob
        with tmp.open("wb") as handle:
            np.savez(handle, keys=np.array(list(keys)), vectors=vectors.astype(np.float32))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
