"""The ingest pipeline: catalog -> validated products -> both indexes -> an atomically published version.

`run_index` reads as its phases: `read` (stream, validate, write rejects, stage products), `plan` (compare
with the current version: added, updated, unchanged, deleted; which texts need embedding), `embed`
(batches through an executor, each finished batch journaled), `build` (a new version of the product store,
both legs and the attribute catalog, in id order) and `publish` (manifest switch, old versions pruned).

Crash safety: nothing is published before the last phase, so an interrupted run leaves the current
version as it was. Every finished embedding batch is journaled under `staging/`, so the next run embeds
only what is still missing, and it rebuilds the version from scratch, so the result equals that of an
uninterrupted run.

>>> import tempfile, pathlib, json
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "c.jsonl").write_text(json.dumps({"id": "1", "title": "Cordless drill"}) + "\\n")
>>> from shopfusion.config import Settings
>>> settings = Settings().replace("index", model="hash:16")
>>> run_index(tmp / "c.jsonl", tmp / "idx", settings=settings).added
1
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from indexer.attributes import CATALOG_FILE, CatalogBuilder
from indexer.docstore import EmbeddingJournal, ProductStore, StoredProduct
from indexer.manifest import IndexDirectory, Manifest, file_sha256
from indexer.readers import CatalogFormat, read_catalog
from indexer.stores import open_lexical
from indexer.stores.faiss_store import FaissVectorIndex, VectorKind
from indexer.validation import validate
from shopfusion.config import Settings
from shopfusion.encoders import load_encoder
from shopfusion.errors import IndexStateError, ShopfusionError, TooManyRejectsError
from shopfusion.types import Reject
from workers.executor import EmbedBatch, Executor

log = logging.getLogger(__name__)
STAGE_CHUNK = 1000
EMBED_BATCH = 512
"""Texts per executor batch (one journal file each); the encoder splits it into `index.batch_size`."""


@dataclass
class IndexSummary:
    """What one run did. `read == added + updated + unchanged + duplicates + rejected` always holds."""

    catalog: str
    index: str
    version: str = ""
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: int = 0
    deleted: int = 0
    embedded: int = 0
    reused_vectors: int = 0
    resumed_vectors: int = 0
    total: int = 0
    rejects_file: str = ""
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.read == self.added + self.updated + self.unchanged + self.duplicates + self.rejected

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced
        return data


class _Progress:
    """tqdm when asked for (stderr), otherwise nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, total: int | None, desc: str, unit: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not self.enabled, leave=False, dynamic_ncols=True)


def run_index(
    catalog: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    *,
    settings: Settings | None = None,
    rejects: str | os.PathLike[str] | None = None,
    max_rejects: int | None = None,
    replace: bool = False,
    fmt: CatalogFormat | None = None,
    executor: Executor | None = None,
    progress: bool = False,
) -> IndexSummary:
    """Index a catalog into `index_dir` (created if needed) and return the run's summary.

    `replace=True` makes the catalog the whole truth: products missing from it are deleted. Otherwise
    products are upserted and the rest stay. `max_rejects` aborts the run, leaving the index unchanged,
    once more records than that are rejected.
    """
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    with directory.lock():
        run = _IndexRun(Path(catalog), directory, settings, rejects, max_rejects, replace, fmt, executor,
                        _Progress(progress))
        return run.execute()


class _IndexRun:
    def __init__(self, catalog: Path, directory: IndexDirectory, settings: Settings,
                 rejects: str | os.PathLike[str] | None, max_rejects: int | None, replace: bool,
                 fmt: CatalogFormat | None, executor: Executor | None, progress: _Progress) -> None:
        self.catalog = catalog
        self.directory = directory
        self.settings = settings
        self.max_rejects = max_rejects
        self.replace = replace
        self.fmt = fmt
        self.executor = executor
        self.progress = progress
        self.rejects_path = Path(rejects) if rejects else directory.path / "rejects.jsonl"
        self.summary = IndexSummary(catalog=str(catalog), index=str(directory.path),
                                    rejects_file=str(self.rejects_path))
        self.encoder = load_encoder(settings.index.model, settings.index.device)
        self.current = directory.current()
        self.status: dict[str, str] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.failed: dict[str, str] = {}
        self.failed_texts: dict[str, str] = {}

    def execute(self) -> IndexSummary:
        started = time.perf_counter()
        self.directory.staging.mkdir(parents=True, exist_ok=True)
        incoming_path = self.directory.staging / "incoming.sqlite"
        for leftover in (incoming_path, Path(str(incoming_path) + "-wal"), Path(str(incoming_path) + "-shm")):
            leftover.unlink(missing_ok=True)
        incoming = ProductStore(incoming_path)
        old_store = self._old_store()
        try:
            self.read(incoming)
            needed = self.plan(incoming, old_store)
            self.embed(needed)
            self.build(incoming, old_store)
        finally:
            incoming.close()
            if old_store is not None:
                old_store.close()
        shutil.rmtree(self.directory.staging, ignore_errors=True)
        for version in self.directory.prune(self.settings.index.keep_versions):
            self._drop_lexical(version)
        self.summary.seconds = round(time.perf_counter() - started, 3)
        self.summary.failures = dict(self.failed)
        if not self.summary.balanced:  # pragma: no cover - an internal accounting bug, never user input
            raise IndexStateError(f"summary does not add up: {self.summary.to_dict()}")
        return self.summary

    # -- phase 1: read and validate ------------------------------------------------------------------
    def read(self, incoming: ProductStore) -> None:
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejects_path.open("w", encoding="utf-8") as rejects, \
                self.progress.bar(None, f"reading {self.catalog.name}", "rec") as bar:
            pending: dict[str, StoredProduct] = {}
            for record in read_catalog(self.catalog, self.fmt):
                self.summary.read += 1
                bar.update(1)
                result = validate(record, self.settings.index.max_field_chars)
                if isinstance(result, Reject):
                    self._reject(rejects, result)
                    continue
                if result.id in pending or incoming.contains(result.id):
                    self.summary.duplicates += 1
                pending[result.id] = StoredProduct(result, result.content_hash(), result.text_hash(),
                                                   record.source, record.line)
                if len(pending) >= STAGE_CHUNK:
                    incoming.write_many(pending.values())
                    pending.clear()
            incoming.write_many(pending.values())

    def _reject(self, rejects: IO[str], reject: Reject) -> None:
        rejects.write(json.dumps(reject.to_dict(), ensure_ascii=False) + "\n")
        self.summary.rejected += 1
        if self.max_rejects is not None and self.summary.rejected > self.max_rejects:
            raise TooManyRejectsError(
                f"more than {self.max_rejects} records rejected (the latest: {reject.source} line"
                f" {reject.line}: {reject.reason}); the index is unchanged. See {self.rejects_path},"
                " fix the catalog or raise --max-rejects"
            )

    # -- phase 2: plan ------------------------------------------------------------------------------
    def _old_store(self) -> ProductStore | None:
        if self.current is None:
            return None
        path = self.directory.version_path(self.current.version) / "products.sqlite"
        if not path.is_file():
            raise IndexStateError(f"the current version {self.current.version} has no product store:"
                                  " run `shopfusion verify` and rebuild the index")
        return ProductStore(path)

    def _old_vectors(self) -> FaissVectorIndex | None:
        if self.current is None or self.current.model_id != self.encoder.model_id:
            return None
        return FaissVectorIndex(self.directory.version_path(self.current.version) / "vectors")

    def plan(self, incoming: ProductStore, old_store: ProductStore | None) -> dict[str, str]:
        """Classify every incoming product and return the texts (by text hash) still to embed."""
        old_hashes = old_store.hashes() if old_store is not None else {}
        incoming_hashes = incoming.hashes()
        for pid, (content_hash, _) in incoming_hashes.items():
            if pid not in old_hashes:
                self.status[pid] = "added"
            elif old_hashes[pid][0] == content_hash:
                self.status[pid] = "unchanged"
            else:
                self.status[pid] = "updated"
        for state in ("added", "updated", "unchanged"):
            setattr(self.summary, state, sum(1 for s in self.status.values() if s == state))
        if self.replace:
            self.summary.deleted = sum(1 for pid in old_hashes if pid not in incoming_hashes)

        old_vectors = self._old_vectors()
        if old_vectors is not None:
            by_text: dict[str, str] = {}
            for pid, (_, text_hash) in old_hashes.items():
                by_text.setdefault(text_hash, pid)
            wanted = {t for _, t in incoming_hashes.values()} | (
                set() if self.replace else {t for _, t in old_hashes.values()})
            reuse = {t: by_text[t] for t in wanted if t in by_text}
            found = old_vectors.vectors(list(reuse.values()))
            self.vectors.update({t: found[pid] for t, pid in reuse.items() if pid in found})
        self.summary.reused_vectors = len(self.vectors)

        self.journal = EmbeddingJournal(self.directory.staging / "journal", self.encoder.model_id)
        resumed = self.journal.load()
        resumed = {t: v for t, v in resumed.items() if t not in self.vectors}
        self.vectors.update(resumed)
        self.summary.resumed_vectors = len(resumed)

        needed: dict[str, str] = {}
        for stored in incoming.iter_stored():
            if stored.text_hash not in self.vectors:
                needed.setdefault(stored.text_hash, stored.product.embedding_text())
        if not self.replace and old_store is not None and old_vectors is None:
            # Model changed: products kept from the old version need new vectors too.
            for stored in old_store.iter_stored():
                if stored.product.id not in incoming_hashes and stored.text_hash not in self.vectors:
                    needed.setdefault(stored.text_hash, stored.product.embedding_text())
        return needed

    # -- phase 3: embed -----------------------------------------------------------------------------
    def embed(self, needed: dict[str, str]) -> None:
        if not needed:
            return
        executor = self.executor or _default_executor(self.settings, self.directory)
        failed_keys: dict[str, str] = {}
        with self.progress.bar(len(needed), f"embedding with {self.settings.index.model}", "text") as bar:
            for result in executor.map(self.settings.index.model, _batches(needed)):
                if result.ok and result.vectors is not None:
                    self.journal.append(result.batch_id, result.keys, result.vectors)
                    self.vectors.update(zip(result.keys, result.vectors, strict=True))
                    self.summary.embedded += len(result.keys)
                else:
                    failed_keys.update(dict.fromkeys(result.keys, result.error or "embedding failed"))
                bar.update(len(result.keys))
        if self.executor is None:
            executor.close()
        self.failed_texts = failed_keys

    # -- phase 4: build ------------------------------------------------------------------------------
    def build(self, incoming: ProductStore, old_store: ProductStore | None) -> None:
        version = self.directory.next_version()
        self.summary.version = version
        build = self.directory.staging / "version"
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
        store = ProductStore(build / "products.sqlite")
        rejects = self.rejects_path.open("a", encoding="utf-8")
        try:
            self._fill_store(store, incoming, old_store, rejects)
            lexical = open_lexical(self.settings, build, version, self.directory.namespace, create=True)
            kind = self._vector_kind(store.count())
            vectors = FaissVectorIndex(build / "vectors", dim=self.encoder.dim, kind=kind,
                                       hnsw_m=self.settings.index.hnsw_m,
                                       ef_search=self.settings.index.hnsw_ef_search,
                                       nprobe=self.settings.index.ivf_nprobe, create=True)
            lexical_failed: dict[str, str] = {}
            attributes = CatalogBuilder()
            with self.progress.bar(store.count(), "building indexes", "doc") as bar:
                for chunk in _chunks(store.iter_stored(), STAGE_CHUNK):
                    report = lexical.upsert(s.product for s in chunk)
                    ok = [s for s in chunk if s.product.id not in report.failed]
                    for s in chunk:
                        if s.product.id in report.failed:
                            lexical_failed[s.product.id] = report.failed[s.product.id]
                            self._fail(rejects, s, f"lexical index refused it: {report.failed[s.product.id]}")
                    if ok:
                        vectors.upsert([s.product for s in ok], np.stack([self.vectors[s.text_hash] for s in ok]))
                        attributes.add_all(s.product for s in ok)
                    bar.update(len(chunk))
            attributes.build().save(build / CATALOG_FILE)
            if lexical_failed:
                store.delete(lexical_failed)
            lexical.commit()
            vectors.commit()
            total = store.count()
            store.checkpoint()
        finally:
            store.close()
            rejects.close()
        self.summary.total = total
        manifest = Manifest(
            version=version,
            model=self.settings.index.model,
            model_id=self.encoder.model_id,
            dim=self.encoder.dim,
            lexical=self._lexical_info(version),
            vector={"kind": kind, "hnsw_m": self.settings.index.hnsw_m},
            counts={"products": total, "lexical": lexical.count(), "vectors": vectors.count()},
            catalogs=self._catalogs(),
        )
        self.directory.publish(build, manifest)
        lexical.activate()
        lexical.close()

    def _fill_store(self, store: ProductStore, incoming: ProductStore, old_store: ProductStore | None,
                    rejects: IO[str]) -> None:
        """The new version's products: the old ones (unless replacing) overlaid with the incoming ones.
        A product whose text could not be embedded keeps its old version, or is rejected when new."""
        failed_texts = self.failed_texts
        if old_store is not None and not self.replace:
            old_store.checkpoint()
            for chunk in _chunks(old_store.iter_stored(), STAGE_CHUNK):
                store.write_many(s for s in chunk if s.text_hash in self.vectors)
        keep_old: list[str] = []
        for chunk in _chunks(incoming.iter_stored(), STAGE_CHUNK):
            good = []
            for s in chunk:
                if s.text_hash in failed_texts:
                    self._fail(rejects, s, f"embedding failed: {failed_texts[s.text_hash]}")
                    keep_old.append(s.product.id)
                else:
                    good.append(s)
            store.write_many(good)
        if self.replace and old_store is not None and keep_old:
            kept = old_store.get_many(keep_old)
            store.write_many(StoredProduct(p, p.content_hash(), p.text_hash()) for p in kept.values()
                             if p.text_hash() in self.vectors)

    def _fail(self, rejects: IO[str], stored: StoredProduct, reason: str) -> None:
        """A staged product that could not be indexed: rejected with its line, counted once."""
        state = self.status.pop(stored.product.id, None)
        if state is None:
            return
        setattr(self.summary, state, getattr(self.summary, state) - 1)
        self.summary.rejected += 1
        self.failed[stored.product.id] = reason
        raw = json.dumps(stored.product.to_dict(), ensure_ascii=False)
        rejects.write(json.dumps(Reject(stored.source or self.summary.catalog, stored.line or 0, reason,
                                        raw).to_dict(), ensure_ascii=False) + "\n")

    def _vector_kind(self, count: int) -> VectorKind:
        kind = self.settings.index.vector_index
        if kind == "auto":
            return "hnsw" if count > self.settings.index.hnsw_threshold else "flat"
        return kind

    def _lexical_info(self, version: str) -> dict[str, Any]:
        engine = self.settings.index.lexical
        if engine == "elasticsearch":
            return {"engine": engine, "namespace": self.directory.namespace, "version": version,
                    "analyzer": self.settings.elasticsearch.analyzer}
        return {"engine": engine, "analyzer": self.settings.index.analyzer}

    def _catalogs(self) -> list[dict[str, Any]]:
        entry = {"path": str(self.catalog.resolve()), "sha256": file_sha256(self.catalog),
                 "records": self.summary.read, "replace": self.replace, "at": time.time()}
        previous = [] if self.replace or self.current is None else list(self.current.catalogs)
        return (previous + [entry])[-20:]

    def _drop_lexical(self, version: str) -> None:
        if self.settings.index.lexical == "tantivy":
            return  # its files went with the version directory
        try:
            open_lexical(self.settings, self.directory.version_path(version), version,
                         self.directory.namespace, create=False).drop()
        except ShopfusionError as exc:  # the new version is live; a leftover old one is only wasted space
            log.warning("could not delete old lexical version %s: %s", version, exc)


def _batches(needed: dict[str, str]) -> Iterator[EmbedBatch]:
    """Texts sorted by length (less padding per encoder batch), cut into executor batches."""
    items = sorted(needed.items(), key=lambda item: (len(item[1]), item[0]))
    for start in range(0, len(items), EMBED_BATCH):
        chunk = items[start : start + EMBED_BATCH]
        keys = tuple(k for k, _ in chunk)
        yield EmbedBatch(f"{start // EMBED_BATCH:06d}-{keys[0][:8]}", keys, tuple(t for _, t in chunk))


def _chunks(items: Iterator[StoredProduct], size: int) -> Iterator[list[StoredProduct]]:
    chunk: list[StoredProduct] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _default_executor(settings: Settings, directory: IndexDirectory) -> Executor:
    from workers import make_executor

    return make_executor(settings, directory.path)

