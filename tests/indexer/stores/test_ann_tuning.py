"""The approximate index's search width, tuned at build time against exact search (`ann_tuning`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.manifest import IndexDirectory
from indexer.pipeline import run_index
from indexer.stores.ann_tuning import (
    SearchWidth,
    WidthTuning,
    effective_width,
    exact_neighbours,
    matrix_chunks,
    recall_at,
    tune_width,
)
from indexer.stores.faiss_builder import build_approximate
from indexer.versions import list_versions
from ranker.searcher import HybridSearcher
from shopfusion.config import Settings
from tests.plugins.catalogs import write_jsonl

DIM = 32


def clustered(n: int, clusters: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in tight clusters (near-duplicates, as in a catalog of variants), and queries that lie
    between the clusters (as real queries do)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    vectors = centres[rng.integers(clusters, size=n)] + 0.35 * rng.normal(size=(n, DIM))
    queries = centres[rng.integers(clusters, size=300)] + 1.0 * rng.normal(size=(300, DIM))
    for m in (vectors, queries):
        m /= np.linalg.norm(m, axis=1, keepdims=True)
    return vectors.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    vectors, queries = clustered(6000)
    path = tmp_path_factory.mktemp("ann") / "vectors.npy"
    np.save(path, vectors)
    return path, vectors, queries


def brute_recall(index, kind: str, width: int, vectors: np.ndarray, queries: np.ndarray) -> float:
    """Recall@10 at `width`, computed here independently of the tuning's own bookkeeping."""
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    if kind == "ivf":
        index.nprobe = width
    else:
        index.hnsw.efSearch = width
    _, found = index.search(queries, 200)
    return float(np.mean([len(set(t) & set(f[:10])) / 10 for t, f in zip(truth, found, strict=True)]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_the_chosen_width_is_the_smallest_tried_that_reaches_the_target(vectors_file, kind: str) -> None:
    path, vectors, queries = vectors_file
    index = build_approximate(path, kind, hnsw_m=8, ef_construction=16)
    tuning = WidthTuning(target=0.9, max_width=512, sample=300, depth=200)
    width = tune_width(index, kind, path, tuning, queries=queries)  # type: ignore[arg-type]
    assert width.source == "tuned" and width.reached and width.probes == "pseudo-queries"
    assert width.recall_low is not None and width.recall is not None and width.recall >= width.recall_low >= 0.9
    assert brute_recall(index, kind, width.value, vectors, queries) >= 0.9  # type: ignore[arg-type]
    below = [int(w) for w in width.tried if int(w) < width.value]  # type: ignore[operator]
    assert below and max(width.tried[str(w)] for w in below) < width.recall  # narrower widths: measured, short
    assert index.nprobe == width.value if kind == "ivf" else index.hnsw.efSearch == width.value


def test_the_cap_bounds_the_width_and_says_the_target_was_missed(vectors_file) -> None:
    path, _, queries = vectors_file
    index = build_approximate(path, "ivf")
    width = tune_width(index, "ivf", path, WidthTuning(target=1.0, max_width=2, sample=300), queries=queries)
    assert width.value == 2 and not width.reached and "not reached" in width.describe()


def test_without_queries_the_sample_leaves_its_own_row_out(vectors_file) -> None:
    path, vectors, _ = vectors_file
    index = build_approximate(path, "ivf")
    from_file = tune_width(index, "ivf", path, WidthTuning(target=0.9, sample=200))
    in_memory = tune_width(index, "ivf", vectors, WidthTuning(target=0.9, sample=200))
    assert from_file.probes == "catalog vectors" and from_file.tried == in_memory.tried
    rows = np.arange(5)
    scores, found = exact_neighbours(matrix_chunks(vectors, 1000), vectors[rows], 11)
    assert list(found[:, 0]) == list(rows)  # each vector is its own nearest neighbour ...
    assert recall_at((scores, found), (scores[:, 1:], found[:, 1:]), 10, exclude=rows) == 1.0  # ... not counted
    assert recall_at((scores, found), (scores[:, 2:], found[:, 2:]), 10, exclude=rows) == 0.9


def test_recall_counts_a_tie_broken_the_other_way_as_found() -> None:
    exact = (np.array([[0.9, 0.8, 0.8]]), np.array([[4, 7, 8]]))
    assert recall_at(exact, (np.array([[0.9, 0.8, 0.5]]), np.array([[4, 9, 1]])), 2) == 1.0  # row 9 ties row 7
    assert recall_at(exact, (np.array([[0.9, 0.5, -1.0]]), np.array([[4, 1, -1]])), 2) == 0.5


def test_exact_neighbours_match_a_full_sort_across_chunks() -> None:
    vectors, queries = clustered(1000, seed=1)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :7]
    scores, rows = exact_neighbours(matrix_chunks(vectors, 64), queries, 7)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-5)


# -- end to end: the pipeline records it, the searcher uses it --------------------------------------------
def _catalog(tmp_path: Path, n: int = 1500) -> Path:
    rng = np.random.default_rng(0)
    kinds = ["drill", "hammer", "saw", "lamp", "hose", "paint", "sander", "router", "ladder", "faucet"]
    colours = ["red", "blue", "black", "white", "green", "grey"]
    records = [{"id": f"p{i}", "title": f"{rng.choice(kinds)} {rng.choice(kinds)} {rng.choice(colours)}"
                f" {int(rng.integers(1, 40))} in pack of {int(rng.integers(1, 9))}"} for i in range(n)]
    return write_jsonl(tmp_path / "catalog.jsonl", records)


def _settings(**index: object) -> Settings:
    return Settings().replace("index", **{"model": "hash:32", "hnsw_threshold": 100, "ann_tune_sample": 200, **index})


@pytest.fixture(scope="module")
def tuned_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("tuned")
    summary = run_index(_catalog(tmp), tmp / "idx", settings=_settings())
    return tmp / "idx", summary


def test_auto_above_the_threshold_builds_ivf_and_records_the_tuned_width(tuned_index) -> None:
    index_dir, summary = tuned_index
    manifest = IndexDirectory(index_dir).read_manifest()
    recorded = manifest.vector["search"]
    assert manifest.vector["kind"] == "ivf" and recorded["source"] == "tuned" and recorded["parameter"] == "nprobe"
    assert recorded["recall"] >= recorded["recall_low"] >= 0.95 and recorded["sample"] == 200 and recorded["probes"] == "pseudo-queries"
    assert summary.vector_index["value"] == recorded["value"] and "seconds" in summary.vector_index
    searcher = HybridSearcher(index_dir, _settings())
    try:
        assert searcher.width.source == "tuned" and searcher.vectors.nprobe == recorded["value"]
        assert searcher.vectors.index.nprobe == recorded["value"]
        assert searcher.search("red drill", mode="dense").hits
    finally:
        searcher.close()
    listed = list_versions(index_dir)[0]
    assert listed.vector is not None and f"nprobe {recorded['value']} (tuned" in listed.vector


def test_an_explicit_width_is_applied_as_given(tuned_index, tmp_path: Path) -> None:
    index_dir, _ = tuned_index
    searcher = HybridSearcher(index_dir, _settings(ivf_nprobe=3))  # over the tuned width, at search time
    try:
        assert searcher.width.source == "config" and searcher.vectors.nprobe == 3
    finally:
        searcher.close()
    summary = run_index(_catalog(tmp_path, 600), tmp_path / "idx", settings=_settings(ivf_nprobe=5))
    manifest = IndexDirectory(tmp_path / "idx").read_manifest()
    assert manifest.vector["search"]["source"] == "config" and manifest.vector["search"]["value"] == 5
    assert "tuning" not in summary.vector_index.get("source", "") and summary.vector_index["recall"] is None


def test_tuning_off_and_exact_search_record_no_tuned_width(tmp_path: Path) -> None:
    run_index(_catalog(tmp_path, 300), tmp_path / "off", settings=_settings(ann_target_recall=0.0))
    assert IndexDirectory(tmp_path / "off").read_manifest().vector["search"]["source"] == "default"
    run_index(_catalog(tmp_path, 300), tmp_path / "flat", settings=_settings(hnsw_threshold=10_000))
    vector = IndexDirectory(tmp_path / "flat").read_manifest().vector
    assert vector["kind"] == "flat" and vector["search"]["value"] is None


def test_a_manifest_written_before_tuning_still_loads(tuned_index, tmp_path: Path) -> None:
    import shutil

    index_dir = tmp_path / "old"
    shutil.copytree(tuned_index[0], index_dir)
    for path in [index_dir / "manifest.json", *index_dir.glob("versions/*/version.json")]:
        data = json.loads(path.read_text())
        data["vector"].pop("search")
        path.write_text(json.dumps(data))
    searcher = HybridSearcher(index_dir, _settings())
    try:
        assert searcher.width == SearchWidth("ivf", 16, "default") and searcher.vectors.nprobe == 16
        assert searcher.search("blue saw", mode="dense").hits
    finally:
        searcher.close()
    assert list_versions(index_dir)[0].vector == "ivf (no nprobe recorded: index.ivf_nprobe applies)"
    assert effective_width({"kind": "hnsw"}, Settings()).value == 128  # the settings' default
