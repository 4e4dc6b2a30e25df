"""Learning a fusion policy: grid fusion reproduces `fuse`, rows with backoff and cross-validation, the
leg cache, and `shopfusion train policy` end to end on a tiny index whose search then serves the rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.pipeline import run_index
from ranker.fusion import FusionConfig, fuse
from ranker.searcher import HybridSearcher
from shopfusion.artifacts import read_card
from shopfusion.config import Settings
from shopfusion.types import LegHit
from tests.plugins.catalogs import TINY, write_jsonl
from tests.plugins.models import train_tiny_intent_model
from trainer.cli import train
from trainer.policy_trainer import LegCache, default_grid, grid_fuse, learn_rows, resolve

SETTINGS = Settings().replace("index", model="hash:32", source="default")

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


def test_train_policy_end_to_end(tmp_path: Path) -> None:
    index_dir = tmp_path / "idx"
    run_index(write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in TINY]), index_dir, settings=SETTINGS)
    intent = train_tiny_intent_model(tmp_path / "intent")
    queries = {"q1": "cordless drill", "q2": "garden hose", "q3": "makita", "q4": "led light", "q5": "hammer",
               "q6": "stanley screwdriver"}
    relevant = {"q1": ["p01", "p12"], "q2": ["p04"], "q3": ["p01", "p06"], "q4": ["p09", "p10"], "q5": ["p07"],
                "q6": ["p08"]}
    write_jsonl(tmp_path / "queries.jsonl", [{"id": q, "text": t} for q, t in queries.items()])
    lines = ["query_id\tproduct_id\tgrade"] + [f"{q}\t{p}\t3" for q, ps in relevant.items() for p in ps] \
        + [f"{q}\tp05\t1" for q in queries]
    (tmp_path / "qrels.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "policy"
    result = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32"}).invoke(train, [
        "policy", "--index", str(index_dir), "--queries", str(tmp_path / "queries.jsonl"),
        "--qrels", str(tmp_path / "qrels.tsv"), "--intent-model", str(intent), "--output", str(out),
        "--min-queries", "2", "--json", "--cache", str(tmp_path / "legs")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["queries"] == 6 and "train_ndcg@10_policy" in report["metrics"]
    card = read_card(out, "fusion-policy")
    assert card.extra["intent_model"] and card.encoder is not None and card.encoder.model_id == "hash:32"
    settings = SETTINGS.replace("search", policy=str(out), intent_model=str(intent))
    searcher = HybridSearcher(index_dir, settings)
    try:
        results = searcher.search("cordless drill", k=3, explain=True)
        assert results.hits and results.intent is not None and results.intent.policy["policy"] == str(out)
        assert not results.warnings
    finally:
        searcher.close()
