"""The product store of one index version (SQLite): every product by id with its content and text hashes.

The lexical and vector legs return ids; hits are filled in from here. The store also tells the next
indexing run which products are unchanged (same content hash) and which vectors can be reused (same text
hash), and lets `verify` compare both legs against one list of ids.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shopfusion.types import Product

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


class ProductStore:
    """Products by id in one SQLite file. Writes happen in explicit transactions (`write_many`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

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

    def contains(self, product_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone() is not None

    def delete(self, ids: Iterable[str]) -> None:
        self._conn.execute("BEGIN")
        self._conn.executemany("DELETE FROM products WHERE id = ?", ((pid,) for pid in ids))
        self._conn.execute("COMMIT")

    def get_many(self, ids: Sequence[str]) -> dict[str, Product]:
        out: dict[str, Product] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for pid, doc in self._conn.execute(f"SELECT id, doc FROM products WHERE id IN ({marks})", chunk):
                out[pid] = Product.from_dict(json.loads(doc))
        return out

    def hashes(self) -> dict[str, tuple[str, str]]:
        """id -> (content hash, text hash) for every product."""
        return {pid: (c, t) for pid, c, t in self._conn.execute(
            "SELECT id, content_hash, text_hash FROM products")}

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredProduct]:
        """Every product in id order (the order both legs are built in)."""
        cursor = self._conn.execute(
            "SELECT doc, content_hash, text_hash, source, line FROM products ORDER BY id")
        while rows := cursor.fetchmany(batch):
            for doc, content_hash, text_hash, source, line in rows:
                yield StoredProduct(Product.from_dict(json.loads(doc)), content_hash, text_hash, source, line)

    def ids(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT id FROM products")}

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
