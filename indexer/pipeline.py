"""The ingest pipeline: catalog -> validated products -> both indexes -> an atomically published version.

`run_index` reads as its phases: `read` (stream, validate, write rejects, stage products), `plan` (compare
with the current version: added, updated, unchanged, deleted; which texts need embedding), `embed`
(batches through an executor, each finished batch journaled), `build` (a new version of the product store,
both legs and the attribute catalog, in id order) and `publish` (manifest switch, old versions pruned).
`IndexSummary.phases` says how long each took (`read`, `plan`, `embed`, `store`, `lexical`, `vectors`,
`publish`).

Crash safety: nothing is published before the last phase, so an interrupted run leaves the current
version as it was. Every finished embedding batch is journaled under `staging/`, so the next run embeds
only what is still missing, and it rebuilds the version from scratch, so the result equals that of an
uninterrupted run.

Memory does not grow with the catalog beyond a few small values per product: products are staged in
SQLite (compared with the current version by SQL joins), vectors live in flat files keyed by text hash
(`indexer.vectorfile`: this run's journal, the current version's vectors, a precomputed vector file)
and are read back chunk by chunk while the new version streams to disk (`VectorIndexBuilder`).
A text whose vector is already known from any of those is never embedded again.

Nothing lost, nothing silent:
- the live version is checked first (`indexer.integrity`, through `indexer.live`): a product whose stored
  record or vector is damaged is never counted `unchanged` nor carried forward; it is `repaired` from the
  catalog (its vector embedded again: a damaged row is never a reuse source), and a damaged product the
  catalog lacks stops an additive run (`verify --repair` rebuilds it from the catalogs the index was
  built from);
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

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from indexer.attributes import CATALOG_FILE, CatalogBuilder
from indexer.docstore import ProductStore, StoredProduct, StoreRow
from indexer.integrity import seal
from indexer.live import LiveVersion
from indexer.manifest import IndexDirectory, Manifest
from indexer.readers import CatalogFormat, detect_format, read_catalog
from indexer.stores import open_lexical
from indexer.stores.ann_tuning import AUTO_APPROXIMATE, SearchWidth, configured_width, tuning_from
from indexer.stores.faiss_builder import TEXT_HASHES, VectorIndexBuilder
from indexer.stores.faiss_store import VectorKind
from indexer.validation import validate
from indexer.vectorfile import EmbeddingJournal, VectorFile, VectorLookup, VersionVectors, pack_keys
from shopfusion.artifacts import file_sha256
from shopfusion.backends import BackendRecord, choose_backend
from shopfusion.config import Settings
from shopfusion.encoders import Encoder, load_encoder
from shopfusion.errors import IndexStateError, ShopfusionError, ShrinkError, TooManyRejectsError
from shopfusion.types import Product, Reject
from workers.executor import EmbedBatch, Executor

log = logging.getLogger(__name__)
TEXT_HASHES_FILE = f"vectors/{TEXT_HASHES}"
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
    precomputed_vectors: int = 0
    total: int = 0
    rejects_file: str = ""
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    backend: str = ""
    """The encoder backend the vectors of this version come from (`torch`, `onnx`, `onnx-int8`)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase, in order: read, plan, embed, store, lexical, vectors, publish."""
    vector_index: dict[str, Any] = field(default_factory=dict)
    """The vector index kind and its search width (`SearchWidth.to_dict`: tuned, configured or default)."""

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
    vectors: str | os.PathLike[str] | None = None,
    allow_shrink: bool = False,
) -> IndexSummary:
    """Index a catalog into `index_dir` (created if needed) and return the run's summary.

    `replace=True` makes the catalog the whole truth: products missing from it are deleted. Otherwise
    products are upserted and the rest stay. `max_rejects` aborts the run, leaving the index unchanged,
    once more records than that are rejected. `vectors`: a vector file of precomputed vectors
    (`indexer.vectorfile`, made by `shopfusion embed` with the same model and backend); texts it holds
    are not embedded again. `allow_shrink` publishes even an empty version or one that drops more than
    `index.max_shrink` of the live products (otherwise `ShrinkError`).
    """
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    with directory.lock():
        run = _IndexRun(Path(catalog), directory, settings, rejects, max_rejects, replace, fmt, executor,
                        _Progress(progress), allow_shrink, Path(vectors) if vectors is not None else None)
        return run.execute()


class _IndexRun:
    def __init__(self, catalog: Path, directory: IndexDirectory, settings: Settings,
                 rejects: str | os.PathLike[str] | None, max_rejects: int | None, replace: bool,
                 fmt: CatalogFormat | None, executor: Executor | None, progress: _Progress,
                 allow_shrink: bool = False, precomputed: Path | None = None) -> None:
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
        self.precomputed = precomputed
        self.rejects_path = Path(rejects) if rejects else directory.path / "rejects.jsonl"
        self.summary = IndexSummary(catalog=str(catalog), index=str(directory.path),
                                    rejects_file=str(self.rejects_path))
        self.live = LiveVersion(directory, replace=replace)
        self.current = self.live.manifest
        self.repaired_ids: set[str] = set()
        """Incoming products counted `repaired` (their live record or vector was damaged)."""
        self.untrusted: set[str] = set()
        """Live products whose record or vector is damaged: their vector rows are never reused."""
        index = settings.index
        same_model = self.current is not None and self.current.model == index.model
        self.backend = choose_backend(index.backend, index.model, index.device, min_cosine=index.backend_min_cosine,
                                      index_backend=self.current.backend if same_model and self.current else None)
        self.encoder = load_encoder(index.model, index.device, self.backend)
        self.summary.backend = self.encoder.backend
        self.failed: dict[str, str] = {}
        self.failed_texts: dict[str, str] = {}

    def execute(self) -> IndexSummary:
        started = time.perf_counter()
        self.directory.staging.mkdir(parents=True, exist_ok=True)
        incoming_path = self.directory.staging / "incoming.sqlite"
        for leftover in (incoming_path, Path(str(incoming_path) + "-wal"), Path(str(incoming_path) + "-shm")):
            leftover.unlink(missing_ok=True)
        self.incoming = incoming = ProductStore(incoming_path)
        self.old_store: ProductStore | None = None
        old_store: ProductStore | None = None
        try:
            self.old_store = old_store = self.live.open_store()
            with self._phase("read"):
                self.read(incoming)
            with self._phase("plan"):
                needed = self.plan(incoming, old_store)
            with self._phase("embed"):
                self.embed(needed)
            built = self.build(incoming, old_store)
        finally:
            incoming.close()
            if old_store is not None:
                old_store.close()
        with self._phase("publish"):
            self.publish(*built)
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

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time a phase (added to `summary.phases`); its start and end are logged at DEBUG level, which is
        how a benchmark lines memory samples up with phases."""
        started = time.perf_counter()
        log.debug("phase %s: start", name)
        try:
            yield
        finally:
            self._add_time(name, time.perf_counter() - started)
            log.debug("phase %s: end", name)

    def _add_time(self, name: str, seconds: float) -> None:
        self.summary.phases[name] = round(self.summary.phases.get(name, 0.0) + seconds, 3)

    # -- phase 1: read and validate ------------------------------------------------------------------
    def read(self, incoming: ProductStore) -> None:
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejects_path.open("w", encoding="utf-8") as rejects, \
                self.progress.bar(None, f"reading {self.catalog.name}", "rec") as bar:
            pending: dict[str, StoredProduct] = {}
            valid = 0
            incoming.begin_bulk()
            for record in read_catalog(self.catalog, self.fmt):
                self.summary.read += 1
                bar.update(1)
                result = validate(record, self.settings.index.max_field_chars)
                if isinstance(result, Reject):
                    self._reject(rejects, result)
                    continue
                valid += 1
                pending[result.id] = StoredProduct(result, result.content_hash(), result.text_hash(),
                                                   record.source, record.line)
                if len(pending) >= STAGE_CHUNK:
                    incoming.write_many(pending.values())
                    pending.clear()
            incoming.write_many(pending.values())
            incoming.end_bulk()
        # A repeated id replaced its earlier record (the last one wins): whatever did not add a row.
        self.summary.duplicates = valid - incoming.count()

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
    def _reusable(self, old_store: ProductStore | None) -> bool:
        """Whether the live vectors can be reused: same weights, same backend and export."""
        return (old_store is not None and self.current is not None and self.current.model_id == self.encoder.model_id
                and self.current.backend_id == self.encoder.backend_id)

    def _old_vectors(self, old_store: ProductStore | None) -> VersionVectors | None:
        """The live version's vectors that pass their integrity check, when they can be reused; rows of
        damaged products or vectors are left out (those products are embedded again)."""
        if not self._reusable(old_store) or self.current is None or self.live.check is None:
            return None
        state = self.live.check.store()
        damaged = self.live.damaged_vectors(state.ids)
        if damaged is None:
            return None  # unreadable: every product is embedded again (said in the warnings)
        self.untrusted = damaged | self.live.damaged
        problems = self.live.check.file_problems("vectors/")
        return VersionVectors(self.directory.version_path(self.current.version) / "vectors", old_store,
                              exclude=self.untrusted, trust_text_hashes=TEXT_HASHES_FILE not in problems)

    def plan(self, incoming: ProductStore, old_store: ProductStore | None) -> _Needed:
        """Classify the incoming products (by SQL against the current version, then the few damaged ones
        by id), find which vectors are already known and intact, and return the texts still to embed,
        shortest first."""
        old_vectors = self._old_vectors(old_store)
        if old_store is not None:
            counts = incoming.compare(old_store)
            self.summary.added, self.summary.updated = counts["added"], counts["updated"]
            self.summary.unchanged = counts["unchanged"]
            self.summary.deleted = counts["missing"] if self.replace else 0
            self._classify_damaged(incoming, old_store, vectors_lost=old_vectors is None)
        else:
            self.summary.added = incoming.count()

        self.journal = EmbeddingJournal(self.directory.staging / "journal", vector_identity(self.encoder))
        sources: list[tuple[str, Any]] = []
        if old_vectors is not None:
            sources.append(("reused", old_vectors))
        sources.append(("resumed", self.journal.file))
        if self.precomputed is not None:
            precomputed = VectorFile(self.precomputed)
            precomputed.check(vector_identity(self.encoder), self.encoder.dim)
            sources.append(("precomputed", precomputed))
        self.lookup = VectorLookup(sources, self.encoder.dim)

        keys = incoming.text_hash_keys()
        if old_store is not None and not self.replace:
            keys = np.union1d(keys, old_store.text_hash_keys(not_in=incoming))
        where, _ = self.lookup.locate(keys)
        for i, (name, _) in enumerate(sources):
            setattr(self.summary, f"{name}_vectors", int(np.count_nonzero(where == i)))
        missing = set(keys[where < 0].tolist())
        stores = [incoming] + ([old_store] if old_store is not None and not self.replace else [])
        return _Needed.collect(missing, stores)

    def _classify_damaged(self, incoming: ProductStore, old_store: ProductStore, *, vectors_lost: bool) -> None:
        """Move the products whose live record (or, same content, live vector) is damaged from what the SQL
        comparison counted them as to `repaired`; a damaged record the catalog lacks is not `deleted`, and
        stops an additive run (it would be lost)."""
        damaged_records = self.live.damaged
        suspects = set(damaged_records) | self.untrusted
        if vectors_lost and self._reusable(old_store) and self.live.check is not None:
            suspects |= set(self.live.check.store().ids)  # the live vectors cannot be read at all
        if not suspects:
            return
        ordered = sorted(suspects)
        new = incoming.hashes_of(ordered)
        old = old_store.hashes_of(ordered)
        for pid in ordered:
            if pid not in new:
                if pid in damaged_records and pid in old and self.replace:
                    self.summary.deleted -= 1  # compared as missing; it is simply not carried forward
                continue
            if pid not in old:
                continue  # counted `added`
            counted = "unchanged" if old[pid][0] == new[pid][0] else "updated"
            if pid in damaged_records or counted == "unchanged":
                setattr(self.summary, counted, getattr(self.summary, counted) - 1)
                self.summary.repaired += 1
                self.repaired_ids.add(pid)
        if not self.replace:
            lost = sorted(pid for pid in damaged_records if pid not in new)
            if lost:
                raise IndexStateError(
                    f"{len(lost)} product(s) of the live version are damaged and not in this catalog (e.g."
                    f" {lost[:5]}): run `shopfusion verify --index {self.directory.path} --repair` (rebuilds them"
                    " from the catalogs the index was built from), or index a catalog that holds them")

    # -- phase 3: embed -----------------------------------------------------------------------------
    def embed(self, needed: _Needed) -> None:
        if not len(needed):
            return
        executor = self.executor or _default_executor(self.settings, self.directory)
        failed_keys: dict[str, str] = {}
        with self.progress.bar(len(needed), f"embedding with {self.settings.index.model}", "text") as bar:
            for result in executor.map(self.settings.index.model, needed.batches(), backend=self.backend):
                if result.ok and result.vectors is not None:
                    self.journal.append(result.batch_id, result.keys, result.vectors)
                    self.summary.embedded += len(result.keys)
                else:
                    failed_keys.update(dict.fromkeys(result.keys, result.error or "embedding failed"))
                bar.update(len(result.keys))
        if self.executor is None:
            executor.close()
        self.failed_texts = failed_keys

    # -- phase 4: build ------------------------------------------------------------------------------
    def build(self, incoming: ProductStore, old_store: ProductStore | None) -> tuple[Path, Manifest, Any]:
        version = self.directory.next_version()
        self.summary.version = version
        build = self.directory.staging / "version"
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
        store = ProductStore(build / "products.sqlite")
        rejects = self.rejects_path.open("a", encoding="utf-8")
        builder: VectorIndexBuilder | None = None
        try:
            with self._phase("store"):
                self._fill_store(store, incoming, old_store, rejects)
            count = store.count()
            self._check_shrink(count, version)
            kind = self._vector_kind(count)
            started = time.perf_counter()
            lexical = open_lexical(self.settings, build, version, self.directory.namespace, create=True)
            lexical.plan_attribute_fields(store.attribute_counts)
            self._add_time("lexical", time.perf_counter() - started)
            tuning = tuning_from(self.settings, kind)
            builder = VectorIndexBuilder(build / "vectors", dim=self.encoder.dim, kind=kind, expected=count,
                                         hnsw_m=self.settings.index.hnsw_m,
                                         ef_search=self.settings.index.hnsw_ef_search,
                                         nprobe=self.settings.index.ivf_nprobe, tuning=tuning,
                                         encode_queries=self.encoder.encode if tuning else None)
            lexical_failed: dict[str, str] = {}
            attributes = CatalogBuilder()
            loop_started = time.perf_counter()
            spent = 0.0
            with self.progress.bar(count, "building indexes", "doc") as bar:
                for chunk in _chunks(store.iter_stored(), STAGE_CHUNK):
                    started = time.perf_counter()
                    report = lexical.upsert(s.product for s in chunk)
                    lexical_seconds = time.perf_counter() - started
                    ok = [s for s in chunk if s.product.id not in report.failed]
                    for s in chunk:
                        if s.product.id in report.failed:
                            lexical_failed[s.product.id] = report.failed[s.product.id]
                            self._fail((s.product.id, s.content_hash, s.text_hash,
                                        json.dumps(s.product.to_dict(), ensure_ascii=False), s.source, s.line),
                                       f"lexical index refused it: {report.failed[s.product.id]}", rejects=rejects)
                    started = time.perf_counter()
                    if ok:
                        builder.add([s.product for s in ok], self.lookup.fetch([s.text_hash for s in ok]),
                                    [s.text_hash for s in ok])
                        attributes.add_all(s.product for s in ok)
                    vector_seconds = time.perf_counter() - started
                    self._add_time("lexical", lexical_seconds)
                    self._add_time("vectors", vector_seconds)
                    spent += lexical_seconds + vector_seconds
                    bar.update(len(chunk))
            self._add_time("store", time.perf_counter() - loop_started - spent)  # reading products back
            with self._phase("store"):
                attributes.build().save(build / CATALOG_FILE)
                if lexical_failed:
                    store.delete(lexical_failed)
                total = store.count()
                store.checkpoint()
            with self._phase("lexical"):
                lexical.commit()
            with self._phase("vectors"):
                vectors = builder.commit()
            width = builder.width if tuning else configured_width(self.settings, kind)
            self._record_width(width, builder.seconds)
        finally:
            if builder is not None:
                builder.abort()
            store.close()
            rejects.close()
        self.summary.total = total
        try:
            self._check_shrink(total, version)
        except ShrinkError:
            if self.settings.index.lexical != "tantivy":
                lexical.drop()
            raise
        with self._phase("publish"):
            files = seal(build)
        manifest = Manifest(
            version=version,
            model=self.settings.index.model,
            model_id=self.encoder.model_id,
            dim=self.encoder.dim,
            lexical=self._lexical_info(version),
            vector={"kind": kind, "hnsw_m": self.settings.index.hnsw_m, "search": self.summary.vector_index},
            counts={"products": total, "lexical": lexical.count(), "vectors": vectors.count()},
            catalogs=self._catalogs(),
            files=files,
            backend=self.encoder.backend,
            backend_id=self.encoder.backend_id,
            backend_agreement=BackendRecord.of(self.encoder).agreement,
        )
        return build, manifest, lexical

    # -- phase 5: publish ----------------------------------------------------------------------------
    def publish(self, build: Path, manifest: Manifest, lexical: Any) -> None:
        self.directory.publish(build, manifest)
        lexical.activate()
        lexical.close()
        shutil.rmtree(self.directory.staging, ignore_errors=True)
        for version in self.directory.prune(self.settings.index.keep_versions):
            self._drop_lexical(version)

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

    def _fill_store(self, store: ProductStore, incoming: ProductStore, old_store: ProductStore | None,
                    rejects: IO[str]) -> None:
        """The new version's products: the old ones (unless replacing) overlaid with the incoming ones,
        copied inside SQLite. A damaged live record is never copied. A product whose text could not be
        embedded keeps its old version, or is left out when new (an embedding failure, not a reject); a
        product kept from the old version whose vector is unknown (another model, embedding failed) is
        left out, said in `failures` and `left_out`."""
        failed_texts = self.failed_texts
        damaged = self.live.damaged
        if old_store is not None and not self.replace:
            old_store.checkpoint()
            store.copy_from(old_store)
            store.delete(damaged)
        keep_old: list[str] = []
        for row in incoming.rows_with_text(failed_texts):
            self._fail(row, f"embedding failed: {failed_texts[row[2]]}", "embedding_failed")
            keep_old.append(row[0])
        store.copy_from(incoming, skip_text_hashes=failed_texts)
        if self.replace and old_store is not None and keep_old:
            store.write_rows(old_store.rows_of([pid for pid in keep_old if pid not in damaged]))
        if old_store is not None:
            unknown: list[str] = []
            for keys in store.iter_keys():
                where, _ = self.lookup.locate([text_hash for _, text_hash in keys])
                unknown.extend(pid for (pid, _), source in zip(keys, where, strict=True) if source < 0)
            for pid, (_, text_hash) in old_store.hashes_of(unknown).items():
                if not incoming.contains(pid):
                    self.failed[pid] = (f"kept from the live version but not embedded:"
                                        f" {failed_texts.get(text_hash, 'no vector')}")
                    self.summary.left_out += 1
            store.delete(unknown)

    def _fail(self, row: StoreRow, reason: str, outcome: str = "rejected", rejects: IO[str] | None = None) -> None:
        """A staged product that could not be indexed, counted once: a reject (with its line, written to
        the rejects file) or an embedding failure (in `failures` only: not the catalog's fault). Products
        kept from the current version (not read in this run) are left out of the counts."""
        pid, content_hash, _, doc, source, line = row
        if pid in self.failed or not self.incoming.contains(pid):
            return
        if pid in self.repaired_ids:
            state = "repaired"
        else:
            old = self.old_store.hashes_of([pid]).get(pid) if self.old_store is not None else None
            state = "added" if old is None else ("unchanged" if old[0] == content_hash else "updated")
        setattr(self.summary, state, getattr(self.summary, state) - 1)
        setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
        self.failed[pid] = reason
        if rejects is not None:
            rejects.write(json.dumps(Reject(source or self.summary.catalog, line or 0, reason, doc).to_dict(),
                                     ensure_ascii=False) + "\n")

    def _vector_kind(self, count: int) -> VectorKind:
        kind = self.settings.index.vector_index
        if kind == "auto":
            return AUTO_APPROXIMATE if count > self.settings.index.hnsw_threshold else "flat"
        return kind

    def _record_width(self, width: SearchWidth, seconds: Mapping[str, float]) -> None:
        """The search width of the new version, into the summary (and from there the manifest) and the log."""
        self.summary.vector_index = width.to_dict()
        if "tuning" in seconds:  # with encoding the pseudo-queries; part of the `vectors` phase
            self.summary.vector_index["seconds"] = seconds["tuning"]
        log.info("vector index: %s", width.describe())
        if not width.reached:
            self.summary.warnings.append(
                f"the vector index reaches recall@10 {width.recall} of exact search at its widest allowed"
                f" {width.parameter} ({width.value}), under index.ann_target_recall = {width.target}: raise"
                " index.ann_max_width, or use another index.vector_index")

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


def vector_identity(encoder: Encoder) -> str:
    """What vectors are valid for: the model id, plus the backend and export checksum for ONNX backends
    (torch vectors keep the bare model id, as before there were backends)."""
    if encoder.backend_id in ("torch", "hash"):
        return encoder.model_id
    return f"{encoder.model_id} {encoder.backend_id}"


@dataclass(frozen=True)
class _Needed:
    """The texts to embed, as small arrays (length, text hash, store, row id), shortest text first:
    batches fetch their texts from the stores as the executor asks for them."""

    lengths: np.ndarray
    keys: np.ndarray
    store: np.ndarray
    rowids: np.ndarray
    stores: tuple[ProductStore, ...]

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def collect(cls, missing: set[bytes], stores: Sequence[ProductStore]) -> _Needed:
        lengths: list[int] = []
        keys: list[bytes] = []
        where: list[int] = []
        rowids: list[int] = []
        for index, store in enumerate(stores):
            if not missing:
                break
            for rows in store.iter_text_rows(STAGE_CHUNK):
                for rowid, text_hash, doc in rows:
                    key = text_hash.encode("ascii")
                    if key in missing:
                        missing.discard(key)
                        lengths.append(len(Product.from_dict(json.loads(doc)).embedding_text()))
                        keys.append(key)
                        where.append(index)
                        rowids.append(rowid)
        order = np.lexsort((np.array(keys, dtype="S32"), np.array(lengths, dtype=np.int64)))
        return cls(np.array(lengths, dtype=np.int64)[order], pack_keys(keys)[order] if keys else pack_keys([]),
                   np.array(where, dtype=np.int64)[order], np.array(rowids, dtype=np.int64)[order], tuple(stores))

    def batches(self) -> Iterator[EmbedBatch]:
        """Executor batches of `EMBED_BATCH` texts, in length order (less padding per encoder batch)."""
        for start in range(0, len(self.keys), EMBED_BATCH):
            end = start + EMBED_BATCH
            keys = tuple(k.decode("ascii") for k in self.keys[start:end])
            texts: list[str] = []
            products: dict[tuple[int, int], Product] = {}
            for index, store in enumerate(self.stores):
                mine = self.rowids[start:end][self.store[start:end] == index]
                if len(mine):
                    products.update({(index, r): p for r, p in store.docs_by_rowid(mine.tolist()).items()})
            for index, rowid in zip(self.store[start:end].tolist(), self.rowids[start:end].tolist(), strict=True):
                texts.append(products[(index, rowid)].embedding_text())
            yield EmbedBatch(f"{start // EMBED_BATCH:06d}-{keys[0][:8]}", keys, tuple(texts))


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

