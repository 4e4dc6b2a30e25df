"""Kill the indexing process with SIGKILL in every phase of a run; every restart must end with an index
equal to an uninterrupted run, and the index must never be half-published in between.

The process kills itself at a moment the test names (`tests/indexer/crash_target.py`: after N records
read, after the N-th journaled batch, at the N-th vector upsert, between the version's move and the
manifest switch, after the switch): a timer would land elsewhere on a busy machine than on an idle one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.manifest import IndexDirectory
from indexer.pipeline import run_index
from indexer.stores.faiss_store import FaissVectorIndex
from indexer.verify import verify_index
from ranker.searcher import HybridSearcher
from shopfusion.config import Settings
from tests.plugins.catalogs import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings().replace("index", model="hash:32")
WORDS = ["drill", "hose", "lamp", "hammer", "saw", "paint", "brush", "ladder", "glove", "tile", "valve", "pipe"]


def _catalog(path: Path, n: int, variant: int = 0) -> Path:
    records = []
    for i in range(n):
        shift = variant if i % 4 == 0 else 0
        words = " ".join(WORDS[(i * k + shift) % len(WORDS)] for k in (1, 3, 7))
        records.append({"id": f"sku{i:05d}", "title": f"{words} model {i} v{shift}",
                        "brand": f"brand{i % 13}", "category_path": [f"cat{i % 5}", f"sub{i % 11}"],
                        "price": float(i % 97)})
    return write_jsonl(path, records)


def _run(catalog: Path, index_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tests.indexer.crash_target", str(catalog), str(index_dir),
                           *([kill_at] if kill_at else [])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def _snapshot(index_dir: Path) -> tuple[list[str], np.ndarray, list[list[str]]]:
    manifest = IndexDirectory(index_dir).read_manifest()
    vectors = FaissVectorIndex(index_dir / "versions" / manifest.version / "vectors")
    ids = vectors.ordered_ids()
    matrix = np.stack([vectors.vectors(ids)[i] for i in ids])
    searcher = HybridSearcher(index_dir, SETTINGS)
    results = [[h.product_id for h in searcher.search(q, k=10).hits] for q in ("drill hose", "ladder", "pipe valve")]
    searcher.close()
    return ids, matrix, results


def _kill_then_finish(catalog: Path, index_dir: Path, moments: list[str], published_before: str | None) -> dict:
    """SIGKILL one run at each of `moments` in turn (each a restart of the last), then run to the end and
    return that run's summary. After every kill, whatever version is live is complete and consistent, and
    never older than `published_before`."""
    for moment in moments:
        killed = _run(catalog, index_dir, moment)
        assert killed.returncode == -signal.SIGKILL, f"{moment}: the run did not die there ({killed.stderr[-2000:]})"
        directory = IndexDirectory(index_dir)
        if directory.exists():
            assert verify_index(index_dir, SETTINGS).ok, moment
            assert published_before is None or directory.read_manifest().version >= published_before, moment
        else:
            assert published_before is None, moment
    finished = _run(catalog, index_dir)
    assert finished.returncode == 0, finished.stderr
    return dict(json.loads(finished.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "catalog.jsonl", 2500)
    reference = tmp_path / "reference"
    run_index(catalog, reference, settings=SETTINGS)

    index_dir = tmp_path / "killed"
    # Killed while staging, twice while embedding (the second run resumes from the journal), while
    # building, just before the switch: nothing was ever published, so the finishing run adds everything.
    summary = _kill_then_finish(catalog, index_dir, ["read:1200", "embed:3", "embed:5", "build:1", "switch"], None)
    assert summary["added"] == 2500 and summary["total"] == 2500 and summary["balanced"]
    assert verify_index(index_dir, SETTINGS).ok
    ids, matrix, results = _snapshot(index_dir)
    ref_ids, ref_matrix, ref_results = _snapshot(reference)
    assert ids == ref_ids and len(set(ids)) == len(ids)
    np.testing.assert_allclose(matrix, ref_matrix, atol=1e-6)
    assert results == ref_results

    # Re-index a changed catalog, killed again: the old version stays served until the new one is whole.
    changed = _catalog(tmp_path / "changed.jsonl", 2500, variant=5)
    run_index(changed, reference, settings=SETTINGS)
    published = IndexDirectory(index_dir).read_manifest().version
    summary = _kill_then_finish(changed, index_dir, ["read:10", "embed:2", "build:2", "switch"], published)
    assert IndexDirectory(index_dir).read_manifest().version > published
    assert summary["updated"] == 625 and summary["unchanged"] == 1875 and summary["balanced"]

    ids, matrix, results = _snapshot(index_dir)
    ref_ids, ref_matrix, ref_results = _snapshot(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(matrix, ref_matrix, atol=1e-6)
    assert results == ref_results

    # Killed after its switch, before pruning: that run had published its catalog, whole; the finishing
    # run finds everything unchanged.
    third = _catalog(tmp_path / "third.jsonl", 2500, variant=9)
    run_index(third, reference, settings=SETTINGS)
    published = IndexDirectory(index_dir).read_manifest().version
    summary = _kill_then_finish(third, index_dir, ["prune"], published)
    assert summary["unchanged"] == 2500 and summary["embedded"] == 0 and summary["balanced"]
    ids, matrix, results = _snapshot(index_dir)
    ref_ids, ref_matrix, ref_results = _snapshot(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(matrix, ref_matrix, atol=1e-6)
    assert results == ref_results
