"""Integrity of index versions: what is damaged, down to the file and the product.

Three records make damage visible, all written when a version is built (`seal`):

- the manifest's `files`: SHA-256 and size of every file of the version, so a flipped byte, a truncated
  file or a swapped file is named by path;
- `vectors/digests.npy`: one 64-bit BLAKE2b digest per vector row over the row's product id and its
  bytes, so a damaged row is found exactly (and a row under the wrong id, as a shuffled `ids.json` gives,
  fails too), and only damaged rows need embedding again;
- the product store's content and text hashes per row (`ProductStore.scan`), so a damaged product
  record is found exactly.

`VersionCheck` reads them back. Every index run uses it on the live version, so a damaged product or
vector is never counted "unchanged" nor carried into the next version; `verify` reports it; `verify
--repair` (`indexer.repair`) rebuilds what is damaged. Versions built before these records existed are
checked by what can still be checked (vectors must be finite and unit-length; the maps must agree).

Both legs are built in product-id order, so the order of the product store is also the order of
`vectors/ids.json` and of the lexical ordinals; a map that departs from it is damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.docstore import ProductStore
from indexer.manifest import VERSION_FILE, Manifest
from indexer.stores.faiss_store import FaissVectorIndex
from shopfusion.artifacts import file_sha256
from shopfusion.errors import IndexStateError

DIGESTS = "vectors/digests.npy"
STORE = "products.sqlite"
VECTOR_FILES = ("vectors/ids.json", "vectors/meta.json", "vectors/vectors.npy")
NORM_TOLERANCE = 1e-3
"""A stored vector whose length is further than this from 1 is damaged (all are L2-normalised)."""


def _recorded(relative: str) -> bool:
    """Files that belong to a version's content (not locks, SQLite side files or the version's manifest)."""
    name = relative.rsplit("/", 1)[-1]
    return not (relative == VERSION_FILE or name.endswith((".lock", "-wal", "-shm", ".tmp")))


def file_checksums(version_dir: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> {"sha256", "size"} for every recorded file under `version_dir`."""
    out: dict[str, dict[str, Any]] = {}
    for root, _, names in os.walk(version_dir):
        for name in names:
            path = Path(root) / name
            relative = path.relative_to(version_dir).as_posix()
            if _recorded(relative):
                out[relative] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return dict(sorted(out.items()))


def check_files(version_dir: Path, recorded: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, str]:
    """Relative path -> what is wrong with it, for the recorded files under `prefix` (and extra files there)."""
    problems: dict[str, str] = {}
    for relative, expected in recorded.items():
        if not relative.startswith(prefix):
            continue
        path = version_dir / relative
        if not path.is_file():
            problems[relative] = "missing"
            continue
        size = path.stat().st_size
        if size != expected.get("size"):
            problems[relative] = f"{size:,} bytes, {expected.get('size'):,} recorded (truncated or replaced)"
        elif file_sha256(path) != expected.get("sha256"):
            problems[relative] = "checksum mismatch (damaged)"
    base = version_dir / prefix if prefix else version_dir
    if base.is_dir():
        for root, _, names in os.walk(base):
            for name in names:
                relative = (Path(root) / name).relative_to(version_dir).as_posix()
                if _recorded(relative) and relative not in recorded:
                    problems[relative] = "not part of the version (added later)"
    return problems


def row_digest(product_id: str, row: np.ndarray) -> int:
    data = product_id.encode("utf-8", "surrogatepass") + b"\0" + np.ascontiguousarray(row, np.float32).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def row_digests(ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    return np.fromiter((row_digest(pid, vectors[i]) for i, pid in enumerate(ids)), dtype=np.uint64,
                       count=len(ids))


def seal(version_dir: Path, chunk: int = 50_000) -> dict[str, dict[str, Any]]:
    """Write the vector row digests of a freshly built version and return its file checksums. The vectors
    are read `chunk` rows at a time (a million of them are 1.5 GB), never loaded whole."""
    ids = json.loads((version_dir / "vectors" / "ids.json").read_text(encoding="utf-8"))
    path = version_dir / "vectors" / "vectors.npy"
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # only the header is read
    offset, dim = int(mapped.offset), int(mapped.shape[1])
    del mapped
    digests = np.empty(len(ids), dtype=np.uint64)
    with path.open("rb") as source:
        source.seek(offset)
        for start in range(0, len(ids), chunk):
            n = min(chunk, len(ids) - start)
            rows = np.fromfile(source, dtype=np.float32, count=n * dim).reshape(n, dim)
            digests[start:start + n] = row_digests(ids[start:start + n], rows)
    target = version_dir / DIGESTS
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as handle:
        np.save(handle, digests)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return file_checksums(version_dir)


@dataclass
class StoreState:
    """The product store of a version: unreadable (`readable` False), or readable with damaged rows."""

    readable: bool
    damaged: set[str] = field(default_factory=set)
    ids: list[str] = field(default_factory=list)
    """Every id in the store, in store order (damaged rows included)."""
    problem: str = ""


@dataclass
class VectorState:
    """The vector files of a version: which rows can be trusted, by product id."""

    readable: bool
    trusted: dict[str, np.ndarray] = field(default_factory=dict)
    damaged: set[str] = field(default_factory=set)
    """Ids (from `ids.json` or the store's order) whose row failed its check."""
    ids: list[str] = field(default_factory=list)
    """`ids.json` as read."""
    dim: int = 0
    problem: str = ""


class VersionCheck:
    """What is intact in one version, computed on demand (the cheap file checks first)."""

    def __init__(self, version_dir: Path, manifest: Manifest) -> None:
        self.version_dir = version_dir
        self.manifest = manifest
        self.legacy = not manifest.files
        self._files: dict[str, dict[str, str]] = {}
        self._store: StoreState | None = None
        self._vectors: VectorState | None = None

    def file_problems(self, prefix: str = "") -> dict[str, str]:
        if self.legacy:
            return {}
        if prefix not in self._files:
            self._files[prefix] = check_files(self.version_dir, self.manifest.files, prefix)
        return self._files[prefix]

    def store(self) -> StoreState:
        if self._store is None:
            self._store = self._check_store()
        return self._store

    def _check_store(self) -> StoreState:
        path = self.version_dir / STORE
        if not path.is_file():
            return StoreState(False, problem=f"{STORE} is missing")
        intact = not self.legacy and STORE not in self.file_problems(STORE)
        try:
            store = ProductStore(path)
        except IndexStateError as exc:
            return StoreState(False, problem=str(exc))
        try:
            state = StoreState(True)
            for pid, stored in store.scan(check=not intact):
                state.ids.append(pid)
                if stored is None:
                    state.damaged.add(pid)
            return state
        except IndexStateError as exc:
            return StoreState(False, problem=str(exc))
        finally:
            store.close()

    def vectors(self, store_order: Sequence[str] | None = None) -> VectorState:
        """Rows that pass their digest (or, for a version without digests, the sanity checks).
        `store_order` (the product store's ids) lets rows under a shuffled `ids.json` be recognised."""
        if self._vectors is None:
            self._vectors = self._check_vectors(store_order)
        return self._vectors

    def _check_vectors(self, store_order: Sequence[str] | None) -> VectorState:
        try:
            index = FaissVectorIndex(self.version_dir / "vectors")
        except IndexStateError as exc:
            return VectorState(False, problem=str(exc))
        ids = index.ordered_ids()
        matrix = index.matrix()
        state = VectorState(True, ids=ids, dim=index.dim)
        files = self.file_problems("vectors/")
        if not self.legacy and not any(f in files for f in VECTOR_FILES):
            state.trusted = {pid: matrix[i] for i, pid in enumerate(ids)}
            return state
        digests = None if self.legacy or DIGESTS in files else _load_digests(self.version_dir / DIGESTS, len(ids))
        canonical = list(store_order) if store_order is not None and len(store_order) == len(ids) else None
        if digests is None and canonical is not None and canonical != ids:
            state.damaged = set(ids) | set(canonical)  # a map out of build order, nothing to tell rows by
            return state
        norms = np.linalg.norm(matrix, axis=1) if len(ids) else np.zeros(0)
        for i, pid in enumerate(ids):
            row = matrix[i]
            if digests is not None:
                if row_digest(pid, row) == int(digests[i]):
                    state.trusted[pid] = row
                elif canonical is not None and canonical[i] != pid and row_digest(canonical[i], row) == int(digests[i]):
                    state.trusted[canonical[i]] = row
                else:
                    state.damaged.add(canonical[i] if canonical is not None else pid)
            elif self.legacy and np.isfinite(norms[i]) and abs(norms[i] - 1.0) <= NORM_TOLERANCE:
                state.trusted[pid] = row
            else:
                state.damaged.add(pid)
        return state


def quick_check(version_dir: Path, manifest: Manifest, vector_ids: Sequence[str]) -> list[str]:
    """Cheap checks for opening a version to search (no hashing): every recorded file is there with its
    recorded size, and the vector id map is in build (id) order. Catches truncated, missing and swapped
    files and a shuffled id map; `verify` does the full check."""
    problems = []
    for relative, expected in manifest.files.items():
        path = version_dir / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif path.stat().st_size != expected.get("size"):
            problems.append(f"{relative} has {path.stat().st_size:,} bytes, {expected.get('size'):,} recorded")
    if manifest.files and any(a >= b for a, b in zip(vector_ids, vector_ids[1:], strict=False)):
        problems.append("vectors/ids.json is out of order (the id map is damaged)")
    return problems


def _load_digests(path: Path, rows: int) -> np.ndarray | None:
    try:
        digests = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if digests.dtype != np.uint64 or digests.shape != (rows,):
        return None
    return digests
