"""The intent-aware fusion policy: its file, its decisions, how it is learned, and search with it end to end
(tiny index, hashing encoder)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.pipeline import run_index
from ranker.fusion import FusionConfig, fuse
from ranker.intent import SERVICE, IntentModel, RuleLayer, SoftmaxHead
from ranker.intent_policy import (
    POLICY_FILE,
    IntentPolicy,
    PolicyFile,
    default_policy_dir,
    load_intent_policy,
)
from ranker.policy import PolicyRow, StaticPolicy, load_policy
from ranker.policy_cli import policy as policy_command
from ranker.policy_training import LegCache, default_grid, grid_fuse, learn_rows, resolve
from ranker.searcher import HybridSearcher
from shopfusion.cli import main as cli_main
from shopfusion.config import Settings
from shopfusion.errors import ConfigError
from shopfusion.types import Candidate, LegHit
from tests.plugins.catalogs import TINY, write_jsonl
from tests.ranker.test_intent import write_data_dir

SETTINGS = Settings().replace("index", model="hash:32").replace("search", policy="none")


def _policy_file() -> PolicyFile:
    return PolicyFile(
        default=PolicyRow(FusionConfig(method="linear", alpha=0.6), depth=100),
        rows={"product_lookup.specific": PolicyRow(FusionConfig(method="linear", alpha=0.2, normalization="zscore")),
              "comparison": PolicyRow(FusionConfig(method="rrf", rrf_k=30))},
        stats={"product_lookup.specific": {"queries": 80, "ndcg@10": 0.41}},
        training={"mode": "corpus"}, metrics={"train_ndcg@10_policy": 0.4})


def _model(dim: int = 32) -> IntentModel:
    intent = SoftmaxHead(("product_lookup", "product_information", "comparison", "service"),
                         np.zeros((dim, 4), np.float32), np.array([5, 0, 0, 0], np.float32))
    return IntentModel({"intent": intent}, dim=dim, encoder="hash:32", rules=RuleLayer(["makita"]))


def test_policy_file_round_trip(tmp_path: Path) -> None:
    original = _policy_file()
    path = original.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["format"] == "shopfusion-fusion-policy" and data["version"] == 1
    assert data["rows"]["service"]["search"] is False and data["rows"]["service"]["message"]
    assert data["rows"]["product_lookup.specific"]["queries"] == 80
    loaded = PolicyFile.load(path)
    assert loaded.rows == original.rows and loaded.default == original.default
    assert loaded.stats["product_lookup.specific"]["ndcg@10"] == 0.41 and loaded.metrics == original.metrics
    data["version"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="upgrade"):
        PolicyFile.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a shopfusion fusion policy"):
        PolicyFile.load(path)


def test_decide_picks_rows_by_key_and_withholds_service() -> None:
    policy = IntentPolicy(_policy_file(), _model())
    vector = np.ones(32, np.float32) / np.sqrt(32)
    specific = policy.decide("makita drill", vector)
    assert specific.intent is not None and specific.intent.label == "product_lookup.specific"
    assert specific.row.fusion.alpha == 0.2 and specific.intent.policy["key"] == "product_lookup.specific"
    broad = policy.decide("patio chairs", vector)
    assert broad.intent is not None
    assert broad.row.fusion.alpha == 0.6 and broad.intent.policy["key"] == "default"
    assert policy.decide("ryobi vs makita drill", vector).row.fusion.method == "rrf"
    service = policy.decide("where is my order", vector)
    assert service.intent is not None
    assert service.row.search is False and service.row.message and service.intent.label == SERVICE
    assert service.intent.policy["search"] is False


def test_decide_with_another_encoder_uses_rules_and_static_row(caplog: pytest.LogCaptureFixture) -> None:
    static = StaticPolicy.from_settings(SETTINGS.search).row
    policy = IntentPolicy(_policy_file(), _model(dim=384), static=static)
    with caplog.at_level(logging.WARNING, logger="ranker.intent_policy"):
        decision = policy.decide("makita drill", np.ones(32, np.float32))
        policy.decide("patio chairs", np.ones(32, np.float32))
    assert decision.intent is not None
    assert decision.row == static and decision.intent.policy["source"] == "rules-only"
    assert decision.intent.label == "product_lookup.specific"
    assert policy.decide("where is my order", np.ones(32, np.float32)).row.search is False
    warnings = [r.message for r in caplog.records if "384-dim" in r.message]
    assert len(warnings) == 1 and "static fusion" in warnings[0]


def test_load_intent_policy_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_intent_policy(str(tmp_path / "missing"), SETTINGS.search)
    _policy_file().save(tmp_path)
    _model().save(tmp_path)
    for name in (str(tmp_path), str(tmp_path / POLICY_FILE)):
        loaded = load_intent_policy(name, SETTINGS.search)
        assert isinstance(loaded, IntentPolicy) and loaded.model is not None
    assert isinstance(load_policy(SETTINGS.search), StaticPolicy)
    default = load_policy(SETTINGS.replace("search", policy="default").search)
    expected = IntentPolicy if (default_policy_dir() / POLICY_FILE).is_file() else StaticPolicy
    assert isinstance(default, expected)


def _random_legs(rng: random.Random, n: int, ties: bool) -> dict[str, list[LegHit]]:
    ids = [f"p{i:03d}" for i in range(n)]
    legs = {}
    for leg in ("lexical", "dense"):
        chosen = rng.sample(ids, rng.randint(0, n))
        scores = sorted((round(rng.uniform(0, 5), 0 if ties else 6) for _ in chosen), reverse=True)
        legs[leg] = [LegHit(pid, s, r) for r, (pid, s) in enumerate(zip(chosen, scores, strict=True), start=1)]
    return legs


@pytest.mark.parametrize("seed", range(30))
def test_grid_fuse_reproduces_fuse(seed: int) -> None:
    rng = random.Random(seed)
    legs = _random_legs(rng, rng.randint(1, 25), ties=seed % 2 == 0)
    order = {f"p{i:03d}": i for i in rng.sample(range(30), 10)} if seed % 3 == 0 else None
    grid = default_grid() + [FusionConfig(method="rrf", rrf_k=0)]
    for config, top in zip(grid, grid_fuse(legs, grid, k=10, order=order), strict=True):
        assert top == [f.product_id for f in fuse(legs, config, order)[:10]], config


def test_learn_rows_min_queries_and_backoff() -> None:
    # 3 grid points; 60 "specific" queries prefer point 2, 5 "broad" queries prefer point 1, the rest 0
    keys = [("product_lookup.specific", "product_lookup")] * 60 + [("product_lookup.broad", "product_lookup")] * 5 \
        + [("comparison",)] * 100
    scores = np.zeros((3, len(keys)))
    scores[0, 65:] = 0.5
    scores[2, :60] = 0.6
    scores[1, 60:65] = 0.9
    rows, stats = learn_rows(scores, keys, min_queries=50, min_gain=0.01)
    assert rows[""] == 0 and rows["product_lookup"] == 2 and "product_lookup.specific" not in rows
    assert "product_lookup.broad" not in rows and stats["product_lookup.broad"]["queries"] == 5
    assert resolve(rows, keys[0]) == 2 and resolve(rows, keys[-1]) == 0


def test_leg_cache_round_trip(tmp_path: Path) -> None:
    cache = LegCache({"q1": "drill"}, np.ones((1, 4), np.float32),
                     {"q1": {"lexical": [("a", 2.0), ("b", 1.0)], "dense": [("b", 0.9)]}},
                     {"q1": {"order": ["b", "a"], "lexical": {"a": 2.0, "b": 1.0}, "dense": {"a": 0.1, "b": 0.9}}})
    cache.save(tmp_path / "legs")
    loaded = LegCache.load(tmp_path / "legs")
    assert loaded.corpus_legs("q1") == cache.corpus_legs("q1") and loaded.pool_legs("q1") == cache.pool_legs("q1")
    assert [h.product_id for h in loaded.corpus_legs("q1", depth=1)["lexical"]] == ["a"]


# -- end to end on a tiny index -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("policy")
    index_dir = tmp / "idx"
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in TINY]), index_dir, settings=SETTINGS)
    queries = {"q1": "cordless drill", "q2": "garden hose", "q3": "makita", "q4": "led light", "q5": "hammer",
               "q6": "stanley screwdriver"}
    relevant = {"q1": ["p01", "p12"], "q2": ["p04"], "q3": ["p01", "p06"], "q4": ["p09", "p10"], "q5": ["p07"],
                "q6": ["p08"]}
    write_jsonl(tmp / "queries.jsonl", [{"id": q, "text": t} for q, t in queries.items()])
    lines = ["query_id\tproduct_id\tgrade"] + [f"{q}\t{p}\t3" for q, ps in relevant.items() for p in ps] \
        + [f"{q}\tp05\t1" for q in queries]
    (tmp / "qrels.tsv").write_text("\n".join(lines) + "\n")
    data = write_data_dir(tmp / "data")
    result = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32"}).invoke(policy_command, [
        "--index", str(index_dir), "--queries", str(tmp / "queries.jsonl"), "--qrels", str(tmp / "qrels.tsv"),
        "--out", str(tmp / "policy"), "--data-dir", str(data), "--min-queries", "2", "--json",
        "--cache", str(tmp / "legs")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["queries"] == 6 and "train_ndcg@10_policy" in report["metrics"]
    return index_dir, tmp / "policy"


def test_trained_policy_files(trained: tuple[Path, Path]) -> None:
    _, policy_dir = trained
    assert {p.name for p in policy_dir.iterdir()} == {"policy.json", "intent_model.json", "intent_model.safetensors"}
    policy = PolicyFile.load(policy_dir / POLICY_FILE)
    assert policy.training["queries"] == 6 and policy.training["grid"][0].startswith("rrf")
    assert IntentModel.load(policy_dir / "intent_model.json").dim == 32


def test_search_and_rerank_with_trained_policy(trained: tuple[Path, Path]) -> None:
    index_dir, policy_dir = trained
    searcher = HybridSearcher(index_dir, SETTINGS.replace("search", policy=str(policy_dir)))
    try:
        results = searcher.search("cordless drill", k=3, explain=True)
        assert results.hits and results.intent is not None and results.intent.policy["fusion"]
        assert results.hits[0].legs is not None
        assert searcher.search("where is my order", k=3).hits == ()
        service = searcher.search("where is my order", k=3)
        assert service.message and service.intent is not None and service.intent.label == SERVICE
        reranked = searcher.rerank("cordless drill", [])
        assert reranked.intent is not None
        withheld = searcher.rerank("where is my order", [Candidate("p01")])
        assert withheld.hits == () and withheld.message
        reranked = searcher.rerank("makita drill", [Candidate("p02"), Candidate("p01")], explain=True)
        assert [h.product_id for h in reranked.hits] in (["p01", "p02"], ["p02", "p01"])
        assert reranked.intent is not None and reranked.intent.label == "product_lookup.specific"
    finally:
        searcher.close()


def test_cli_explain_shows_intent_and_policy_row(trained: tuple[Path, Path]) -> None:
    index_dir, policy_dir = trained
    runner = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": str(policy_dir)})
    result = runner.invoke(cli_main, ["search", "cordless drill", "--index", str(index_dir), "--explain"])
    assert result.exit_code == 0, result.output
    assert " intent product_lookup." in result.output and "policy: {" in result.output and "lexical" in result.output
    result = runner.invoke(cli_main, ["search", "where is my order", "--index", str(index_dir), "--json"])
    data = json.loads(result.output)
    assert data["hits"] == [] and data["message"] and data["intent"]["label"] == SERVICE


@pytest.mark.parametrize("shipped", ["fake-minilm", "installed"])
def test_default_policy_on_hash_index_falls_back(trained: tuple[Path, Path], caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 shipped: str) -> None:
    """The shipped policy's model reads 384-dim MiniLM vectors; on a hash:32 index search must still work,
    with rules for the intent, the static fusion of the settings, and a warning."""
    if shipped == "fake-minilm":
        _policy_file().save(tmp_path)
        _model(dim=384).save(tmp_path)
        monkeypatch.setattr("ranker.intent_policy.default_policy_dir", lambda: tmp_path)
    elif not (default_policy_dir() / POLICY_FILE).is_file():
        pytest.skip("no default policy installed in shopfusion/data/policy")
    index_dir, _ = trained
    settings = SETTINGS.replace("search", policy="default")
    searcher = HybridSearcher(index_dir, settings)
    try:
        assert isinstance(searcher.policy, IntentPolicy)
        with caplog.at_level(logging.WARNING):
            results = searcher.search("cordless drill", k=3, explain=True)
        assert results.hits and results.fusion["alpha"] == settings.search.alpha
        assert results.intent is not None and results.intent.policy["source"] == "rules-only"
        assert any("static fusion" in r.message for r in caplog.records)
        service = searcher.search("where is my order", k=3)
        assert service.hits == () and service.message
    finally:
        searcher.close()


def test_learn_rows_cross_validation_rejects_unstable_gains() -> None:
    # point 1 wins the key's first block of queries by far and loses its second block: a gain in sample only
    scores = np.array([[0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.2, 0.2]])
    keys = [("b",)] * 4
    rows, stats = learn_rows(np.hstack([scores, [[0.6], [0.0]]]), keys + [("c",)], min_queries=1, min_gain=0.01,
                             folds=1)
    assert rows["b"] == 1  # in sample: 0.55 against 0.5
    rows, stats = learn_rows(np.hstack([scores, [[0.6], [0.0]]]), keys + [("c",)], min_queries=1, min_gain=0.01,
                             folds=2)
    assert "b" not in rows and stats["b"]["cv_gain"] == pytest.approx(-0.15)
