"""The index directory: versions, the manifest that names the current one, and the writer lock.

Layout of an index directory::

    manifest.json        the current version and what it holds (model, encoder backend, catalog hash, counts)
    versions/v000003/    one complete, immutable version: products.sqlite, lexical/, vectors/
    staging/             the run in progress: its embedding journal and the version being built
    .lock                held by the one indexing run allowed at a time

A run builds a whole new version under `staging/`, renames it into `versions/`, then replaces
`manifest.json` atomically (`os.replace`). Readers only ever follow the manifest, so they see the old
version or the new one, never a mix; a run killed at any point leaves the old version current and its
journal behind for the next run to resume from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shopfusion.backends import BackendRecord
from shopfusion.errors import IndexNotFoundError, IndexStateError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_VERSION_RE = re.compile(r"^v(\d{6})$")


@dataclass(frozen=True)
class Manifest:
    version: str
    model: str
    model_id: str
    dim: int
    lexical: dict[str, Any]
    vector: dict[str, Any]
    counts: dict[str, int]
    catalogs: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    format: int = FORMAT_VERSION
    backend: str = "torch"
    """The encoder backend that built the vectors (`torch`, `onnx`, `onnx-int8`; `hash` for tests)."""
    backend_id: str = "torch"
    """The backend with the checksum of its exported graph (`onnx-int8@<sha256[:12]>`)."""
    backend_agreement: dict[str, float] = field(default_factory=dict)
    """The backend's measured drift from torch fp32 on the probe texts (`shopfusion.backends`)."""

    @property
    def backend_record(self) -> BackendRecord:
        return BackendRecord(self.backend, self.backend_id, dict(self.backend_agreement))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_VERSION:
            raise IndexStateError(
                f"index format {data.get('format')} is not supported by this shopfusion (expects"
                f" {FORMAT_VERSION}): rebuild the index with `shopfusion index`"
            )
        return cls(**data)


class IndexDirectory:
    """Paths and atomic operations of one index directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def staging(self) -> Path:
        return self.path / "staging"

    @property
    def versions(self) -> Path:
        return self.path / "versions"

    def version_path(self, version: str) -> Path:
        return self.versions / version

    @property
    def namespace(self) -> str:
        """A stable name for remote resources (Elasticsearch indexes) that belong to this directory."""
        resolved = str(self.path.resolve())
        base = re.sub(r"[^a-z0-9]+", "-", self.path.resolve().name.lower()).strip("-") or "index"
        return f"{base[:40]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> Manifest:
        if not self.manifest_path.is_file():
            raise IndexNotFoundError(
                f"no index at {self.path}: build one with `shopfusion index CATALOG --index {self.path}`"
            )
        try:
            return Manifest.from_dict(json.loads(self.manifest_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise IndexStateError(f"{self.manifest_path} is corrupt ({exc}): rebuild the index") from exc

    def current(self) -> Manifest | None:
        return self.read_manifest() if self.exists() else None

    def next_version(self) -> str:
        numbers = [0]
        if self.versions.is_dir():
            numbers += [int(m.group(1)) for p in self.versions.iterdir() if (m := _VERSION_RE.match(p.name))]
        current = self.current()
        if current is not None:
            numbers.append(int(current.version[1:]))
        return f"v{max(numbers) + 1:06d}"

    def publish(self, built: Path, manifest: Manifest) -> None:
        """Move a finished version into place and switch the manifest to it atomically."""
        self.versions.mkdir(parents=True, exist_ok=True)
        target = self.version_path(manifest.version)
        if target.exists():
            shutil.rmtree(target)
        _fsync_tree(built)
        os.rename(built, target)
        _fsync_dir(self.versions)
        write_json_atomic(self.manifest_path, manifest.to_dict())

    def prune(self, keep: int) -> list[str]:
        """Delete versions other than the newest `keep` (the current one always stays)."""
        current = self.current()
        if not self.versions.is_dir():
            return []
        names = sorted((p.name for p in self.versions.iterdir() if _VERSION_RE.match(p.name)), reverse=True)
        keep_names = set(names[: max(keep, 1)])
        if current is not None:
            keep_names.add(current.version)
        removed = [name for name in names if name not in keep_names]
        for name in removed:
            shutil.rmtree(self.version_path(name), ignore_errors=True)
        return removed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the writer lock; a second concurrent indexing run fails fast with a clear error."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = (self.path / ".lock").open("a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise IndexStateError(
                    f"another indexing run is writing {self.path}: wait for it to finish (a crashed run"
                    " releases the lock when its process ends)"
                ) from exc
            yield
        finally:
            handle.close()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
