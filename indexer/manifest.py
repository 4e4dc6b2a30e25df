"""The index directory: versions, the manifest that names the current one, and the writer lock.

Layout of an index directory::

    manifest.json        the current version and what it holds (model, encoder backend, catalog hash,
                         counts, checksums)
    versions/v000003/    one complete, immutable version: products.sqlite, lexical/, vectors/, and
                         version.json (its own manifest, what `rollback` switches back to)
    staging/             the run in progress: its embedding journal and the version being built
    .lock                held by the one writer (index, rollback, repair) allowed at a time

A run builds a whole new version under `staging/`, renames it into `versions/`, then replaces
`manifest.json` atomically (`os.replace`). Readers only ever follow the manifest, so they see the old
version or the new one, never a mix; a run killed at any point leaves the old version current and its
journal behind for the next run to resume from.

Version names are `v` and six digits, checked wherever one is read (a manifest naming `../../..` is
refused, never followed). The manifest records the SHA-256 and size of every file of its version
(`files`; see `indexer.integrity`), so `verify` can name a damaged file.
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
VERSION_FILE = "version.json"
"""Each version directory's copy of its manifest (not itself checksummed)."""


def check_version_name(version: object) -> str:
    """A version name (`v000003`), or `IndexStateError`: never a path that could leave the index."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise IndexStateError(f"{str(version)[:60]!r} is not a version name (expected v + 6 digits, e.g. v000003):"
                              " the manifest is damaged or the name is mistyped; see `shopfusion versions`")
    return version


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
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Relative path -> {"sha256", "size"} of every file of the version (empty: built before checksums)."""
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
    def from_dict(cls, data: Any) -> Manifest:
        """A manifest from parsed JSON, every field checked; `IndexStateError` names what is wrong."""
        if not isinstance(data, dict):
            raise IndexStateError(f"the manifest is not a JSON object (got {type(data).__name__})")
        if data.get("format") != FORMAT_VERSION:
            raise IndexStateError(
                f"index format {data.get('format')} is not supported by this shopfusion (expects"
                f" {FORMAT_VERSION}): rebuild the index with `shopfusion index`"
            )
        check_version_name(data.get("version"))
        kinds: dict[str, type | tuple[type, ...]] = {
            "model": str, "model_id": str, "dim": int, "lexical": dict, "vector": dict, "counts": dict,
            "catalogs": list, "created": (int, float), "files": dict, "backend": str, "backend_id": str,
            "backend_agreement": dict}
        for name, kind in kinds.items():
            if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
                raise IndexStateError(f"the manifest's `{name}` has the wrong type ({type(data[name]).__name__})")
        if not isinstance(data.get("lexical", {}).get("engine"), str):
            raise IndexStateError("the manifest names no lexical engine")
        try:
            return cls(**data)
        except TypeError as exc:  # a missing or an unknown field
            raise IndexStateError(f"the manifest's fields are wrong ({exc})") from None


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
        """The directory of a version; the name is checked, so the path never leaves `versions/`."""
        return self.versions / check_version_name(version)

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
            return read_manifest_file(self.manifest_path)
        except IndexStateError as exc:
            raise IndexStateError(
                f"{exc}: switch to a kept version with `shopfusion rollback --index {self.path}`, or run"
                f" `shopfusion verify --index {self.path} --repair`"
            ) from None

    def current(self) -> Manifest | None:
        return self.read_manifest() if self.exists() else None

    def next_version(self) -> str:
        numbers = [0]
        if self.versions.is_dir():
            numbers += [int(m.group(1)) for p in self.versions.iterdir() if (m := _VERSION_RE.match(p.name))]
        try:
            current = self.current()
        except IndexStateError:  # a damaged manifest: the version directories still tell the numbers
            current = None
        if current is not None:
            numbers.append(int(current.version[1:]))
        return f"v{max(numbers) + 1:06d}"

    def publish(self, built: Path, manifest: Manifest) -> None:
        """Move a finished version into place and switch the manifest to it atomically."""
        self.versions.mkdir(parents=True, exist_ok=True)
        target = self.version_path(manifest.version)
        if target.exists():
            shutil.rmtree(target)
        write_json_atomic(built / VERSION_FILE, manifest.to_dict())
        _fsync_tree(built)
        os.rename(built, target)
        _fsync_dir(self.versions)
        write_json_atomic(self.manifest_path, manifest.to_dict())

    def switch(self, manifest: Manifest) -> None:
        """Make an existing version current (atomic manifest replace); see `indexer.versions.rollback`."""
        if not self.version_path(manifest.version).is_dir():
            raise IndexStateError(f"version {manifest.version} is not in {self.versions}")
        write_json_atomic(self.manifest_path, manifest.to_dict())

    def version_names(self) -> list[str]:
        """Names of the version directories, oldest first."""
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir() if _VERSION_RE.match(p.name) and p.is_dir())

    def version_manifest(self, version: str) -> Manifest:
        """A version's own manifest (`version.json`); `IndexStateError` when absent or unreadable."""
        path = self.version_path(version) / VERSION_FILE
        if not path.is_file():
            raise IndexStateError(f"version {version} has no {VERSION_FILE} (built by an older shopfusion):"
                                  " it cannot be switched to")
        manifest = read_manifest_file(path)
        if manifest.version != version:
            raise IndexStateError(f"{path} names version {manifest.version}, not {version}")
        return manifest

    def prune(self, keep: int) -> list[str]:
        """Delete versions other than the newest `keep` (the current one always stays)."""
        current = self.current()
        keep = max(keep, 1)
        if not self.versions.is_dir():
            return []
        names = sorted((p.name for p in self.versions.iterdir() if _VERSION_RE.match(p.name)), reverse=True)
        keep_names = set(names[:keep])
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
                    f"another indexing run (or rollback, or repair) is writing {self.path}: wait for it to"
                    " finish (a crashed run releases the lock when its process ends)"
                ) from exc
            yield
        finally:
            handle.close()


def read_manifest_file(path: Path) -> Manifest:
    """Parse and check one manifest file; `IndexStateError` (never a traceback) when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IndexStateError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    try:
        return Manifest.from_dict(data)
    except IndexStateError as exc:
        raise IndexStateError(f"{path} is damaged ({exc})") from None


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


