"""`verify`: check the live version of an index and name everything that is damaged or drifted.

What is checked (see `indexer.integrity` for the records it relies on):
- the manifest itself (readable, a valid version name, every field of the right type);
- the SHA-256 and size of every file of the version against the manifest;
- every product record of the store against its content hash (when the store's checksum fails);
- every vector row against its digest (product id + bytes), so a flipped byte or a shuffled `ids.json`
  is found row by row;
- the id maps: `vectors/ids.json` and the lexical ordinals must follow the product store's order, and a
  sample of lexical documents must map back to their ids through the ordinal field;
- counts and ids of the store, both legs and the manifest;
- optionally (`sample`), that re-encoding some products with the index's model gives their stored vectors.

`verify` only reads. `verify --repair` (`indexer.repair.repair_index`) rebuilds what it found damaged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.attributes import CATALOG_FILE
from indexer.docstore import ProductStore
from indexer.integrity import STORE, VersionCheck
from indexer.manifest import IndexDirectory, Manifest
from indexer.stores import open_lexical
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, ShopfusionError

SAMPLE = 5
"""Ids shown per problem."""
ORDINAL_SAMPLE = 200
"""Lexical documents whose ordinal is checked against their id."""
REENCODE_MIN_COSINE = 0.99


@dataclass
class VerifyReport:
    index: str
    version: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    """Part (`manifest`, `files`, `products`, `vectors`, `lexical`) -> a sample of what is damaged."""
    notes: list[str] = field(default_factory=list)
    """What was checked, and what could not be (a version built before checksums)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "version": self.version, "ok": self.ok, "counts": self.counts,
                "problems": self.problems, "damaged": self.damaged, "notes": self.notes}

    def _damage(self, part: str, problem: str, items: Any = ()) -> None:
        self.problems.append(problem)
        self.damaged.setdefault(part, []).extend(sorted(str(i) for i in items)[:SAMPLE])


def verify_index(index_dir: str | Path, settings: Settings | None = None, *, sample: int = 0) -> VerifyReport:
    """Check the live version; `sample` > 0 also re-encodes that many products and compares vectors."""
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    report = VerifyReport(index=str(directory.path))
    try:
        manifest = directory.read_manifest()
    except IndexStateError as exc:  # (a missing index is IndexNotFoundError: raised as it is)
        report._damage("manifest", str(exc))
        return report
    report.version = manifest.version
    version_dir = directory.version_path(manifest.version)
    if not version_dir.is_dir():
        report._damage("manifest", f"version directory {version_dir} named by the manifest is missing")
        return report
    check = VersionCheck(version_dir, manifest)
    _check_files(report, check)
    store_ids = _check_store(report, check)
    vector_ids = _check_vectors(report, check, store_ids, manifest)
    if vector_ids is not None:
        _check_columns(report, version_dir, len(vector_ids))
    lexical_ids, lexical_count = _check_lexical(report, settings, version_dir, manifest, store_ids)
    if store_ids is None:
        return report
    report.counts = {"manifest": int(manifest.counts.get("products", -1)), "products": len(store_ids)}
    if lexical_count is not None:
        report.counts["lexical"] = lexical_count
    if vector_ids is not None:
        report.counts["vectors"] = len(vector_ids)
    for name, count in report.counts.items():
        if count != len(store_ids):
            report._damage("counts", f"{name} count {count} differs from the product store's {len(store_ids)}")
    known = set(store_ids)
    for name, ids in (("lexical", lexical_ids), ("vector", vector_ids)):
        if ids is None:
            continue
        missing, extra = known - set(ids), set(ids) - known
        part = "lexical" if name == "lexical" else "vectors"
        if missing:
            report._damage(part, f"{len(missing)} products missing from the {name} index,"
                                 f" e.g. {sorted(missing)[:SAMPLE]}", missing)
        if extra:
            report._damage(part, f"{len(extra)} ids in the {name} index that the product store lacks,"
                                 f" e.g. {sorted(extra)[:SAMPLE]}", extra)
    if sample > 0 and vector_ids is not None:
        _reencode(report, check, manifest, settings, sample)
    if report.problems:
        report.notes.append(f"repair: `shopfusion verify --index {directory.path} --repair` rebuilds the damaged"
                            " parts from the product store and the catalogs (or re-index with --replace)")
    return report


def _check_files(report: VerifyReport, check: VersionCheck) -> None:
    if check.legacy:
        report.notes.append("this version was built before file checksums: re-index to add them")
        return
    problems = check.file_problems()
    for relative, problem in problems.items():
        report._damage("files", f"{relative}: {problem}", [relative])
    report.notes.append(f"checked the checksums of {len(check.manifest.files)} files")


def _check_store(report: VerifyReport, check: VersionCheck) -> list[str] | None:
    state = check.store()
    if not state.readable:
        report._damage("products", f"{STORE} cannot be read: {state.problem}", ["*"])
        return None
    if state.damaged:
        report._damage("products", f"{len(state.damaged)} product records are damaged (they do not match"
                                   f" their content hash), e.g. {sorted(state.damaged)[:SAMPLE]}", state.damaged)
    return state.ids


def _check_vectors(report: VerifyReport, check: VersionCheck, store_ids: list[str] | None,
                   manifest: Manifest) -> list[str] | None:
    state = check.vectors(store_ids)
    if not state.readable:
        report._damage("vectors", f"the vectors cannot be read: {state.problem}", ["*"])
        return None
    if state.damaged:
        report._damage("vectors", f"{len(state.damaged)} vectors are damaged or under the wrong id (they fail"
                                  f" their digest), e.g. {sorted(state.damaged)[:SAMPLE]}", state.damaged)
    if store_ids is not None and state.ids != store_ids and set(state.ids) == set(store_ids):
        report._damage("vectors", "vectors/ids.json does not follow the product store's order (the id map is"
                                  " shuffled)", ["vectors/ids.json"])
    if state.dim != manifest.dim:
        report._damage("vectors", f"vectors have dimension {state.dim}, the manifest says {manifest.dim}", ["*"])
    return state.ids


def _check_columns(report: VerifyReport, version_dir: Path, rows: int) -> None:
    """The vector leg's filter and sort columns (and the attribute catalog) exist and fit the vectors."""
    from indexer.stores.columns import ProductColumns

    if not (version_dir / CATALOG_FILE).is_file():
        report._damage("vectors", f"{version_dir / CATALOG_FILE} is missing (an index built before attribute"
                                  " filters): re-index once with `shopfusion index CATALOG --index DIR`")
    try:
        ProductColumns.load(version_dir / "vectors", rows)
    except ShopfusionError as exc:
        report._damage("vectors", f"the filter columns cannot be used: {exc}", ["*"])


def _check_lexical(report: VerifyReport, settings: Settings, version_dir: Path, manifest: Manifest,
                   store_ids: list[str] | None) -> tuple[list[str] | None, int | None]:
    try:
        lexical = open_lexical(settings, version_dir, manifest.version, manifest.lexical.get("namespace", ""),
                               create=False, engine=manifest.lexical["engine"],
                               analyzer=manifest.lexical.get("analyzer"))
        try:
            ids, count = sorted(lexical.ids()), lexical.count()
            ordered = getattr(lexical, "ordered_ids", None)
            if ordered is not None and store_ids is not None and ordered() != store_ids \
                    and set(ordered()) == set(store_ids):
                report._damage("lexical", "the lexical ordinals do not follow the product store's order",
                               ["lexical/ordinals.json"])
            check_ordinals = getattr(lexical, "check_ordinals", None)
            if check_ordinals is not None and ids:
                step = max(1, len(ids) // ORDINAL_SAMPLE)
                wrong = check_ordinals(ids[::step][:ORDINAL_SAMPLE])
                if wrong:
                    report._damage("lexical", f"{len(wrong)} sampled lexical documents do not map back to their"
                                              f" ids, e.g. {wrong[:SAMPLE]}", wrong)
            return ids, count
        finally:
            lexical.close()
    except ShopfusionError as exc:
        report._damage("lexical", f"the lexical index cannot be read: {exc}", ["*"])
        return None, None


def _reencode(report: VerifyReport, check: VersionCheck, manifest: Manifest, settings: Settings,
              sample: int) -> None:
    """Re-encode `sample` random products and compare with their stored vectors (same model)."""
    from shopfusion.encoders import load_encoder

    state = check.vectors()
    try:
        encoder = load_encoder(manifest.model, settings.index.device)
        if encoder.model_id != manifest.model_id:
            report._damage("model", f"the model {manifest.model} is now {encoder.model_id}, the index was built"
                                    f" with {manifest.model_id}: re-index with the same model", [manifest.model])
            return
    except ShopfusionError as exc:
        report._damage("model", f"cannot load the index's model to re-encode a sample: {exc}", [manifest.model])
        return
    chosen = random.Random(0).sample(sorted(state.trusted), min(sample, len(state.trusted)))
    store = ProductStore(check.version_dir / STORE)
    try:
        products = store.get_many(chosen)
    finally:
        store.close()
    ids = [pid for pid in chosen if pid in products]
    if not ids:
        return
    fresh = encoder.encode([products[pid].embedding_text() for pid in ids])
    stored = np.stack([state.trusted[pid] for pid in ids])
    cosines = np.sum(fresh * stored, axis=1)
    off = [pid for pid, c in zip(ids, cosines, strict=True) if not c >= REENCODE_MIN_COSINE]
    report.notes.append(f"re-encoded {len(ids)} products: lowest cosine to the stored vector"
                        f" {float(cosines.min()):.4f}")
    if off:
        report._damage("vectors", f"re-encoding gives different vectors for {len(off)} of {len(ids)} sampled"
                                  f" products (cosine < {REENCODE_MIN_COSINE}), e.g. {off[:SAMPLE]}", off)
