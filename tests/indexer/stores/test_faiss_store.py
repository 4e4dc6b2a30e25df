from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.stores.base import VectorIndex
from indexer.stores.faiss_store import EXACT_BELOW, FaissVectorIndex, omp_threads
from shopfusion.encoders import HashingEncoder
from shopfusion.errors import IndexStateError, QueryError
from shopfusion.types import Filters, Product
from tests.indexer.stores.conformance import VectorConformance
from tests.plugins.catalogs import TINY

ENCODER = HashingEncoder(32)


def _vectors(products):
    return ENCODER.encode([p.embedding_text() for p in products])


@pytest.fixture(params=["flat", "hnsw", "ivf"])
def index(request, tmp_path: Path) -> FaissVectorIndex:
    store = FaissVectorIndex(tmp_path / "vectors", dim=32, kind=request.param, nprobe=64, create=True)
    store.upsert(TINY, _vectors(TINY))
    store.commit()
    return store


class TestFaissConformance(VectorConformance):
    """The shared vector suite for each kind; IVF probes one list and HNSW searches a small beam, so a
    filtered approximate search comes back short and the exact fallback must fill it."""

    @pytest.fixture(params=["flat", "hnsw", "ivf"])
    def make_vectors(self, request, tmp_path: Path):  # type: ignore[no-untyped-def]
        counter = iter(range(1000))
        return lambda: FaissVectorIndex(tmp_path / f"v{next(counter)}", dim=32, kind=request.param, nprobe=1,
                                        ef_search=16, create=True)


def test_satisfies_protocol(index: FaissVectorIndex) -> None:
    assert isinstance(index, VectorIndex)


def test_nearest_neighbour_is_itself(index: FaissVectorIndex) -> None:
    for product, vector in zip(TINY, _vectors(TINY), strict=True):
        assert index.search(vector, k=1)[0].product_id == product.id


def test_search_is_exact_inner_product_order(index: FaissVectorIndex) -> None:
    query = ENCODER.encode_query("cordless drill")
    hits = index.search(query, k=len(TINY))
    expected = sorted(((float(v @ query), p.id) for p, v in zip(TINY, _vectors(TINY), strict=True)),
                      key=lambda t: -t[0])
    assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert [h.rank for h in hits] == list(range(1, len(TINY) + 1))


@pytest.mark.parametrize("filters", [Filters(category=("tools",)), Filters(brands=("Philips",)),
                                     Filters(price_min=15, price_max=50), Filters(category=("Nothing",)),
                                     Filters(category=("Garden",), price_max=30)])
def test_filters_match_reference_semantics(index: FaissVectorIndex, filters: Filters) -> None:
    query = ENCODER.encode_query("cordless drill")
    got = {h.product_id for h in index.search(query, k=50, filters=filters)}
    assert got == {p.id for p in TINY if filters.matches(p)}


def test_reload_gives_same_results(index: FaissVectorIndex) -> None:
    query = ENCODER.encode_query("garden hose")
    reloaded = FaissVectorIndex(index.path)
    assert reloaded.search(query, k=5) == index.search(query, k=5)
    assert reloaded.kind == index.kind


def test_one_thread_per_query_gives_the_same_hits_and_leaves_other_threads_alone(index: FaissVectorIndex) -> None:
    """`query_threads` sets FAISS's OpenMP threads for the search only, on the calling thread only."""
    import threading

    import faiss

    query = ENCODER.encode_query("garden hose")
    one = FaissVectorIndex(index.path, query_threads=1)
    before = faiss.omp_get_max_threads()
    seen: list[int] = []

    def other_thread() -> None:
        seen.append(faiss.omp_get_max_threads())

    for filters in (None, Filters(category=("Garden",))):
        assert one.search(query, k=5, filters=filters) == index.search(query, k=5, filters=filters)
        assert faiss.omp_get_max_threads() == before
    def in_another_thread() -> int:
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        return seen.pop()

    default = in_another_thread()
    with omp_threads(1):
        assert faiss.omp_get_max_threads() == 1
        assert in_another_thread() == default
    assert faiss.omp_get_max_threads() == before


def test_upsert_replaces_and_delete_removes(index: FaissVectorIndex) -> None:
    replacement = Product("p01", "Velvet armchair", brand="Ikea", category_path=("Furniture",))
    index.upsert([replacement], _vectors([replacement]))
    assert index.count() == len(TINY)
    assert index.search(_vectors([replacement])[0], k=1)[0].product_id == "p01"
    assert {h.product_id for h in index.search(_vectors([replacement])[0], k=20,
                                                filters=Filters(category=("Furniture",)))} == {"p01"}
    index.delete(["p01", "unknown"])
    assert "p01" not in index.ids() and index.count() == len(TINY) - 1


def test_score_and_vectors_for_given_ids(index: FaissVectorIndex) -> None:
    query = ENCODER.encode_query("led bulb")
    scores = index.score(query, ["p10", "p09", "missing"])
    assert set(scores) == {"p10", "p09"}
    assert scores["p10"] == pytest.approx(float(index.vectors(["p10"])["p10"] @ query), abs=1e-6)


def test_wrong_dimension_is_a_clear_error(index: FaissVectorIndex) -> None:
    with pytest.raises(QueryError, match="dimension"):
        index.search(np.ones(8, dtype=np.float32), k=3)
    with pytest.raises(IndexStateError, match="another model"):
        index.upsert(TINY[:1], np.ones((1, 8), dtype=np.float32))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_filtered_search_with_many_survivors_matches_exact(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    n = EXACT_BELOW * 2 + 100
    products = [Product(f"id{i}", f"item {i}", brand="even" if i % 2 == 0 else "odd") for i in range(n)]
    vectors = rng.standard_normal((n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat = FaissVectorIndex(tmp_path / "flat", dim=16, kind="flat", create=True)
    hnsw = FaissVectorIndex(tmp_path / kind, dim=16, kind=kind, ef_search=256, nprobe=32, create=True)
    for store in (flat, hnsw):
        store.upsert(products, vectors)
    filters = Filters(brands=("even",))
    recall = []
    for q in vectors[:20]:
        exact = {h.product_id for h in flat.search(q, k=10, filters=filters)}
        approx = hnsw.search(q, k=10, filters=filters)
        assert all(int(h.product_id[2:]) % 2 == 0 for h in approx)
        recall.append(len(exact & {h.product_id for h in approx}) / 10)
    assert np.mean(recall) >= 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("indexer.stores.faiss_store", fromlist=["gpu_count"]).gpu_count(),
                    reason="FAISS sees no GPU here (install the `gpu` extra on a CUDA machine)")
def test_gpu_index_gives_cpu_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    products = [Product(f"id{i}", f"item {i}") for i in range(5000)]
    cpu = FaissVectorIndex(tmp_path / "cpu", dim=32, use_gpu=False, create=True)
    gpu = FaissVectorIndex(tmp_path / "gpu", dim=32, use_gpu=True, create=True)
    for store in (cpu, gpu):
        store.upsert(products, vectors)
    for q in vectors[:50]:
        a, b = cpu.search(q, k=10), gpu.search(q, k=10)
        assert [h.product_id for h in a] == [h.product_id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
