"""Index versions: list what is kept, and switch back to one (`shopfusion versions` / `rollback`).

Every run publishes a new version and keeps the newest `index.keep_versions` (the live one always stays).
`rollback` makes a kept version live again with the same atomic manifest switch a run uses, after
checking the target's files against its checksums (a damaged version is refused) and, for the
Elasticsearch leg, moving the alias to the target's index first, so both legs switch together. The
writer lock is held, so a rollback never races an indexing run.

>>> versions = list_versions("var/demo-index")     # doctest: +SKIP
>>> rollback("var/demo-index").version             # doctest: +SKIP
'v000002'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.integrity import VersionCheck
from indexer.manifest import IndexDirectory, Manifest, check_version_name
from indexer.stores import open_lexical
from indexer.stores.ann_tuning import recorded_width
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, ShopfusionError


@dataclass(frozen=True)
class VersionInfo:
    version: str
    live: bool
    products: int | None
    created: float | None
    model: str | None
    lexical: str | None
    problem: str | None = None
    """Why the version cannot be switched to (no or unreadable version.json), else None."""
    vector: str | None = None
    """The vector index kind and the search width its build recorded (`SearchWidth.describe`)."""

    def to_dict(self) -> dict[str, Any]:
        created = None if self.created is None else dt.datetime.fromtimestamp(self.created, dt.UTC).isoformat(
            timespec="seconds")
        return {"version": self.version, "live": self.live, "products": self.products, "created": created,
                "model": self.model, "lexical": self.lexical, "problem": self.problem, "vector": self.vector}


def list_versions(index_dir: str | Path) -> list[VersionInfo]:
    """Every version on disk, newest first, with its product count, date, model and lexical engine."""
    directory = IndexDirectory(index_dir)
    try:
        live = directory.read_manifest().version
    except IndexStateError:
        live = None  # a damaged manifest: still list what is there
    out = []
    for name in reversed(directory.version_names()):
        try:
            m = directory.version_manifest(name)
        except IndexStateError as exc:
            out.append(VersionInfo(name, name == live, None, None, None, None, str(exc)))
            continue
        out.append(VersionInfo(name, name == live, int(m.counts.get("products", 0)), m.created, m.model,
                               m.lexical.get("engine"), vector=recorded_width(m.vector).describe()))
    if not out and not directory.exists():
        directory.read_manifest()  # raises IndexNotFoundError with the command to build one
    return out


def rollback(index_dir: str | Path, settings: Settings | None = None, *, to: str | None = None) -> Manifest:
    """Make version `to` (default: the newest kept version older than the live one) live again."""
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    if to is not None:
        check_version_name(to)
    with directory.lock():
        try:
            live: str | None = directory.read_manifest().version
        except IndexStateError:
            live = None
        target = to or _previous(directory, live)
        if target == live:
            raise IndexStateError(f"{target} is already the live version of {directory.path}")
        if target not in directory.version_names():
            raise IndexStateError(f"version {target} is not kept in {directory.path}: see `shopfusion versions"
                                  f" --index {directory.path}` (index.keep_versions sets how many are kept)")
        manifest = directory.version_manifest(target)
        damaged = VersionCheck(directory.version_path(target), manifest).file_problems()
        if damaged:
            first = next(iter(damaged.items()))
            raise IndexStateError(f"version {target} is damaged ({first[0]}: {first[1]}"
                                  f"{f' and {len(damaged) - 1} more' if len(damaged) > 1 else ''}): pick another"
                                  " with --to, or re-index")
        _activate_lexical(settings, directory, manifest)
        directory.switch(manifest)
    return manifest


def _previous(directory: IndexDirectory, live: str | None) -> str:
    older = [name for name in directory.version_names() if live is None or name < live]
    if live is None and older:
        return older[-1]
    if not older:
        raise IndexStateError(f"no version older than {live} is kept in {directory.path}: nothing to roll back"
                              " to (index.keep_versions sets how many are kept)")
    return older[-1]


def _activate_lexical(settings: Settings, directory: IndexDirectory, manifest: Manifest) -> None:
    """Move the remote leg (Elasticsearch alias) to the target version; tantivy needs nothing."""
    info = manifest.lexical
    if info.get("engine") == "tantivy":
        return
    lexical = open_lexical(settings, directory.version_path(manifest.version), manifest.version,
                           info.get("namespace", directory.namespace), create=False, engine=info["engine"],
                           analyzer=info.get("analyzer"))
    try:
        if lexical.count() != int(manifest.counts.get("lexical", -1)):
            raise IndexStateError(f"the {info['engine']} index of {manifest.version} holds {lexical.count()}"
                                  f" documents, its manifest {manifest.counts.get('lexical')}: pick another"
                                  " version with --to, or re-index")
        lexical.activate()
    except ShopfusionError:
        raise
    finally:
        lexical.close()
