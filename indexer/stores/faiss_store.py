"""The dense leg: FAISS inner-product search over L2-normalised vectors, with the same filters as BM25.

Kinds: `flat` (exact, the default), `hnsw` (approximate graph, for large catalogs; `auto` switches at
`hnsw_threshold`) and `ivf` (inverted lists trained on a sample of the vectors, `nprobe` lists searched;
the cheapest to build for very large catalogs). When FAISS has GPU support and a GPU is visible, the flat index is mirrored on the GPU
for unfiltered searches; filtered searches run on the CPU copy (FAISS GPU indexes take no id selector),
so results are the same either way.

Filters (category prefix, brand, price, any attribute) are a boolean mask over the rows, computed from
`ProductColumns` kept beside the vectors with the semantics of `Filters.matches`, and applied before the
top k is taken: a filtered search returns `min(k, products that pass)` hits whatever the index kind.
Few survivors (or a flat index) are scored exactly; many survivors in HNSW/IVF go through FAISS's id
selector, and a selector search that comes back short (a graph or list cut off by the filter) is redone
exactly.

Files in the store directory: `vectors.npy`, `ids.json`, `meta.json`, `columns.json` / `columns.npz`, and
`hnsw.faiss` / `ivf.faiss` for the approximate kinds.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexer.stores.columns import ProductColumns
from shopfusion.errors import IndexStateError, QueryError
from shopfusion.types import Filters, LegHit, Product

VectorKind = Literal["flat", "hnsw", "ivf"]
IVF_TRAIN_SAMPLE = 100_000
EXACT_BELOW = 4096
"""A filtered search whose survivors are fewer than this is scored exactly, whatever the index kind."""
GATHER_BELOW = 0.25
"""Exact filtered search gathers the surviving vectors when fewer than this fraction survive; above it,
scoring every vector and masking the rest is cheaper than the copy."""


def ivf_lists(count: int) -> int:
    """Inverted lists of an IVF index over `count` vectors: 4 sqrt(n), with at least 39 vectors a list."""
    return max(1, min(int(4 * np.sqrt(max(count, 1))), count // 39 or 1))


def faiss_module() -> Any:
    import faiss

    return faiss


@contextlib.contextmanager
def omp_threads(threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads for what runs inside, on the calling thread only (OpenMP keeps the count per
    thread), then back to what it was; None or 0 leaves FAISS's own (one per core)."""
    if not threads:
        yield
        return
    faiss = faiss_module()
    before = int(faiss.omp_get_max_threads())
    if before == threads:
        yield
        return
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def gpu_count() -> int:
    faiss = faiss_module()
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


class FaissVectorIndex:
    """Vectors of one index version. `create=True` starts empty; otherwise the files in `path` load."""

    def __init__(self, path: str | os.PathLike[str], *, dim: int | None = None, kind: VectorKind = "flat",
                 hnsw_m: int = 32, ef_search: int = 128, nprobe: int = 16, use_gpu: bool | None = None,
                 create: bool = False, query_threads: int | None = None) -> None:
        self.path = Path(path)
        self.query_threads = query_threads
        """OpenMP threads of one query's FAISS search (`omp_threads`); None: FAISS's default."""
        self.kind: VectorKind = kind
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.use_gpu = use_gpu
        self._index: Any = None
        self._gpu_index: Any = None
        self._masks: OrderedDict[Filters, np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()  # `shopfusion serve` searches from several threads
        self._stored_index_valid = not create
        if create:
            if dim is None:
                raise IndexStateError("a new vector index needs the embedding dimension")
            self._dim = dim
            self._vectors = np.zeros((0, dim), dtype=np.float32)
            self._ids: list[str] = []
            self._columns: ProductColumns | None = ProductColumns()
        else:
            self._columns = None  # loaded on first filtered search (vector reuse never needs them)
            self._load()
        self._rows = {pid: i for i, pid in enumerate(self._ids)}

    def _load(self) -> None:
        """Read the files; any damage (missing, truncated, unparseable, inconsistent) is an
        `IndexStateError` that names the file and the repair, never a numpy or JSON traceback."""
        fix = "run `shopfusion verify --repair` (or re-index with --replace)"
        try:
            meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
            self._ids = json.loads((self.path / "ids.json").read_text(encoding="utf-8"))
            # Mapped, not read: with an approximate index only the rows an exact (filtered) search or a
            # re-rank touches are paged in; copy-on-write keeps `upsert` working on a loaded index.
            self._vectors = np.load(self.path / "vectors.npy", mmap_mode="c", allow_pickle=False)
            self.kind = meta["kind"]
            self._dim = int(meta["dim"])
        except FileNotFoundError as exc:
            raise IndexStateError(f"vector index at {self.path} is incomplete ({exc.filename} missing): {fix}") from None
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise IndexStateError(f"vector index at {self.path} is damaged ({type(exc).__name__}: {exc}): {fix}") from None
        rows = len(self._ids)
        if (not isinstance(self._ids, list) or not all(isinstance(i, str) for i in self._ids)
                or self._vectors.ndim != 2 or self._vectors.shape[0] != rows or self._vectors.shape[1] != self._dim
                or self._vectors.dtype != np.float32
                or len(set(self._ids)) != rows or self.kind not in ("flat", "hnsw", "ivf")):
            raise IndexStateError(f"vector index at {self.path} is damaged ({rows} ids, vectors of shape"
                                  f" {self._vectors.shape}): {fix}")
        # the filter columns (columns.json / columns.npz) load, and are checked, on first filtered search

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def columns(self) -> ProductColumns:
        """The filter and sort columns, one row per vector."""
        if self._columns is None:
            with self._masks_lock:  # several server threads may ask first at once: load once
                if self._columns is None:
                    self._columns = ProductColumns.load(self.path, len(self._ids))
        return self._columns

    # -- writing -----------------------------------------------------------------------------------
    def upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._dim or len(products) != vectors.shape[0]:
            raise IndexStateError(f"expected {len(products)} vectors of dimension {self._dim},"
                                  f" got shape {vectors.shape}: was the index built with another model?")
        columns = self.columns
        new_rows: list[int] = []
        replaced: list[int] = []
        for i, product in enumerate(products):
            row = self._rows.get(product.id)
            if row is None:
                new_rows.append(i)
            else:
                self._vectors[row] = vectors[i]
                replaced.append(i)
        columns.replace([self._rows[products[i].id] for i in replaced], [products[i] for i in replaced])
        if new_rows:
            start = len(self._ids)
            self._vectors = np.concatenate([self._vectors, vectors[new_rows]])
            added = [products[i] for i in new_rows]
            self._ids.extend(p.id for p in added)
            columns.append(added)
            self._rows.update({pid: start + j for j, pid in enumerate(p.id for p in added)})
        self._invalidate()

    def delete(self, ids: Iterable[str]) -> None:
        rows = sorted({self._rows[pid] for pid in ids if pid in self._rows})
        if not rows:
            return
        keep = np.ones(len(self._ids), dtype=bool)
        keep[rows] = False
        self.columns.keep(keep)
        self._vectors = self._vectors[keep]
        self._ids = [pid for pid, k in zip(self._ids, keep, strict=True) if k]
        self._rows = {pid: i for i, pid in enumerate(self._ids)}
        self._invalidate()

    def _invalidate(self) -> None:
        self._stored_index_valid = False
        self._index = None
        self._gpu_index = None
        self._masks.clear()

    def commit(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "dim": self._dim, "count": len(self._ids)}
        self.columns.save(self.path, _atomic_write)
        _atomic_write(self.path / "ids.json", json.dumps(self._ids).encode())
        _atomic_write(self.path / "meta.json", json.dumps(meta).encode())
        tmp = self.path / "vectors.npy.tmp"
        with tmp.open("wb") as handle:
            np.save(handle, self._vectors)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / "vectors.npy")
        if self.kind in ("hnsw", "ivf"):
            faiss = faiss_module()
            tmp_index = self.path / f"{self.kind}.faiss.tmp"
            faiss.write_index(self.index, str(tmp_index))
            os.replace(tmp_index, self.path / f"{self.kind}.faiss")

    # -- the FAISS index -----------------------------------------------------------------------------
    @property
    def index(self) -> Any:
        if self._index is None:
            self._index = self._build()
        return self._index

    def _build(self) -> Any:
        faiss = faiss_module()
        stored = self.path / f"{self.kind}.faiss"
        if self.kind != "flat" and stored.is_file() and self._stored_index_valid:
            index = faiss.read_index(str(stored))
            if index.ntotal == len(self._ids):
                return self._tune(index)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self._dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
        elif self.kind == "ivf":
            nlist = ivf_lists(len(self._ids))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self._dim), self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = self._vectors if len(self._ids) <= IVF_TRAIN_SAMPLE else self._vectors[
                np.sort(rng.choice(len(self._ids), IVF_TRAIN_SAMPLE, replace=False))]
            if len(sample):
                index.train(sample)
        else:
            index = faiss.IndexFlatIP(self._dim)
        if len(self._ids):
            index.add(self._vectors)
        return self._tune(index)

    def _tune(self, index: Any) -> Any:
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.ef_search
        elif self.kind == "ivf":
            index.nprobe = self.nprobe
        return index

    def _search_index(self) -> Any:
        """The index unfiltered searches use: a GPU copy of the flat index when a GPU is there."""
        use_gpu = self.use_gpu if self.use_gpu is not None else gpu_count() > 0
        if not use_gpu or self.kind != "flat":
            return self.index
        if self._gpu_index is None:
            faiss = faiss_module()
            self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_index

    # -- reading -------------------------------------------------------------------------------------
    def mask(self, filters: Filters) -> np.ndarray:
        """Boolean mask of the rows that pass `filters` (cached for repeated filters)."""
        with self._masks_lock:
            cached = self._masks.get(filters)
            if cached is not None:
                self._masks.move_to_end(filters)
                return cached
        mask = self.columns.mask(filters)
        with self._masks_lock:
            self._masks[filters] = mask
            if len(self._masks) > 64:
                self._masks.popitem(last=False)
        return mask

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[LegHit]:
        query = self._query(vector)
        if k <= 0 or not self._ids:
            return []
        if filters is None or filters.empty:
            with omp_threads(self.query_threads):
                scores, rows = self._search_index().search(query, min(k, len(self._ids)))
            return self._hits(scores[0], rows[0])
        mask = self.mask(filters)
        survivors = np.flatnonzero(mask)
        if survivors.size == 0:
            return []
        if self.kind == "flat" or survivors.size < EXACT_BELOW:
            return self._exact(query[0], mask, survivors, k)
        faiss = faiss_module()
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, k))
        else:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        with omp_threads(self.query_threads):
            scores, rows = self.index.search(query, min(k, int(survivors.size)), params=params)
        hits = self._hits(scores[0], rows[0])
        if len(hits) < min(k, int(survivors.size)):  # the filter cut the graph or the probed lists short
            return self._exact(query[0], mask, survivors, k)
        return hits

    def _exact(self, query: np.ndarray, mask: np.ndarray, rows: np.ndarray, k: int) -> list[LegHit]:
        """Exact top k among `rows` (= the rows where `mask` is true), ties by row."""
        if rows.size < GATHER_BELOW * mask.size:
            scores = self._vectors[rows] @ query
        else:
            scores = (self._vectors @ query)[rows]
        top = np.argpartition(-scores, k - 1)[:k] if k < rows.size else np.arange(rows.size)
        order = top[np.lexsort((rows[top], -scores[top]))]
        return self._hits(scores[order], rows[order])

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[LegHit]:
        hits: list[LegHit] = []
        for score, row in zip(scores, rows, strict=True):
            if row < 0:
                continue
            hits.append(LegHit(self._ids[int(row)], float(score), len(hits) + 1))
        return hits

    def _query(self, vector: np.ndarray) -> np.ndarray:
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != self._dim:
            raise QueryError(f"query vector has dimension {query.shape[1]}, the index {self._dim}:"
                             " search with the model the index was built with")
        return query

    def score(self, vector: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        query = self._query(vector)[0]
        known = [pid for pid in dict.fromkeys(ids) if pid in self._rows]
        if not known:
            return {}
        rows = np.array([self._rows[pid] for pid in known])
        return {pid: float(s) for pid, s in zip(known, self._vectors[rows] @ query, strict=True)}

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {pid: self._vectors[self._rows[pid]] for pid in ids if pid in self._rows}

    def sort_values(self, ids: Sequence[str], field: str, numeric: bool) -> list[Any]:
        """Each product's value of `field` for sorting (see `ProductColumns.sort_values`); None for ids
        the index lacks."""
        rows = np.array([self._rows.get(pid, -1) for pid in ids], dtype=np.int64)
        known = rows >= 0
        values: list[Any] = [None] * len(ids)
        found = self.columns.sort_values(rows[known], field, numeric)
        for position, value in zip(np.flatnonzero(known), found, strict=True):
            values[int(position)] = value
        return values

    def ids(self) -> set[str]:
        return set(self._ids)

    def ordered_ids(self) -> list[str]:
        return list(self._ids)

    def matrix(self) -> np.ndarray:
        """All vectors, row i for `ordered_ids()[i]` (read-only use: integrity checks)."""
        return self._vectors

    def count(self) -> int:
        return len(self._ids)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
