"""The ingest pipeline: catalog -> validated products -> both indexes -> an atomically published version.

`run_index` reads as its phases: `read` (stream, validate, write rejects, stage products), `plan` (compare
with the current version: added, updated, unchanged, deleted; which texts need embedding), `embed`
(batches through an executor, each finished batch journaled), `build` (a new version of the product store,
both legs and the attribute catalog, in id order) and `publish` (manifest switch, old versions pruned).

Crash safety: nothing is published before the last phase, so an interrupted run leaves the current
version as it was. Every finished embedding batch is journaled under `staging/`, so the next run embeds
only what is still missing, and it rebuilds the version from scratch, so the result equals that of an
uninterrupted run.

Nothing lost, nothing silent:
- the live version is checked first (`indexer.integrity`): a product whose stored record or vector is
  damaged is never counted `unchanged` nor carried forward; it is `repaired` from the catalog (its vector
  embedded again), and a damaged product the catalog lacks stops an additive run (`verify --repair`
  rebuilds it from the catalogs the index was built from);
- a product that could not be embedded is an embedding failure (`embedding_failed`, reasons in
  `failures`), never a catalog reject; it keeps its previous version when it had one;
- publishing is refused (`ShrinkError`) when the new version would be empty or would drop more than
  `index.max_shrink` of the live products, unless `allow_shrink`.

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
from indexer.integrity import seal
from indexer.live import LiveVersion
from indexer.manifest import IndexDirectory, Manifest, file_sha256
from indexer.readers import CatalogFormat, detect_format, read_catalog
from indexer.stores import open_lexical
from indexer.stores.faiss_store import FaissVectorIndex, VectorKind
from indexer.validation import validate
from shopfusion.config import Settings
from shopfusion.encoders import load_encoder
from shopfusion.errors import IndexStateError, ShopfusionError, ShrinkError, TooManyRejectsError
from shopfusion.types import Reject
from workers.executor import EmbedBatch, Executor

log = logging.getLogger(__name__)
STAGE_CHUNK = 1000
MAX_CATALOGS = 20
"""Catalog history entries a manifest keeps."""
EMBED_BATCH = 512
"""Texts per executor batch (one journal file each); the encoder splits it into `index.batch_size`."""


@dataclass
class IndexSummary:
    """What one run did. `read == added + updated + unchanged + repaired + duplicates + rejected +
    embedding_failed` always holds.

    `repaired`: products the catalog holds unchanged whose record or vector in the live version was
    damaged (rebuilt from the catalog). `embedding_failed`: products that could not be embedded (reasons
    in `failures`); they are not catalog rejects and keep their previous version when they had one.
    `warnings`: what the run did differently from a plain run, and why."""

    catalog: str
    index: str
    version: str = ""
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    repaired: int = 0
    duplicates: int = 0
    rejected: int = 0
    embedding_failed: int = 0
    left_out: int = 0
    """Products kept from the live version (not in this catalog) that could not be embedded again (after
    a model change, say) and so are not in the new version; in `failures` too."""
    deleted: int = 0
    embedded: int = 0
    reused_vectors: int = 0
    resumed_vectors: int = 0
    total: int = 0
    rejects_file: str = ""
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.read == (self.added + self.updated + self.unchanged + self.repaired + self.duplicates
                             + self.rejected + self.embedding_failed)

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
    allow_shrink: bool = False,
) -> IndexSummary:
    """Index a catalog into `index_dir` (created if needed) and return the run's summary.

    `replace=True` makes the catalog the whole truth: products missing from it are deleted. Otherwise
    products are upserted and the rest stay. `max_rejects` aborts the run, leaving the index unchanged,
    once more records than that are rejected. `allow_shrink` publishes even an empty version or one
    that drops more than `index.max_shrink` of the live products (otherwise `ShrinkError`).
    """
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    with directory.lock():
        run = _IndexRun(Path(catalog), directory, settings, rejects, max_rejects, replace, fmt, executor,
                        _Progress(progress), allow_shrink)
        return run.execute()


class _IndexRun:
    def __init__(self, catalog: Path, directory: IndexDirectory, settings: Settings,
                 rejects: str | os.PathLike[str] | None, max_rejects: int | None, replace: bool,
                 fmt: CatalogFormat | None, executor: Executor | None, progress: _Progress,
                 allow_shrink: bool = False) -> None:
        self.catalog = catalog
        self.allow_shrink = allow_shrink
        self.history: list[dict[str, Any]] | None = None
        """Set by `indexer.repair`: the catalog history to keep (a repair adds no catalog of its own)."""
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
        self.live = LiveVersion(directory, replace=replace)
        self.current = self.live.manifest
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
        old_store: ProductStore | None = None
        try:
            old_store = self.live.open_store()
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
        self.summary.warnings[:0] = self.live.warnings
        if self.summary.left_out:
            self.summary.warnings.append(
                f"{self.summary.left_out} product(s) kept from the previous version could not be embedded with"
                " this model and were left out (see failures): run the same command again to retry them")
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
    def plan(self, incoming: ProductStore, old_store: ProductStore | None) -> dict[str, str]:
        """Classify every incoming product and return the texts (by text hash) still to embed."""
        old_hashes = old_store.hashes() if old_store is not None else {}
        model_id = self.encoder.model_id
        trusted = self.live.trusted_vectors(model_id, sorted(old_hashes)) if old_store is not None else {}
        for pid in self.live.damaged:
            old_hashes.pop(pid, None)  # its recorded hashes cannot be believed either
        incoming_hashes = incoming.hashes()
        for pid, (content_hash, _) in incoming_hashes.items():
            if pid in self.live.damaged:
                self.status[pid] = "repaired"
            elif pid not in old_hashes:
                self.status[pid] = "added"
            elif old_hashes[pid][0] != content_hash:
                self.status[pid] = "updated"
            elif self.live.reusable(model_id) and pid not in trusted:
                self.status[pid] = "repaired"  # its vector was damaged: embedded again
            else:
                self.status[pid] = "unchanged"
        for state in ("added", "updated", "unchanged", "repaired"):
            setattr(self.summary, state, sum(1 for s in self.status.values() if s == state))
        if self.replace:
            self.summary.deleted = sum(1 for pid in old_hashes if pid not in incoming_hashes)
        elif old_store is not None:
            lost = sorted(pid for pid in self.live.damaged if pid not in incoming_hashes)
            if lost:
                raise IndexStateError(
                    f"{len(lost)} product(s) of the live version are damaged and not in this catalog (e.g."
                    f" {lost[:5]}): run `shopfusion verify --index {self.directory.path} --repair` (rebuilds them"
                    " from the catalogs the index was built from), or index a catalog that holds them")

        if trusted:
            by_text: dict[str, str] = {}
            for pid, (_, text_hash) in old_hashes.items():
                if pid in trusted:
                    by_text.setdefault(text_hash, pid)
            wanted = {t for _, t in incoming_hashes.values()} | (
                set() if self.replace else {t for _, t in old_hashes.values()})
            self.vectors.update({t: trusted[by_text[t]] for t in wanted if t in by_text})
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
        if not self.replace and old_store is not None:
            # Products kept from the live version whose vectors cannot be reused (a model change, damage).
            missing = [pid for pid, (_, text_hash) in old_hashes.items()
                       if pid not in incoming_hashes and text_hash not in self.vectors]
            for start in range(0, len(missing), STAGE_CHUNK):
                for product in old_store.get_many(missing[start:start + STAGE_CHUNK]).values():
                    needed.setdefault(product.text_hash(), product.embedding_text())
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
            self._fill_store(store, incoming, old_store)
            self._check_shrink(store.count(), version)
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
                            self._fail(s, f"lexical index refused it: {report.failed[s.product.id]}",
                                       rejects=rejects)
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
        try:
            self._check_shrink(total, version)
        except ShrinkError:
            if self.settings.index.lexical != "tantivy":
                lexical.drop()
            raise
        manifest = Manifest(
            version=version,
            model=self.settings.index.model,
            model_id=self.encoder.model_id,
            dim=self.encoder.dim,
            lexical=self._lexical_info(version),
            vector={"kind": kind, "hnsw_m": self.settings.index.hnsw_m},
            counts={"products": total, "lexical": lexical.count(), "vectors": vectors.count()},
            catalogs=self._catalogs(),
            files=seal(build),
        )
        self.directory.publish(build, manifest)
        lexical.activate()
        lexical.close()

    def _check_shrink(self, total: int, version: str) -> None:
        """Refuse to publish an empty version, or one dropping more than `index.max_shrink` of the live
        products, unless `allow_shrink` (the index stays as it is)."""
        if self.allow_shrink:
            return
        live = self.live.products
        s = self.summary
        source = (f"{self.catalog} gave {s.read} record(s): {s.rejected} rejected, {s.duplicates} duplicate(s),"
                  f" {s.embedding_failed} not embedded (rejects in {self.rejects_path})")
        fix = ("the index is unchanged. Fix the catalog, or pass --allow-shrink to publish anyway"
               f" (`shopfusion rollback --index {self.directory.path}` switches back later)")
        if total == 0:
            raise ShrinkError(f"refusing to publish an empty version {version}"
                              + (f" over {live:,} live products" if live else "") + f": {source}; {fix}")
        limit = self.settings.index.max_shrink
        if live and (live - total) / live > limit:
            raise ShrinkError(f"refusing to publish {version} with {total:,} products: it would drop"
                              f" {live - total:,} of the {live:,} live ones ({(live - total) / live:.0%}, more than"
                              f" index.max_shrink = {limit:.0%}); {source}; {fix}")

    def _fill_store(self, store: ProductStore, incoming: ProductStore, old_store: ProductStore | None) -> None:
        """The new version's products: the old ones (unless replacing) overlaid with the incoming ones.
        A product whose text could not be embedded keeps its old version, or is left out when new; a
        damaged old record is never copied."""
        failed_texts = self.failed_texts
        if old_store is not None and not self.replace:
            old_store.checkpoint()
            for chunk in _chunks(old_store.iter_stored(), STAGE_CHUNK):
                kept = [s for s in chunk if s.product.id not in self.live.damaged]
                for s in kept:
                    if s.text_hash not in self.vectors and s.product.id not in self.status:
                        self.failed[s.product.id] = (f"kept from the live version but not embedded:"
                                                     f" {failed_texts.get(s.text_hash, 'no vector')}")
                        self.summary.left_out += 1
                store.write_many(s for s in kept if s.text_hash in self.vectors)
        keep_old: list[str] = []
        for chunk in _chunks(incoming.iter_stored(), STAGE_CHUNK):
            good = []
            for s in chunk:
                if s.text_hash in failed_texts:
                    self._fail(s, f"embedding failed: {failed_texts[s.text_hash]}", "embedding_failed")
                    keep_old.append(s.product.id)
                else:
                    good.append(s)
            store.write_many(good)
        if self.replace and old_store is not None and keep_old:
            previous = old_store.get_many([pid for pid in keep_old if pid not in self.live.damaged])
            store.write_many(StoredProduct(p, p.content_hash(), p.text_hash()) for p in previous.values()
                             if p.text_hash() in self.vectors)

    def _fail(self, stored: StoredProduct, reason: str, outcome: str = "rejected",
              rejects: IO[str] | None = None) -> None:
        """A staged product that could not be indexed, counted once: a reject (with its line, written to
        the rejects file) or an embedding failure (in `failures` only: not the catalog's fault)."""
        state = self.status.pop(stored.product.id, None)
        if state is None:
            return
        setattr(self.summary, state, getattr(self.summary, state) - 1)
        setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
        self.failed[stored.product.id] = reason
        if rejects is not None:
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
        """The catalogs the new version was built from, oldest first; the first entry with `base` true
        starts the history (a --replace run or the first run), which lets `verify --repair` rebuild the
        products from them."""
        if self.history is not None:
            return self.history
        entry = {"path": str(self.catalog.resolve()), "sha256": file_sha256(self.catalog),
                 "records": self.summary.read, "replace": self.replace, "at": time.time(),
                 "base": self.replace or self.current is None, "format": self.fmt or detect_format(self.catalog)}
        previous = [] if self.replace or self.current is None else list(self.current.catalogs)
        return (previous + [entry])[-MAX_CATALOGS:]

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

