"""The ingest pipeline end to end with the hashing encoder: counts, incremental runs, rejects, resume."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.manifest import IndexDirectory
from indexer.pipeline import run_index
from indexer.stores.faiss_store import FaissVectorIndex
from indexer.verify import verify_index
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, TooManyRejectsError
from tests.plugins.catalogs import TINY, write_jsonl
from workers.executor import EmbedBatch, EmbedResult, LocalExecutor


class CountingExecutor(LocalExecutor):
    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.texts: list[str] = []

    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        batches = list(batches)
        for batch in batches:
            self.texts.extend(batch.texts)
        return super().map(model, batches, backend=backend)

def assert_vectors_match_a_plain_run(catalog: Path, index_dir: Path, version: str, settings: Settings) -> None:
    """The vectors of `version` in `index_dir` equal those of a plain run over the same catalog (built
    beside it, in `ref`): resuming or precomputing changes where vectors come from, never what they are."""
    reference = run_index(catalog, index_dir.parent / "ref", settings=settings)
    a = FaissVectorIndex(index_dir / "versions" / version / "vectors")
    b = FaissVectorIndex(index_dir.parent / "ref" / "versions" / reference.version / "vectors")
    assert a.ordered_ids() == b.ordered_ids()
    np.testing.assert_allclose(np.stack(list(a.vectors(a.ordered_ids()).values())),
                               np.stack(list(b.vectors(b.ordered_ids()).values())), atol=1e-6)



class FailingExecutor(LocalExecutor):
    """Fails every batch holding a text with the word `poison`."""

    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        for batch in batches:
            if any("poison" in t for t in batch.texts):
                yield EmbedResult(batch.batch_id, batch.keys, None, error="RuntimeError: poisoned")
            else:
                yield from super().map(model, [batch], backend=backend)


def _records() -> list[dict]:
    return [p.to_dict() for p in TINY]


def test_first_run_counts_add_up(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    summary = run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)
    assert (summary.read, summary.added, summary.rejected, summary.total) == (12, 12, 0, 12)
    assert summary.embedded == 12 and summary.balanced
    assert verify_index(tmp_path / "idx", hash_settings).ok
    manifest = IndexDirectory(tmp_path / "idx").read_manifest()
    assert manifest.counts == {"products": 12, "lexical": 12, "vectors": 12}
    assert manifest.model_id == "hash:32" and manifest.dim == 32
    assert manifest.catalogs[-1]["sha256"]


def test_rerun_is_incremental(tmp_path: Path, hash_settings: Settings) -> None:
    records = _records()
    catalog = write_jsonl(tmp_path / "c.jsonl", records)
    run_index(catalog, tmp_path / "idx", settings=hash_settings)
    records[0]["price"] = 1.0                      # content changes, text does not: no re-embedding
    records[1]["title"] = "Bosch hammer drill 800W"  # text changes: re-embedded
    records.append({"id": "p13", "title": "Wheelbarrow"})
    write_jsonl(catalog, records)
    executor = CountingExecutor()
    summary = run_index(catalog, tmp_path / "idx", settings=hash_settings, executor=executor)
    assert (summary.added, summary.updated, summary.unchanged) == (1, 2, 10)
    assert summary.embedded == 2 and summary.reused_vectors >= 11
    assert sorted(executor.texts) == sorted([t for t in executor.texts if "800W" in t or "Wheelbarrow" in t])
    assert summary.total == 13 and summary.version == "v000002"


def test_duplicates_last_one_wins(tmp_path: Path, hash_settings: Settings) -> None:
    records = _records() + [{"id": "p01", "title": "Replacement title"}]
    catalog = write_jsonl(tmp_path / "c.jsonl", records)
    summary = run_index(catalog, tmp_path / "idx", settings=hash_settings)
    assert summary.duplicates == 1 and summary.added == 12 and summary.read == 13 and summary.balanced
    from ranker.searcher import HybridSearcher

    searcher = HybridSearcher(tmp_path / "idx", hash_settings)
    assert searcher.store.get_many(["p01"])["p01"].title == "Replacement title"


def test_rejects_are_written_and_counted(tmp_path: Path, hash_settings: Settings) -> None:
    catalog = tmp_path / "c.jsonl"
    catalog.write_text(json.dumps({"id": "a", "title": "Drill"}) + "\nnot json\n"
                       + json.dumps({"id": "b"}) + "\n" + json.dumps({"id": "c", "title": "Hose"}) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    summary = run_index(catalog, tmp_path / "idx", settings=hash_settings, rejects=rejects)
    assert (summary.read, summary.added, summary.rejected) == (4, 2, 2) and summary.balanced
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["raw"]) for r in lines] == [(2, "not json"), (3, json.dumps({"id": "b"}))]
    assert all(r["reason"] and r["source"].endswith("c.jsonl") for r in lines)


def test_max_rejects_fails_and_leaves_index_unchanged(tmp_path: Path, tiny_catalog: Path,
                                                      hash_settings: Settings) -> None:
    run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)
    before = (tmp_path / "idx" / "manifest.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "title": "New"}) + "\n" + "garbage\n" * 3)
    with pytest.raises(TooManyRejectsError, match="index is unchanged"):
        run_index(bad, tmp_path / "idx", settings=hash_settings, max_rejects=2)
    assert (tmp_path / "idx" / "manifest.json").read_text() == before
    assert verify_index(tmp_path / "idx", hash_settings).ok
    summary = run_index(bad, tmp_path / "idx", settings=hash_settings, max_rejects=3)
    assert summary.rejected == 3 and summary.added == 1


def test_replace_deletes_missing_products(tmp_path: Path, hash_settings: Settings) -> None:
    catalog = write_jsonl(tmp_path / "c.jsonl", _records())
    run_index(catalog, tmp_path / "idx", settings=hash_settings)
    write_jsonl(catalog, _records()[:5])
    summary = run_index(catalog, tmp_path / "idx", settings=hash_settings, replace=True, allow_shrink=True)
    assert summary.deleted == 7 and summary.total == 5 and summary.unchanged == 5
    additive = run_index(write_jsonl(tmp_path / "d.jsonl", [{"id": "z", "title": "Rake"}]), tmp_path / "idx",
                         settings=hash_settings)
    assert additive.total == 6 and additive.deleted == 0


def test_embedding_failures_are_rejected_not_lost(tmp_path: Path, hash_settings: Settings) -> None:
    import indexer.pipeline as pipeline

    records = _records() + [{"id": "bad", "title": "poison pill"}]
    catalog = write_jsonl(tmp_path / "c.jsonl", records)
    old = pipeline.EMBED_BATCH
    pipeline.EMBED_BATCH = 1
    try:
        summary = run_index(catalog, tmp_path / "idx", settings=hash_settings, executor=FailingExecutor())
    finally:
        pipeline.EMBED_BATCH = old
    assert summary.embedding_failed == 1 and summary.rejected == 0 and summary.added == 12 and summary.balanced
    assert "poisoned" in summary.failures["bad"]
    assert "bad" not in (tmp_path / "idx" / "rejects.jsonl").read_text()  # not the catalog's fault
    assert verify_index(tmp_path / "idx", hash_settings).ok


def test_old_versions_are_pruned(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    for _ in range(4):
        run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)
    versions = sorted(p.name for p in (tmp_path / "idx" / "versions").iterdir())
    assert versions == ["v000003", "v000004"]
    assert not (tmp_path / "idx" / "staging").exists()


def test_concurrent_run_is_refused(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    directory = IndexDirectory(tmp_path / "idx")
    with directory.lock(), pytest.raises(IndexStateError, match="another indexing run"):
        run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)


def test_model_change_reembeds_everything(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings)
    other = hash_settings.replace("index", model="hash:16")
    summary = run_index(tiny_catalog, tmp_path / "idx", settings=other)
    assert summary.embedded == 12 and summary.reused_vectors == 0
    assert FaissVectorIndex(tmp_path / "idx" / "versions" / summary.version / "vectors").dim == 16


def test_resume_reuses_journal(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    """A journal left by a killed run is read back: those texts are not embedded again."""
    from indexer.docstore import EmbeddingJournal
    from shopfusion.encoders import load_encoder

    encoder = load_encoder("hash:32")
    journal = EmbeddingJournal(tmp_path / "idx" / "staging" / "journal", encoder.model_id)
    first = TINY[:5]
    journal.append("000000-x", [p.text_hash() for p in first], encoder.encode([p.embedding_text() for p in first]))
    executor = CountingExecutor()
    summary = run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings, executor=executor)
    assert summary.resumed_vectors == 5 and summary.embedded == 7 and len(executor.texts) == 7
    assert_vectors_match_a_plain_run(tiny_catalog, tmp_path / "idx", summary.version, hash_settings)
