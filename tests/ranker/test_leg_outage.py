"""Issue 14 with a real Elasticsearch node of this module's own (`disposable_es`), stopped and started
again by the test: rollback moves the alias with the manifest; while the node is down a hybrid search
answers from the dense leg with a warning (or fails with exit 6 when configured to), a lexical-only
search and an index run fail with a clear message, and nothing changes on disk."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from shopfusion.cli import main
from tests.plugins.catalogs import TINY, write_jsonl

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(disposable_es) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "SHOPFUSION_INDEX_MODEL": "hash:32",
        "SHOPFUSION_SEARCH_POLICY": "none",
        "SHOPFUSION_SEARCH_INTENT_MODEL": "none",
        "SHOPFUSION_INDEX_LEXICAL": "elasticsearch",
        "SHOPFUSION_ELASTICSEARCH_HOSTS": disposable_es.url,
        "SHOPFUSION_ELASTICSEARCH_ANALYZER": "standard",
        "SHOPFUSION_ELASTICSEARCH_INDEX_PREFIX": f"sfout{uuid.uuid4().hex[:6]}",
        "SHOPFUSION_ELASTICSEARCH_MAX_RETRIES": "1",
        "SHOPFUSION_ELASTICSEARCH_REQUEST_TIMEOUT": "5",
    }


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_rollback_moves_the_elasticsearch_alias(env: dict[str, str], tmp_path: Path) -> None:
    from indexer.manifest import IndexDirectory
    from indexer.stores.elasticsearch_store import active_version
    from shopfusion.config import load_settings

    index_dir = tmp_path / "idx"
    full = write_jsonl(tmp_path / "full.jsonl", [p.to_dict() for p in TINY])
    part = write_jsonl(tmp_path / "part.jsonl", [p.to_dict() for p in TINY[:4]])
    assert _cli(env, "index", str(full), "--index", str(index_dir))[0] == 0
    assert _cli(env, "index", str(part), "--index", str(index_dir), "--replace", "--allow-shrink")[0] == 0
    settings = load_settings(env=env).elasticsearch
    namespace = IndexDirectory(index_dir).namespace
    assert active_version(settings, namespace) == "v000002"

    code, output = _cli(env, "rollback", "--index", str(index_dir))
    assert code == 0 and "v000001 (12 products)" in output
    assert active_version(settings, namespace) == "v000001"
    code, output = _cli(env, "search", "garden hose", "--index", str(index_dir), "--mode", "lexical", "--json")
    assert code == 0 and "p04" in {h["product_id"] for h in json.loads(output)["hits"]}
    assert _cli(env, "rollback", "--index", str(index_dir), "--to", "v000002")[0] == 0
    assert active_version(settings, namespace) == "v000002"
    code, output = _cli(env, "verify", "--index", str(index_dir), "--json")
    assert code == 0 and json.loads(output)["counts"]["lexical"] == 4


def test_elasticsearch_down_degrades_to_the_dense_leg(env: dict[str, str], disposable_es, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index_dir = tmp_path / "idx"
    catalog = write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in TINY])
    assert _cli(env, "index", str(catalog), "--index", str(index_dir))[0] == 0
    code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir), "--json")
    healthy = json.loads(output)
    assert code == 0 and healthy["warnings"] == [] and healthy["hits"]
    candidates = tmp_path / "cands.json"
    candidates.write_text(json.dumps(["p01", "p04", "p12"]))
    manifest = (index_dir / "manifest.json").read_bytes()

    disposable_es.stop()
    try:
        code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir), "--json")
        degraded = json.loads(output)
        assert code == 0 and degraded["hits"], output
        assert len(degraded["warnings"]) == 1 and "lexical leg is down" in degraded["warnings"][0]
        assert "cannot reach Elasticsearch" in degraded["warnings"][0]
        code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir))
        assert code == 0 and "warning: the lexical leg is down" in output

        code, output = _cli(env, "rerank", "cordless drill", "--index", str(index_dir), "--candidates",
                            str(candidates), "--json")
        assert code == 0 and "lexical leg is down" in json.loads(output)["warnings"][0]
        code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir), "--facets", "brand,price",
                            "--sort", "-price", "--json")
        faceted = json.loads(output)  # facets are the lexical engine's aggregations: the page comes without
        assert code == 0 and faceted["hits"] and not faceted.get("facets"), output
        assert any("facets need the lexical engine, which is down" in w for w in faceted["warnings"])

        failing = {**env, "SHOPFUSION_SEARCH_ON_LEG_FAILURE": "fail"}
        code, output = _cli(failing, "search", "cordless drill", "--index", str(index_dir))
        assert code == 6 and "cannot reach Elasticsearch" in output
        code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir), "--mode", "lexical")
        assert code == 6 and "cannot reach Elasticsearch" in output

        from shopfusion.client import Client
        from shopfusion.config import load_settings

        client = Client(index_dir, settings=load_settings(env=env))
        results = client.search("garden hose", k=3)
        assert results.warnings and results.hits[0].product_id == "p04"
        client.close()

        code, output = _cli(env, "index", str(catalog), "--index", str(index_dir))
        assert code == 6 and "cannot reach Elasticsearch" in output
        assert (index_dir / "manifest.json").read_bytes() == manifest
    finally:
        disposable_es.start()

    code, output = _cli(env, "search", "cordless drill", "--index", str(index_dir), "--json")
    assert code == 0 and json.loads(output) == healthy


def test_http_service_answers_from_the_dense_leg_while_elasticsearch_is_down(  # type: ignore[no-untyped-def]
        env: dict[str, str], disposable_es, tmp_path: Path) -> None:
    """A real `shopfusion serve` process: while the node is down /search answers 200 with the warning in
    its body (a 502 naming Elasticsearch with `on_leg_failure = "fail"`), and /ready stays ready."""
    from tests.plugins.service import running_server

    index_dir = tmp_path / "idx"
    catalog = write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in TINY])
    assert _cli(env, "index", str(catalog), "--index", str(index_dir))[0] == 0
    with running_server(index_dir, tmp_path / "degrade.log", env) as degrading, \
            running_server(index_dir, tmp_path / "fail.log", {**env, "SHOPFUSION_SEARCH_ON_LEG_FAILURE": "fail"}) \
            as failing:
        healthy = degrading.post("/search", {"query": "garden hose", "k": 3})
        assert healthy.status == 200 and healthy.json()["warnings"] == []
        disposable_es.stop()
        try:
            reply = degrading.post("/search", {"query": "garden hose", "k": 3})
            assert reply.status == 200, reply.body
            body = reply.json()
            assert body["hits"][0]["product_id"] == "p04"
            assert len(body["warnings"]) == 1 and "lexical leg is down" in body["warnings"][0]
            assert degrading.request("GET", "/ready").status == 200
            refused = failing.post("/search", {"query": "garden hose", "k": 3})
            assert refused.status == 502 and "cannot reach Elasticsearch" in refused.json()["error"]["message"]
        finally:
            disposable_es.start()
        assert degrading.post("/search", {"query": "garden hose", "k": 3}).json() == healthy.json()


def test_a_learned_ranker_is_skipped_while_elasticsearch_is_down(  # type: ignore[no-untyped-def]
        env: dict[str, str], disposable_es, tmp_path: Path) -> None:
    """The ranking stage reads both legs' features: while the lexical engine is down, search and re-rank
    answer from the dense leg in fused order and say that the ranker was skipped; once the node is back
    the ranker applies again."""
    from indexer.pipeline import run_index
    from ranker.searcher import HybridSearcher, SearchOptions
    from shopfusion.config import load_settings
    from shopfusion.types import Candidate
    from tests.plugins.catalogs import shop_catalog
    from trainer.ranker_trainer import RankerParams, judgment_gains, save_ranker, train_ranker

    settings = load_settings(env=env)
    products, queries, qrels = shop_catalog()
    run_index(write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in products]), tmp_path / "idx", settings=settings)
    searcher = HybridSearcher(tmp_path / "idx", settings)
    try:
        params = RankerParams(num_leaves=7, learning_rate=0.2, rounds=30, early_stopping=10, min_data_in_leaf=5)
        fitted, _ = train_ranker(searcher, queries, judgment_gains(qrels), params=params, cache_dir=tmp_path / "cache")
        save_ranker(fitted, tmp_path / "ranker", searcher=searcher, method="lambdarank", data=["shop_catalog"])
        options = SearchOptions(ranker=str(tmp_path / "ranker"))
        healthy = searcher.search("makita drill 18 V", k=5, options=options)
        assert "ranker" in healthy.fusion and healthy.warnings == ()
        candidates = [Candidate(h.product_id) for h in healthy.hits]

        disposable_es.stop()
        try:
            for results in (searcher.search("makita drill 18 V", k=5, options=options),
                            searcher.rerank("makita drill 18 V", candidates, options=options)):
                assert results.hits and "ranker" not in results.fusion
                assert len(results.warnings) == 2, results.warnings
                assert "lexical leg is down" in results.warnings[0]
                assert "learned ranker is skipped" in results.warnings[1]
        finally:
            disposable_es.start()
        again = searcher.search("makita drill 18 V", k=5, options=options)
        assert "ranker" in again.fusion and again.warnings == () and again.hits == healthy.hits
    finally:
        searcher.close()
