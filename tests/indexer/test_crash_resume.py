"""Kill the indexing process with SIGKILL at many moments; every restart must end with an index equal to
an uninterrupted run, and the index must never be half-published in between."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


def _start(catalog: Path, index_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.indexer.crash_target", str(catalog), str(index_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _snapshot(index_dir: Path) -> tuple[list[str], np.ndarray, list[list[str]]]:
    manifest = IndexDirectory(index_dir).read_manifest()
    vectors = FaissVectorIndex(index_dir / "versions" / manifest.version / "vectors")
    ids = vectors.ordered_ids()
    matrix = np.stack([vectors.vectors(ids)[i] for i in ids])
    searcher = HybridSearcher(index_dir, SETTINGS)
    results = [[h.product_id for h in searcher.search(q, k=10).hits] for q in ("drill hose", "ladder", "pipe valve")]
    searcher.close()
    return ids, matrix, results


def _kill_until_done(catalog: Path, index_dir: Path, published_before: str | None) -> tuple[int, dict, str | None]:
    """Kill runs until one finishes: (kills, its summary, the version live when that run started)."""
    kills = 0
    delay = 0.4
    for _ in range(40):
        live = IndexDirectory(index_dir).read_manifest().version if IndexDirectory(index_dir).exists() else None
        process = _start(catalog, index_dir)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            directory = IndexDirectory(index_dir)
            if directory.exists():  # whatever version is current must be complete and consistent
                assert verify_index(index_dir, SETTINGS).ok
                current = directory.read_manifest().version
                assert published_before is None or current >= published_before
            delay += 0.35
            continue
        out, err = process.communicate()
        assert process.returncode == 0, err
        return kills, json.loads(out.strip().splitlines()[-1]), live
    pytest.fail("the indexing run never finished")


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "catalog.jsonl", 2500)
    reference = tmp_path / "reference"
    run_index(catalog, reference, settings=SETTINGS)

    index_dir = tmp_path / "killed"
    kills, summary, _ = _kill_until_done(catalog, index_dir, None)
    assert kills >= 3, "the kills should have landed in several phases"
    assert summary["total"] == 2500 and summary["balanced"]
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
    kills, summary, live = _kill_until_done(changed, index_dir, published)
    if live == published:  # the finishing run published the changed catalog
        assert summary["updated"] == 625 and summary["balanced"]
    else:  # a run killed after its switch had published it: the finishing run found it all unchanged
        assert summary["unchanged"] == 2500 and summary["balanced"]
    ids, matrix, results = _snapshot(index_dir)
    ref_ids, ref_matrix, ref_results = _snapshot(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(matrix, ref_matrix, atol=1e-6)
    assert results == ref_results
