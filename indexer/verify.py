"""`verify`: compare the manifest, the product store and both legs of the current version, and report
every drift (missing files, count mismatches, ids present in one store but not another)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.attributes import CATALOG_FILE
from indexer.docstore import ProductStore
from indexer.manifest import IndexDirectory
from indexer.stores import open_lexical
from indexer.stores.faiss_store import FaissVectorIndex
from shopfusion.config import Settings
from shopfusion.errors import ShopfusionError

SAMPLE = 5


@dataclass
class VerifyReport:
    index: str
    version: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "version": self.version, "ok": self.ok, "counts": self.counts,
                "problems": self.problems}


def verify_index(index_dir: str | Path, settings: Settings | None = None) -> VerifyReport:
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    report = VerifyReport(index=str(directory.path))
    manifest = directory.read_manifest()
    report.version = manifest.version
    version_dir = directory.version_path(manifest.version)
    if not version_dir.is_dir():
        report.problems.append(f"version directory {version_dir} named by the manifest is missing")
        return report
    if not (version_dir / CATALOG_FILE).is_file():
        report.problems.append(f"{version_dir / CATALOG_FILE} is missing (an index built before attribute"
                               " filters): re-index once with `shopfusion index CATALOG --index DIR`")
    try:
        store = ProductStore(version_dir / "products.sqlite")
        store_ids = store.ids()
        store.close()
        lexical = open_lexical(settings, version_dir, manifest.version, manifest.lexical.get("namespace", ""),
                               create=False, engine=manifest.lexical["engine"],
                               analyzer=manifest.lexical.get("analyzer"))
        lexical_ids, lexical_count = lexical.ids(), lexical.count()
        lexical.close()
        vectors = FaissVectorIndex(version_dir / "vectors")
        vector_ids, vector_count, dim = vectors.ids(), vectors.count(), vectors.dim
        if len(vectors.columns) != vector_count:  # loading checks the filter columns fit the vectors
            report.problems.append(f"the vector leg has filter columns for {len(vectors.columns)} products"
                                   f" and {vector_count} vectors: rebuild the index with `shopfusion index`")
    except ShopfusionError as exc:
        report.problems.append(str(exc))
        return report
    report.counts = {"manifest": manifest.counts.get("products", -1), "products": len(store_ids),
                     "lexical": lexical_count, "vectors": vector_count}
    for name, count in report.counts.items():
        if count != len(store_ids):
            report.problems.append(f"{name} count {count} differs from the product store's {len(store_ids)}")
    if dim != manifest.dim:
        report.problems.append(f"vectors have dimension {dim}, the manifest says {manifest.dim}")
    for name, ids in (("lexical", lexical_ids), ("vector", vector_ids)):
        missing, extra = store_ids - ids, ids - store_ids
        if missing:
            report.problems.append(f"{len(missing)} products missing from the {name} index,"
                                   f" e.g. {sorted(missing)[:SAMPLE]}")
        if extra:
            report.problems.append(f"{len(extra)} ids in the {name} index that the product store lacks,"
                                   f" e.g. {sorted(extra)[:SAMPLE]}")
    return report
