"""Writing a new vector index version in one streaming pass: what the ingest pipeline builds with.

`FaissVectorIndex` keeps every vector in memory and grows its arrays as products are upserted, which is
right for a searcher and for small edits but, at a million products, holds the 1.5 GB of vectors twice
while they are concatenated chunk after chunk. A new version is always written from scratch, in id
order, each product once, so `VectorIndexBuilder` streams instead:

- vectors are appended to `vectors.npy` (the header is written for the expected count and rewritten with
  the real one at the end), and their text hashes to `text_hashes.bin` (so the next run can reuse vectors
  by text without reading the product store);
- ids and the filter columns (`ProductColumns`: category, brand, price, attributes) are kept compact and
  written at `commit`;
- the approximate index (`hnsw`, `ivf`) is built at `commit` from the file, in chunks: IVF is trained on a
  seeded sample of rows read from disk, HNSW gets rows added chunk by chunk. Only the FAISS structure
  itself (which holds its own copy of the vectors) is in memory.

The files are exactly those `FaissVectorIndex` reads, so a built version loads like any other.

>>> import tempfile, numpy as np
>>> from shopfusion.types import Product
>>> builder = VectorIndexBuilder(tempfile.mkdtemp(), dim=4, kind="flat", expected=1)
>>> builder.add([Product("p1", "drill")], np.eye(1, 4, dtype=np.float32), ["a" * 32])
>>> builder.commit().count()
1
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.stores.ann_tuning import (
    QueryEncoder,
    SearchWidth,
    WidthTuning,
    pseudo_query,
    sample_rows,
    tune_width,
)
from indexer.stores.columns import ProductColumns
from indexer.stores.faiss_store import (
    IVF_TRAIN_SAMPLE,
    FaissVectorIndex,
    VectorKind,
    _atomic_write,
    faiss_module,
    ivf_lists,
)
from shopfusion.errors import IndexStateError
from shopfusion.types import Product

TEXT_HASHES = "text_hashes.bin"
ADD_CHUNK = 50_000
"""Rows handed to FAISS per `add` call when the approximate index is built (memory: 75 MB at 384 dims)."""


class VectorIndexBuilder:
    """A new vector index version, written in one pass; `commit()` finishes it and returns it loaded."""

    def __init__(self, path: str | os.PathLike[str], *, dim: int, kind: VectorKind, expected: int,
                 hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128, nprobe: int = 16,
                 tuning: WidthTuning | None = None, encode_queries: QueryEncoder | None = None) -> None:
        """`tuning`: measure the search width at `commit` (`indexer.stores.ann_tuning`) on pseudo-queries
        from the added products' titles, encoded by `encode_queries` (without it, on the vectors
        themselves, which is optimistic); without `tuning`, `ef_search` / `nprobe` are used as given."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.kind: VectorKind = kind
        self.expected = expected
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nprobe = nprobe
        self._ids: list[str] = []
        self._columns = ProductColumns()
        self._header = _npy_header(expected, dim)
        self._vectors = (self.path / "vectors.npy.tmp").open("wb")
        self._vectors.write(self._header)
        self._hashes = (self.path / TEXT_HASHES).open("wb")
        self.seconds: dict[str, float] = {}
        """Where `commit` spent its time: `write` (files), `ann` (training and adding to FAISS) and
        `tuning` (measuring the search width)."""
        self.tuning = tuning if kind in ("hnsw", "ivf") else None
        self.encode_queries = encode_queries
        self.width = SearchWidth(kind, ef_search if kind == "hnsw" else nprobe if kind == "ivf" else None)
        """The search width of the committed index: the tuned one after `commit` with `tuning`."""
        self._probe_rows = sample_rows(expected, self.tuning.sample, self.tuning.seed) if self.tuning else None
        self._probe_texts: list[str] = []

    def add(self, products: Sequence[Product], vectors: np.ndarray, text_hashes: Sequence[str]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(products), self.dim) or len(text_hashes) != len(products):
            raise IndexStateError(f"expected {len(products)} vectors of dimension {self.dim} and as many text"
                                  f" hashes, got shape {vectors.shape}: was the index built with another model?")
        if len(self._ids) + len(products) > self.expected:
            raise IndexStateError(f"more than the {self.expected} expected vectors were added")
        self._vectors.write(vectors.tobytes())
        self._hashes.write(np.array([h.encode("ascii") for h in text_hashes], dtype="S32").tobytes())
        if self._probe_rows is not None:
            start = len(self._ids)
            first, last = np.searchsorted(self._probe_rows, [start, start + len(products)])
            self._probe_texts.extend(pseudo_query(products[int(row) - start]) for row in self._probe_rows[first:last])
        self._ids.extend(product.id for product in products)
        self._columns.append(products)

    def count(self) -> int:
        return len(self._ids)

    def commit(self) -> FaissVectorIndex:
        import time

        started = time.perf_counter()
        count = len(self._ids)
        header = _npy_header(count, self.dim, length=len(self._header))
        self._vectors.seek(0)
        self._vectors.write(header)
        for handle in (self._vectors, self._hashes):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        os.replace(self.path / "vectors.npy.tmp", self.path / "vectors.npy")
        meta = {"kind": self.kind, "dim": self.dim, "count": count}
        self._columns.save(self.path, _atomic_write)
        _atomic_write(self.path / "ids.json", json.dumps(self._ids).encode())
        _atomic_write(self.path / "meta.json", json.dumps(meta).encode())
        self.seconds["write"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        if self.kind in ("hnsw", "ivf") and count:
            faiss = faiss_module()
            index = build_approximate(self.path / "vectors.npy", self.kind, hnsw_m=self.hnsw_m,
                                      ef_construction=self.ef_construction)
            tmp = self.path / f"{self.kind}.faiss.tmp"
            faiss.write_index(index, str(tmp))
            os.replace(tmp, self.path / f"{self.kind}.faiss")
            self.seconds["ann"] = round(time.perf_counter() - started, 3)
            if self.tuning is not None:
                started = time.perf_counter()
                queries = None
                if self.encode_queries is not None and self._probe_texts:
                    queries = np.asarray(self.encode_queries(self._probe_texts), dtype=np.float32)
                self.width = tune_width(index, self.kind, self.path / "vectors.npy", self.tuning, queries=queries)
                self.seconds["tuning"] = round(time.perf_counter() - started, 3)
            del index
        else:
            self.seconds["ann"] = round(time.perf_counter() - started, 3)
        width = self.width.value
        return FaissVectorIndex(self.path, ef_search=width if self.kind == "hnsw" and width else self.ef_search,
                                nprobe=width if self.kind == "ivf" and width else self.nprobe)

    def abort(self) -> None:
        for handle in (self._vectors, self._hashes):
            if not handle.closed:
                handle.close()


def build_approximate(vectors: Path, kind: VectorKind, *, hnsw_m: int = 32, ef_construction: int = 80,
                      nlist: int | None = None) -> Any:
    """The HNSW or IVF index over a `.npy` matrix, fed from disk in chunks (IVF, with `nlist` lists,
    default `ivf_lists(count)`, trained first on a seeded sample of at most `IVF_TRAIN_SAMPLE` rows)."""
    faiss = faiss_module()
    mapped = np.load(vectors, mmap_mode="r")  # only the header is read
    offset, (count, dim) = int(mapped.offset), mapped.shape
    del mapped
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    elif kind == "ivf":
        lists = nlist or ivf_lists(count)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        rows = np.arange(count) if count <= IVF_TRAIN_SAMPLE else np.sort(
            rng.choice(count, IVF_TRAIN_SAMPLE, replace=False))
        index.train(read_rows(vectors, offset, dim, rows))
    else:
        raise IndexStateError(f"no approximate index of kind {kind!r}")
    with vectors.open("rb") as handle:
        handle.seek(offset)
        for start in range(0, count, ADD_CHUNK):
            n = min(ADD_CHUNK, count - start)
            index.add(np.fromfile(handle, dtype=np.float32, count=n * dim).reshape(n, dim))
    return index


def read_rows(path: Path, offset: int, dim: int, rows: np.ndarray) -> np.ndarray:
    """Rows of a float32 matrix stored at `offset` in `path` (rows sorted ascending), read run by run."""
    out = np.empty((len(rows), dim), dtype=np.float32)
    width = 4 * dim
    fd = os.open(path, os.O_RDONLY)
    try:
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            data = os.pread(fd, (end - start) * width, offset + int(rows[start]) * width)
            out[start:end] = np.frombuffer(data, dtype=np.float32).reshape(-1, dim)
            start = end
    finally:
        os.close(fd)
    return out


def text_hash_rows(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The text hash of each row of a version's vectors (`S32`), or None for versions written before them."""
    file = Path(path) / TEXT_HASHES
    return np.fromfile(file, dtype="S32") if file.is_file() else None


def _npy_header(count: int, dim: int, length: int | None = None) -> bytes:
    """A `.npy` (format 1.0) header for a C-order float32 (count, dim) matrix, padded to `length` bytes."""
    body = repr({"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
    prefix = b"\x93NUMPY\x01\x00"
    size = length if length is not None else -(-(len(prefix) + 2 + len(body) + 1 + 16) // 64) * 64
    padded = body + " " * (size - len(prefix) - 2 - len(body) - 1) + "\n"
    if len(padded) + len(prefix) + 2 != size or size - len(prefix) - 2 > 0xFFFF:
        raise IndexStateError("vector file header does not fit")  # pragma: no cover - count only shrinks
    return prefix + len(padded).to_bytes(2, "little") + padded.encode("latin1")

