"""The ingest pipeline: catalog -> validated products -> both indexes -> an atomically published version.

`run_index` reads as its phases: `read` (stream, validate, write rejects, stage products), `plan` (compare
with the current version: added, updated, unchanged, deleted; which texts need embedding), `embed`
(batches through an executor, each finished batch journaled), `build` (a new version of the product store
and both legs, in id order) and `publish` (manifest switch, old versions pruned). `IndexSummary.phases`
says how long each took (`read`, `plan`, `embed`, `store`, `lexical`, `vectors`, `publish`).

Crash safety: nothing is published before the last phase, so an interrupted run leaves the current
version as it was. Every finished embedding batch is journaled under `staging/`, so the next run embeds
only what is still missing, and it rebuilds the version from scratch, so the result equals that of an
uninterrupted run.

Memory does not grow with the catalog beyond a few small values per product: products are staged in
SQLite (compared with the current version by SQL joins), vectors live in flat files keyed by text hash
(`indexer.vectorfile`: this run's journal, the current version's vectors, a precomputed vector file)
and are read back chunk by chunk while the new version streams to disk (`VectorIndexBuilder`).
A text whose vector is already known from any of those is never embedded again.

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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from indexer.docstore import ProductStore, StoredProduct, StoreRow
from indexer.manifest import IndexDirectory, Manifest, file_sha256
from indexer.readers import CatalogFormat, read_catalog
from indexer.stores import open_lexical
from indexer.stores.faiss_builder import VectorIndexBuilder
from indexer.stores.faiss_store import VectorKind
from indexer.validation import validate
from indexer.vectorfile import EmbeddingJournal, VectorFile, VectorLookup, VersionVectors, pack_keys
from shopfusion.backends import BackendRecord, choose_backend
from shopfusion.config import Settings
from shopfusion.encoders import Encoder, load_encoder
from shopfusion.errors import IndexStateError, ShopfusionError, TooManyRejectsError
from shopfusion.types import Product, Reject
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
    precomputed_vectors: int = 0
    total: int = 0
    rejects_file: str = ""
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    backend: str = ""
    """The encoder backend the vectors of this version come from (`torch`, `onnx`, `onnx-int8`)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase, in order: read, plan, embed, store, lexical, vectors, publish."""

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
    vectors: str | os.PathLike[str] | None = None,
) -> IndexSummary:
    """Index a catalog into `index_dir` (created if needed) and return the run's summary.

    `replace=True` makes the catalog the whole truth: products missing from it are deleted. Otherwise
    products are upserted and the rest stay. `max_rejects` aborts the run, leaving the index unchanged,
    once more records than that are rejected. `vectors`: a vector file of precomputed vectors
    (`indexer.vectorfile`, made by `shopfusion embed` with the same model and backend); texts it holds
    are not embedded again.
    """
    settings = settings or Settings()
    directory = IndexDirectory(index_dir)
    with directory.lock():
        run = _IndexRun(Path(catalog), directory, settings, rejects, max_rejects, replace, fmt, executor,
                        _Progress(progress), Path(vectors) if vectors is not None else None)
        return run.execute()


class _IndexRun:
    def __init__(self, catalog: Path, directory: IndexDirectory, settings: Settings,
                 rejects: str | os.PathLike[str] | None, max_rejects: int | None, replace: bool,
                 fmt: CatalogFormat | None, executor: Executor | None, progress: _Progress,
                 precomputed: Path | None = None) -> None:
        self.catalog = catalog
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
        self.current = directory.current()
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
        self.old_store = old_store = self._old_store()
        try:
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
    def _old_store(self) -> ProductStore | None:
        if self.current is None:
            return None
        path = self.directory.version_path(self.current.version) / "products.sqlite"
        if not path.is_file():
            raise IndexStateError(f"the current version {self.current.version} has no product store:"
                                  " run `shopfusion verify` and rebuild the index")
        return ProductStore(path)

    def _old_vectors(self, old_store: ProductStore | None) -> VersionVectors | None:
        """The current version's vectors when they can be reused: same weights, same backend and export."""
        if (old_store is None or self.current is None or self.current.model_id != self.encoder.model_id
                or self.current.backend_id != self.encoder.backend_id):
            return None
        return VersionVectors(self.directory.version_path(self.current.version) / "vectors", old_store)

    def plan(self, incoming: ProductStore, old_store: ProductStore | None) -> _Needed:
        """Classify the incoming products (by SQL against the current version), find which vectors are
        already known, and return the texts still to embed, shortest first."""
        if old_store is not None:
            counts = incoming.compare(old_store)
            self.summary.added, self.summary.updated = counts["added"], counts["updated"]
            self.summary.unchanged = counts["unchanged"]
            self.summary.deleted = counts["missing"] if self.replace else 0
        else:
            self.summary.added = incoming.count()

        self.journal = EmbeddingJournal(self.directory.staging / "journal", vector_identity(self.encoder))
        sources: list[tuple[str, Any]] = []
        old_vectors = self._old_vectors(old_store)
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
            kind = self._vector_kind(count)
            started = time.perf_counter()
            lexical = open_lexical(self.settings, build, version, self.directory.namespace, create=True)
            self._add_time("lexical", time.perf_counter() - started)
            builder = VectorIndexBuilder(build / "vectors", dim=self.encoder.dim, kind=kind, expected=count,
                                         hnsw_m=self.settings.index.hnsw_m,
                                         ef_search=self.settings.index.hnsw_ef_search,
                                         nprobe=self.settings.index.ivf_nprobe)
            lexical_failed: dict[str, str] = {}
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
                            self._fail(rejects, (s.product.id, s.content_hash, s.text_hash,
                                                 json.dumps(s.product.to_dict(), ensure_ascii=False),
                                                 s.source, s.line),
                                       f"lexical index refused it: {report.failed[s.product.id]}")
                    started = time.perf_counter()
                    if ok:
                        builder.add([s.product for s in ok], self.lookup.fetch([s.text_hash for s in ok]),
                                    [s.text_hash for s in ok])
                    vector_seconds = time.perf_counter() - started
                    self._add_time("lexical", lexical_seconds)
                    self._add_time("vectors", vector_seconds)
                    spent += lexical_seconds + vector_seconds
                    bar.update(len(chunk))
            self._add_time("store", time.perf_counter() - loop_started - spent)  # reading products back
            with self._phase("store"):
                if lexical_failed:
                    store.delete(lexical_failed)
                total = store.count()
                store.checkpoint()
            with self._phase("lexical"):
                lexical.commit()
            with self._phase("vectors"):
                vectors = builder.commit()
        finally:
            if builder is not None:
                builder.abort()
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

    def _fill_store(self, store: ProductStore, incoming: ProductStore, old_store: ProductStore | None,
                    rejects: IO[str]) -> None:
        """The new version's products: the old ones (unless replacing) overlaid with the incoming ones,
        copied inside SQLite. A product whose text could not be embedded keeps its old version, or is
        rejected when new; a product kept from the old version whose vector is unknown (another model,
        embedding failed) is left out."""
        failed_texts = self.failed_texts
        if old_store is not None and not self.replace:
            old_store.checkpoint()
            store.copy_from(old_store)
        keep_old: list[str] = []
        for row in incoming.rows_with_text(failed_texts):
            self._fail(rejects, row, f"embedding failed: {failed_texts[row[2]]}")
            keep_old.append(row[0])
        store.copy_from(incoming, skip_text_hashes=failed_texts)
        if self.replace and old_store is not None and keep_old:
            store.write_rows(old_store.rows_of(keep_old))
        if old_store is not None:
            unknown: list[str] = []
            for keys in store.iter_keys():
                where, _ = self.lookup.locate([text_hash for _, text_hash in keys])
                unknown.extend(pid for (pid, _), source in zip(keys, where, strict=True) if source < 0)
            store.delete(unknown)

    def _fail(self, rejects: IO[str], row: StoreRow, reason: str) -> None:
        """A staged product that could not be indexed: rejected with its line, counted once. Products
        kept from the current version (not read in this run) are left out of the counts."""
        pid, content_hash, _, doc, source, line = row
        if pid in self.failed or not self.incoming.contains(pid):
            return
        old = self.old_store.hashes_of([pid]).get(pid) if self.old_store is not None else None
        state = "added" if old is None else ("unchanged" if old[0] == content_hash else "updated")
        setattr(self.summary, state, getattr(self.summary, state) - 1)
        self.summary.rejected += 1
        self.failed[pid] = reason
        rejects.write(json.dumps(Reject(source or self.summary.catalog, line or 0, reason, doc).to_dict(),
                                 ensure_ascii=False) + "\n")

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

