"""Vectors keyed by text hash in flat files: a run's embedding journal, and precomputed vectors.

Why flat files: at a million products the vectors are 1.5 GB (384 float32 each). Holding them in a
dictionary while an index is built costs that much memory again, for nothing: a vector is written once and
read once. A `VectorFile` appends them to disk and reads back only the rows asked for.

Layout of a vector file (a directory)::

    identity.json   what the vectors are valid for ("<model id>[ <backend id>]") and their dimension
    keys.bin        32-byte text hashes (`Product.text_hash()`), one per row, in append order
    vectors.bin     float32 rows of `dim`, in the same order

`append` writes the vectors, then the keys, each flushed and fsynced; a reader trusts the whole rows both
files hold (the shorter of the two), so a process killed mid-append loses at most that batch. Lookups sort
the keys once (32 bytes a row in memory: 32 MB per million) and answer rows; `read` fetches only those
rows from disk, grouped into runs of consecutive rows.

A key appended twice keeps its last vector. The journal of an indexing run (`EmbeddingJournal`) and a
precomputed vectors file (`shopfusion embed CATALOG --out DIR`, read by `shopfusion index --vectors DIR`)
are the same format; so can be any other producer's output, as long as the identity matches the encoder.

>>> import tempfile, numpy as np
>>> vf = VectorFile(tempfile.mkdtemp(), identity="hash:4", dim=4, create=True)
>>> vf.append(["a" * 32, "b" * 32], np.eye(2, 4, dtype=np.float32))
>>> vf.find(["b" * 32, "c" * 32]).tolist()
[1, -1]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopfusion.errors import ConfigError, IndexStateError

KEY_BYTES = 32
IDENTITY_FILE = "identity.json"
KEYS_FILE = "keys.bin"
VECTORS_FILE = "vectors.bin"


class VectorFile:
    """One vector file directory. `create=True` makes it (keeping what is there when the identity matches,
    clearing it otherwise); without it the directory must exist."""

    def __init__(self, path: str | os.PathLike[str], *, identity: str | None = None, dim: int | None = None,
                 create: bool = False) -> None:
        self.path = Path(path)
        marker = self.path / IDENTITY_FILE
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
            current = _read_identity(marker)
            if current is None or current.get("identity") != identity or (
                    dim is not None and current.get("dim") not in (None, dim)):
                self.clear()
                _write_identity(marker, {"identity": identity, "dim": dim})
        elif not marker.is_file():
            raise ConfigError(f"{self.path} is not a vector file (no {IDENTITY_FILE}): make one with"
                              " `shopfusion embed CATALOG --out DIR`")
        info = _read_identity(marker) or {}
        stored, dim_value = info.get("identity"), info.get("dim")
        self.identity: str | None = stored if isinstance(stored, str) else None
        self._dim: int | None = int(dim_value) if isinstance(dim_value, int) else None
        self._index: KeyIndex | None = None
        self._count = self._whole_rows()

    # -- metadata ------------------------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        return self._dim

    def count(self) -> int:
        """Rows written (a key appended twice counts twice)."""
        return self._count

    def check(self, identity: str, dim: int) -> None:
        """Refuse vectors made by another encoder: they would silently mix two vector spaces."""
        if self.identity != identity or (self._dim is not None and self._dim != dim):
            raise ConfigError(
                f"the vectors in {self.path} were made by {self.identity!r} (dim {self._dim}) but this index"
                f" uses {identity!r} (dim {dim}): make them again with the same model and backend"
            )

    def clear(self) -> None:
        for name in (KEYS_FILE, VECTORS_FILE, IDENTITY_FILE):
            (self.path / name).unlink(missing_ok=True)
        self._index = None
        self._count = 0

    # -- writing -------------------------------------------------------------------------------------
    def append(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise IndexStateError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        if self._dim is None:
            self._dim = int(vectors.shape[1])
            _write_identity(self.path / IDENTITY_FILE, {"identity": self.identity, "dim": self._dim})
        if vectors.shape[1] != self._dim:
            raise IndexStateError(f"vectors of dimension {vectors.shape[1]} for a file of dimension {self._dim}")
        if not len(keys):
            return
        packed = pack_keys(keys)
        self._truncate_torn_tail()
        for name, data in ((VECTORS_FILE, vectors.tobytes()), (KEYS_FILE, packed.tobytes())):
            with (self.path / name).open("ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        self._count += len(keys)
        self._index = None

    def _truncate_torn_tail(self) -> None:
        """Cut both files to the rows they both hold whole (what a killed append leaves is dropped)."""
        if self._dim is None:
            return
        for name, width in ((KEYS_FILE, KEY_BYTES), (VECTORS_FILE, 4 * self._dim)):
            path = self.path / name
            if path.is_file() and path.stat().st_size != self._count * width:
                with path.open("r+b") as handle:
                    handle.truncate(self._count * width)

    def _whole_rows(self) -> int:
        keys = self.path / KEYS_FILE
        vectors = self.path / VECTORS_FILE
        if not keys.is_file() or not vectors.is_file() or not self._dim:
            return 0
        return min(keys.stat().st_size // KEY_BYTES, vectors.stat().st_size // (4 * self._dim))

    # -- reading -------------------------------------------------------------------------------------
    def keys(self) -> np.ndarray:
        """Every key in row order (`S32`)."""
        if not self._count:
            return np.zeros(0, dtype=f"S{KEY_BYTES}")
        return np.fromfile(self.path / KEYS_FILE, dtype=f"S{KEY_BYTES}", count=self._count)

    def find(self, keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> np.ndarray:
        """The row of each key (the last one written for a repeated key), -1 where absent."""
        if self._index is None:
            self._index = KeyIndex(self.keys())
        return self._index.find(keys)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows` (all must be >= 0), in the order given; only those rows are read."""
        rows = np.asarray(rows, dtype=np.int64)
        dim = self._dim or 0
        out = np.empty((len(rows), dim), dtype=np.float32)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= self._count:
            raise IndexStateError(f"row out of range in {self.path} ({self._count} rows)")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        width = 4 * dim
        fd = os.open(self.path / VECTORS_FILE, os.O_RDONLY)
        try:
            start = 0
            while start < len(ordered):
                end = start + 1
                while end < len(ordered) and ordered[end] - ordered[end - 1] <= 1:
                    end += 1
                first, last = int(ordered[start]), int(ordered[end - 1])
                data = np.frombuffer(os.pread(fd, (last - first + 1) * width, first * width), dtype=np.float32)
                block = data.reshape(-1, dim)
                out[order[start:end]] = block[ordered[start:end] - first]
                start = end
        finally:
            os.close(fd)
        return out

    def iter_chunks(self, size: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) in row order, `size` rows at a time."""
        keys = self.keys()
        for start in range(0, self._count, size):
            rows = np.arange(start, min(start + size, self._count))
            yield keys[rows], self.read(rows)


class KeyIndex:
    """Sorted text hashes -> rows: `find` answers a batch of keys with one `searchsorted`."""

    def __init__(self, keys: np.ndarray) -> None:
        reversed_keys = keys[::-1]  # a repeated key: its last row sorts first and wins
        order = np.argsort(reversed_keys, kind="stable")
        self.keys = reversed_keys[order]
        self.rows = (len(keys) - 1 - order).astype(np.int64)

    def find(self, keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> np.ndarray:
        wanted = pack_keys(keys)
        if not len(self.keys) or not len(wanted):
            return np.full(len(wanted), -1, dtype=np.int64)
        position = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return np.where(self.keys[position] == wanted, self.rows[position], -1)


class VersionVectors:
    """The vectors of a published index version, found by text hash (for reuse by the next run).

    Versions record each row's text hash (`text_hashes.bin`); for older ones, or when that file is damaged
    (`trust_text_hashes` false), the map comes from the version's product store. Rows of the products in
    `exclude` (damaged records or vectors, `indexer.live`) are never found: those texts are embedded again."""

    def __init__(self, vectors_dir: Path, store: Any, *, exclude: set[str] | frozenset[str] = frozenset(),
                 trust_text_hashes: bool = True) -> None:
        from indexer.stores.faiss_builder import text_hash_rows

        self.path = vectors_dir / "vectors.npy"
        mapped = np.load(self.path, mmap_mode="r")  # only the header is read
        self.offset = int(mapped.offset)
        self.count, self.dim = int(mapped.shape[0]), int(mapped.shape[1])
        del mapped
        keys = text_hash_rows(vectors_dir) if trust_text_hashes else None
        ids: list[str] | None = None
        if keys is None or len(keys) != self.count:
            ids = json.loads((vectors_dir / "ids.json").read_text(encoding="utf-8"))
            hashes = store.hashes_of([pid for pid in ids if pid not in exclude])
            keys = pack_keys([hashes[pid][1] if pid in hashes else "-" * KEY_BYTES for pid in ids])
        elif exclude:
            ids = json.loads((vectors_dir / "ids.json").read_text(encoding="utf-8"))
            keys = keys.copy()
            keys[[i for i, pid in enumerate(ids) if pid in exclude]] = b"-" * KEY_BYTES
        self._index = KeyIndex(keys)

    def find(self, keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> np.ndarray:
        return self._index.find(keys)

    def read(self, rows: np.ndarray) -> np.ndarray:
        from indexer.stores.faiss_builder import read_rows

        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = read_rows(self.path, self.offset, self.dim, rows[order])
        return out


class VectorLookup:
    """Vectors by text hash from several sources, the first that has a key wins: for an indexing run,
    its own journal, then the current version (reuse), then a precomputed vector file."""

    def __init__(self, sources: Sequence[tuple[str, Any]], dim: int) -> None:
        self.sources = list(sources)
        self.dim = dim

    def locate(self, keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row) of each key; source -1 where no source has it."""
        wanted = pack_keys(keys)
        source = np.full(len(wanted), -1, dtype=np.int64)
        rows = np.full(len(wanted), -1, dtype=np.int64)
        for i, (_, src) in enumerate(self.sources):
            todo = np.flatnonzero(source < 0)
            if not len(todo):
                break
            found = src.find(wanted[todo])
            hit = found >= 0
            source[todo[hit]] = i
            rows[todo[hit]] = found[hit]
        return source, rows

    def fetch(self, keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> np.ndarray:
        """The vectors of `keys` (every one must be found)."""
        source, rows = self.locate(keys)
        if (source < 0).any():
            missing = pack_keys(keys)[source < 0][0].decode()
            raise IndexStateError(f"no vector for text {missing}: the run's journal is incomplete; run again")
        out = np.empty((len(source), self.dim), dtype=np.float32)
        for i, (_, src) in enumerate(self.sources):
            mine = np.flatnonzero(source == i)
            if len(mine):
                out[mine] = src.read(rows[mine])
        return out


class EmbeddingJournal:
    """The vectors the current indexing run has computed, keyed by text hash (a `VectorFile`).

    A killed run leaves its journal in `staging/`; the next run with the same model (and backend) reads it
    back and embeds only what is missing. A journal of another encoder is cleared."""

    def __init__(self, path: str | os.PathLike[str], model_id: str, dim: int | None = None) -> None:
        self.file = VectorFile(path, identity=model_id, dim=dim, create=True)

    def append(self, batch_id: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Journal one finished executor batch (`batch_id` names it in errors only)."""
        try:
            self.file.append(keys, vectors)
        except IndexStateError as exc:
            raise IndexStateError(f"embedding batch {batch_id}: {exc}") from exc

    def count(self) -> int:
        return self.file.count()


def pack_keys(keys: Sequence[str] | Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Text hashes as a `S32` array (what every lookup compares)."""
    if isinstance(keys, np.ndarray) and keys.dtype == np.dtype(f"S{KEY_BYTES}"):
        return keys
    packed = np.array([k.encode("ascii") if isinstance(k, str) else k for k in keys], dtype=f"S{KEY_BYTES}")
    if len(packed) and any(len(k) != KEY_BYTES for k in keys):
        raise IndexStateError(f"text hashes are {KEY_BYTES} hex characters (Product.text_hash())")
    return packed


def _read_identity(marker: Path) -> dict[str, object] | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _write_identity(marker: Path, data: dict[str, object]) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, marker)  # a process killed here leaves no half-written marker
