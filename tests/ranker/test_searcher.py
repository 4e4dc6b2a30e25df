from __future__ import annotations

import pytest

from indexer.pipeline import run_index
from ranker.searcher import HybridSearcher, SearchOptions
from shopfusion.config import Settings
from shopfusion.errors import ConfigError, QueryError
from shopfusion.types import Candidate, Filters, Product
from tests.plugins.catalogs import TINY, write_jsonl

SETTINGS = Settings().replace("index", model="hash:32").replace("search", policy="none")


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> HybridSearcher:
    tmp = tmp_path_factory.mktemp("searcher")
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in TINY]), tmp / "idx", settings=SETTINGS)
    return HybridSearcher(tmp / "idx", SETTINGS)


def test_hybrid_search_returns_products_and_breakdown(searcher: HybridSearcher) -> None:
    results = searcher.search("cordless drill", k=5, explain=True)
    assert results.hits[0].product_id == "p01"
    assert results.hits[0].product is not None and results.hits[0].product.brand == "Makita"
    assert [h.rank for h in results.hits] == [1, 2, 3, 4, 5]
    for hit in results.hits:
        assert set(hit.legs) == {"lexical", "dense"}
        assert hit.score == pytest.approx(sum(leg.contribution for leg in hit.legs.values()))
    assert results.fusion["method"] == "linear" and results.fusion["alpha"] == 0.3


def test_no_breakdown_unless_explain(searcher: HybridSearcher) -> None:
    assert searcher.search("drill", k=3).hits[0].legs is None


def test_single_leg_modes(searcher: HybridSearcher) -> None:
    lexical = searcher.search("garden hose", k=3, mode="lexical")
    assert lexical.hits[0].product_id == "p04" and lexical.fusion["mode"] == "lexical"
    dense = searcher.search("garden hose", k=3, mode="dense")
    assert len(dense.hits) == 3


@pytest.mark.parametrize("filters", [Filters(category=("Tools",)), Filters(brands=("Philips",)),
                                     Filters(price_min=10, price_max=40), Filters(category=("Garden",),
                                                                                  brands=("Gardena",))])
def test_filters_apply_to_both_legs(searcher: HybridSearcher, filters: Filters) -> None:
    results = searcher.search("cordless drill garden light hose", k=20, filters=filters, explain=True)
    assert results.hits
    assert all(filters.matches(h.product) for h in results.hits)
    dense = {h.product_id for h in searcher.search("cordless drill garden light hose", k=20, filters=filters,
                                                   mode="dense").hits}
    assert dense == {p.id for p in TINY if filters.matches(p)}


def test_per_call_overrides(searcher: HybridSearcher) -> None:
    rrf = searcher.search("drill", k=3, options=SearchOptions(method="rrf", rrf_k=10))
    assert rrf.fusion["method"] == "rrf" and rrf.fusion["rrf_k"] == 10
    assert rrf.hits[0].score == pytest.approx(2 / 11, rel=0.3)


def test_vector_threads_are_applied_and_checked(searcher: HybridSearcher) -> None:
    index_dir = searcher.directory.path
    assert searcher.vectors.query_threads == 1  # the default: one OpenMP thread per query's FAISS search
    every_core = HybridSearcher(index_dir, SETTINGS.replace("search", vector_threads=0))
    assert every_core.vectors.query_threads == 0
    assert every_core.search("drill", k=3).hits == searcher.search("drill", k=3).hits
    every_core.close()
    with pytest.raises(ConfigError, match="search.vector_threads must be a whole number >= 0"):
        HybridSearcher(index_dir, SETTINGS.replace("search", vector_threads=-2))


def test_empty_query_is_an_error(searcher: HybridSearcher) -> None:
    with pytest.raises(QueryError, match="empty"):
        searcher.search("   ")


def test_rerank_scores_only_candidates(searcher: HybridSearcher) -> None:
    candidates = [Candidate("p04"), Candidate("p02"), Candidate("p01"), Candidate("p02")]
    results = searcher.rerank("cordless drill", candidates, explain=True)
    assert [h.product_id for h in results.hits][:2] == ["p01", "p02"]
    assert {h.product_id for h in results.hits} == {"p01", "p02", "p04"}
    assert results.fusion["candidates"] == 3 and results.fusion["indexed"] == 3
    assert results.fusion["mode"] == "rerank" and results.fusion["method"] == "linear"  # the fusion is reported


def test_rerank_unknown_candidates_with_text(searcher: HybridSearcher) -> None:
    outsider = Product("ext-1", "Cordless drill with hammer function", brand="Ryobi")
    candidates = [Candidate("p04"), Candidate("ext-1", product=outsider), Candidate("ghost"), Candidate("p01")]
    results = searcher.rerank("cordless drill", candidates, explain=True)
    order = [h.product_id for h in results.hits]
    assert set(order[:2]) == {"ext-1", "p01"}
    assert order[-1] == "ghost" and [u.product_id for u in results.unscored] == ["ghost"]
    assert "not in the index" in results.unscored[0].reason and any("unscored" in w for w in results.warnings)
    assert next(h for h in results.hits if h.product_id == "ext-1").product.brand == "Ryobi"
    assert results.fusion["scored_from_text"] == 1 and results.fusion["unscorable"] == 1


def test_rerank_engine_scores_shown_but_not_counted(searcher: HybridSearcher) -> None:
    candidates = [Candidate("p04", score=10.0), Candidate("p01", score=1.0)]
    results = searcher.rerank("cordless drill", candidates, explain=True)
    assert results.hits[0].product_id == "p01"
    assert results.hits[0].legs["engine"].raw == 1.0 and results.hits[0].legs["engine"].contribution == 0.0
    boosted = searcher.rerank("cordless drill", candidates, engine_weight=5.0)
    assert boosted.hits[0].product_id == "p04"
