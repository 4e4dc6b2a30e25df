"""Precomputed vectors: embed a catalog into a vector file ahead of indexing, in resumable chunks.

Why: on a CPU the encoder is nearly the whole cost of indexing a large catalog (hours for a million
products on two cores). `embed_catalog` does that part on its own schedule, in as many sittings as it
takes (`max_texts` per call; every finished batch is appended to the file, so a killed or stopped run
resumes where it stopped), on the in-process executor or on Celery workers, and
`run_index(..., vectors=DIR)` (`shopfusion index --vectors DIR`) then embeds only what the file lacks.
The file is keyed by text hash and names the encoder (model id, backend, export checksum) that made it;
an index built with another encoder refuses it.

The catalog is read as a stream, in windows of `window` records: the texts of a window that the file
lacks are de-duplicated, sorted by length (less padding per batch) and embedded; memory is bounded by
the window, not the catalog.

    shopfusion embed catalog.jsonl --out vectors/ --max-texts 100000   # repeat until `remaining` is 0
    shopfusion index catalog.jsonl --index idx/ --vectors vectors/
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from indexer.readers import CatalogFormat, read_catalog
from indexer.validation import validate
from indexer.vectorfile import IDENTITY_FILE, VectorFile
from shopfusion.config import Settings
from shopfusion.errors import ConfigError
from shopfusion.types import Product
from workers.executor import EmbedBatch, Executor

WINDOW = 200_000
BATCH = 512


@dataclass
class EmbedSummary:
    """What one `embed_catalog` call did; `remaining` is 0 once the file holds every text."""

    catalog: str
    out: str
    identity: str = ""
    backend: str = ""
    records: int = 0
    texts: int = 0
    """Distinct valid texts seen (a window's duplicates count once)."""
    already: int = 0
    embedded: int = 0
    failed: int = 0
    remaining: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return round(self.embedded / self.embed_seconds, 1) if self.embed_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "texts_per_second": self.texts_per_second}


def embed_catalog(catalog: str | os.PathLike[str], out: str | os.PathLike[str], *, settings: Settings | None = None,
                  fmt: CatalogFormat | None = None, executor: Executor | None = None,
                  max_texts: int | None = None, window: int = WINDOW, progress: bool = False) -> EmbedSummary:
    """Append the vectors of `catalog`'s texts that `out` lacks (at most `max_texts` this call)."""
    from indexer.pipeline import vector_identity
    from shopfusion.backends import choose_backend
    from shopfusion.encoders import load_encoder

    started = time.perf_counter()
    settings = settings or Settings()
    index = settings.index
    backend = choose_backend(index.backend, index.model, index.device, min_cosine=index.backend_min_cosine)
    encoder = load_encoder(index.model, index.device, backend)
    identity = vector_identity(encoder)
    target = Path(out)
    existing = VectorFile(target) if (target / IDENTITY_FILE).is_file() else None
    if existing is not None and existing.identity != identity:
        raise ConfigError(f"{target} holds vectors of {existing.identity!r}, not {identity!r}: choose another"
                          " --out directory (or delete that one)")
    vectors = VectorFile(target, identity=identity, dim=encoder.dim, create=True)
    summary = EmbedSummary(str(catalog), str(target), identity, encoder.backend)
    own = executor is None
    if executor is None:
        from workers import make_executor

        executor = make_executor(settings, target)
    budget = max_texts if max_texts is not None else -1
    from tqdm.auto import tqdm

    with tqdm(desc=f"embedding {Path(catalog).name}", unit="text", disable=not progress, leave=False) as bar:
        for number, texts in enumerate(_windows(Path(catalog), fmt, window, index.max_field_chars, summary)):
            found = vectors.find(list(texts))
            missing = {k: t for (k, t), row in zip(texts.items(), found, strict=True) if row < 0}
            summary.texts += len(texts)
            summary.already += len(texts) - len(missing)
            if budget == 0 or not missing:
                summary.remaining += len(missing)
                continue
            ordered = sorted(missing.items(), key=lambda item: (len(item[1]), item[0]))
            if budget > 0:
                summary.remaining += max(0, len(ordered) - budget)
                ordered = ordered[:budget]
            batches = [EmbedBatch(f"w{number:04d}-{i // BATCH:06d}-{ordered[i][0][:8]}",
                                  tuple(k for k, _ in ordered[i:i + BATCH]), tuple(t for _, t in ordered[i:i + BATCH]))
                       for i in range(0, len(ordered), BATCH)]
            embed_started = time.perf_counter()
            for result in executor.map(index.model, batches, backend=backend):
                if result.ok and result.vectors is not None:
                    vectors.append(result.keys, result.vectors)
                    summary.embedded += len(result.keys)
                else:
                    summary.failed += len(result.keys)
                bar.update(len(result.keys))
            summary.embed_seconds += time.perf_counter() - embed_started
            if budget > 0:
                budget = max(0, budget - len(ordered))
    if own:
        executor.close()
    summary.embed_seconds = round(summary.embed_seconds, 3)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _windows(catalog: Path, fmt: CatalogFormat | None, window: int, max_field_chars: int,
             summary: EmbedSummary) -> Iterator[dict[str, str]]:
    """{text hash: text} of the valid records, `window` records at a time (rejects are skipped here: the
    indexing run reports them)."""
    texts: dict[str, str] = {}
    records = 0
    for record in read_catalog(catalog, fmt):
        summary.records += 1
        records += 1
        product = validate(record, max_field_chars)
        if isinstance(product, Product):
            text = product.embedding_text()
            texts.setdefault(product.text_hash(), text)
        if records >= window:
            yield texts
            texts, records = {}, 0
    if texts:
        yield texts
