"""`verify --repair`: rebuild what `verify` found damaged, as a new version built from the intact parts.

The live version is never patched in place (versions are immutable; readers keep using it until the
switch). Instead a new version is built by the ingest pipeline from:

- the product records that still match their content hash, read from the live product store;
- damaged or unreadable records, read again from the catalogs the index was built from (the manifest's
  catalog history, each file checked against its recorded SHA-256; a product is taken from the newest
  unchanged catalog that holds it, and only if no later catalog of the history has changed since);
- the vectors whose digest still matches (only damaged rows are embedded again);
- a lexical leg rebuilt from those products (tantivy or Elasticsearch, as the live version used).

A damaged `manifest.json` is first replaced by the newest version's own `version.json`. When a damaged
product cannot be recovered, nothing is published and the error says which products and how to proceed
(index the full catalog with --replace).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.docstore import ProductStore
from indexer.integrity import STORE, VersionCheck
from indexer.manifest import IndexDirectory, Manifest
from indexer.pipeline import IndexSummary, _IndexRun, _Progress
from indexer.readers import read_catalog
from indexer.validation import validate
from indexer.verify import VerifyReport, verify_index
from shopfusion.artifacts import file_sha256
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, ShopfusionError
from shopfusion.types import Product
from workers.executor import Executor


@dataclass
class RepairReport:
    before: VerifyReport
    after: VerifyReport
    summary: IndexSummary | None = None
    """The rebuild run (None when nothing needed rebuilding)."""
    restored_manifest: str | None = None
    """The version `manifest.json` was restored to, when it was damaged."""
    recovered: dict[str, str] = field(default_factory=dict)
    """Product id -> the catalog its damaged record was read again from."""

    @property
    def ok(self) -> bool:
        return self.after.ok

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "before": self.before.to_dict(), "after": self.after.to_dict(),
                "rebuild": self.summary.to_dict() if self.summary else None,
                "restored_manifest": self.restored_manifest, "recovered": self.recovered}


def repair_index(index_dir: str | Path, settings: Settings | None = None, *, executor: Executor | None = None,
                 progress: bool = False) -> RepairReport:
    """Verify the index and, when anything is damaged, publish a repaired version (see the module doc)."""
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    with directory.lock():
        before = verify_index(directory.path, settings)
        if before.ok:
            return RepairReport(before, before)
        restored = None
        if "manifest" in before.damaged:
            restored = _restore_manifest(directory)
            checked = verify_index(directory.path, settings)
            if checked.ok:
                return RepairReport(before, checked, restored_manifest=restored)
        manifest = directory.read_manifest()
        recovered, catalog = _repair_catalog(directory, manifest, settings)
        run_settings = settings.replace("index", model=manifest.model, lexical=manifest.lexical["engine"])
        if manifest.lexical["engine"] == "tantivy" and manifest.lexical.get("analyzer"):
            run_settings = run_settings.replace("index", analyzer=manifest.lexical["analyzer"])
        run = _IndexRun(catalog, directory, run_settings, directory.staging / "repair-rejects.jsonl", None, True,
                        "jsonl", executor, _Progress(progress))
        run.history = list(manifest.catalogs)
        summary = run.execute()
    return RepairReport(before, verify_index(directory.path, settings), summary, restored, recovered)


def _restore_manifest(directory: IndexDirectory) -> str:
    """Point `manifest.json` at the newest version whose own record is readable (intact files first)."""
    readable: list[Manifest] = []
    for name in reversed(directory.version_names()):
        try:
            manifest = directory.version_manifest(name)
        except IndexStateError:
            continue
        if not VersionCheck(directory.version_path(name), manifest).file_problems():
            directory.switch(manifest)
            return name
        readable.append(manifest)
    if not readable:
        raise IndexStateError(f"manifest.json of {directory.path} is damaged and no version has a readable"
                              " version.json: re-index the full catalog with --replace")
    directory.switch(readable[0])
    return readable[0].version


def _repair_catalog(directory: IndexDirectory, manifest: Manifest, settings: Settings) -> tuple[dict[str, str], Path]:
    """Write every product the repaired version must hold to `staging/repair-catalog.jsonl`."""
    check = VersionCheck(directory.version_path(manifest.version), manifest)
    state = check.store()
    directory.staging.mkdir(parents=True, exist_ok=True)
    path = directory.staging / "repair-catalog.jsonl"
    recovered: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as out:
        needed: set[str] | None = None
        if state.readable:
            needed = set(state.damaged)
            store = ProductStore(check.version_dir / STORE)
            try:
                for _, stored in store.scan():
                    if stored is not None:
                        out.write(json.dumps(stored.product.to_dict(), ensure_ascii=False) + "\n")
            finally:
                store.close()
        if needed is None or needed:
            products = _from_catalogs(manifest, needed, settings)
            for pid, (product, source) in products.items():
                out.write(json.dumps(product.to_dict(), ensure_ascii=False) + "\n")
                recovered[pid] = source
    return recovered, path


def _from_catalogs(manifest: Manifest, needed: set[str] | None,
                   settings: Settings) -> dict[str, tuple[Product, str]]:
    """The products `needed` (None: all) as the catalog history gives them; raises when some cannot be."""
    entries = list(manifest.catalogs)
    if needed is None:
        bases = [i for i, e in enumerate(entries) if e.get("base") or e.get("replace")]
        if not bases:
            raise IndexStateError("the product store cannot be read and the manifest's catalog history does not"
                                  " reach back to a full catalog: re-index the full catalog with --replace")
        entries = entries[bases[-1]:]
    intact = [_unchanged(entry) for entry in entries]
    if needed is None and not all(intact):
        stale = [e.get("path") for e, ok in zip(entries, intact, strict=True) if not ok]
        raise IndexStateError(f"the product store cannot be read and catalogs it was built from are gone or"
                              f" changed ({stale[:3]}): re-index the full catalog with --replace")
    found: dict[str, tuple[Product, str]] = {}
    unsafe: set[str] = set()
    for position, (entry, ok) in enumerate(zip(entries, intact, strict=True)):
        if not ok:
            continue
        later_changed = not all(intact[position + 1:])
        for record in read_catalog(entry["path"], entry.get("format")):
            result = validate(record, settings.index.max_field_chars)
            if isinstance(result, Product) and (needed is None or result.id in needed):
                if later_changed:
                    unsafe.add(result.id)
                else:
                    unsafe.discard(result.id)
                    found[result.id] = (result, str(entry["path"]))
    missing = (set() if needed is None else needed - set(found)) | (unsafe - set(found))
    if missing:
        raise IndexStateError(
            f"{len(missing)} damaged product(s) cannot be recovered from the catalogs this index was built from"
            f" (gone, changed since, or not holding them), e.g. {sorted(missing)[:5]}: nothing was published;"
            " re-index the full catalog with --replace")
    return found


def _unchanged(entry: dict[str, Any]) -> bool:
    path = Path(str(entry.get("path", "")))
    try:
        return path.is_file() and file_sha256(path) == entry.get("sha256")
    except (OSError, ShopfusionError):
        return False
