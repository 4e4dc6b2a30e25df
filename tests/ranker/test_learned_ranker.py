"""The learned ranking stage end to end on a small made-up catalog: train -> save -> search and re-rank
load it -> `--explain` shows contributions; training and serving compute identical feature vectors;
a ranker trained on another encoder is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ranker.stage as stage_module
from indexer.pipeline import run_index
from ranker.features import FEATURE_NAMES, FEATURE_SET_VERSION
from ranker.learned import BIAS, RANKER_FILE, LearnedRanker
from ranker.searcher import HybridSearcher, SearchOptions
from shopfusion.artifacts import read_card
from shopfusion.config import Settings
from shopfusion.errors import ConfigError, IndexStateError
from shopfusion.types import Candidate, Product
from tests.plugins.catalogs import shop_catalog, write_jsonl
from trainer.ranker_trainer import (
    FeatureTable,
    RankerParams,
    extract_features,
    judgment_gains,
    save_ranker,
    train_ranker,
)

SETTINGS = Settings().replace("index", model="hash:32").replace("search", policy="none")
PARAMS = RankerParams(num_leaves=7, learning_rate=0.2, rounds=30, early_stopping=10, min_data_in_leaf=5)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[HybridSearcher, Path, Path]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("shop")
    products, queries, qrels = shop_catalog()
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in products]), tmp / "idx", settings=SETTINGS)
    searcher = HybridSearcher(tmp / "idx", SETTINGS)
    fitted, _ = train_ranker(searcher, queries, judgment_gains(qrels), params=PARAMS, cache_dir=tmp / "cache")
    save_ranker(fitted, tmp / "ranker", searcher=searcher, method="lambdarank from graded judgments",
                data=["shop_catalog"])
    return searcher, tmp / "ranker", tmp / "cache"


def test_artifact_is_lightgbm_text_and_a_card(shop) -> None:  # type: ignore[no-untyped-def]
    searcher, path, _ = shop
    assert (path / RANKER_FILE).read_text().startswith("tree")
    assert (path / "README.md").is_file()
    card = read_card(path, kind="ranker")
    assert card.encoder is not None and card.encoder.model_id == searcher.manifest.model_id
    assert card.extra["feature_names"] == list(FEATURE_NAMES)
    assert card.extra["feature_set_version"] == FEATURE_SET_VERSION
    assert card.extra["lexical"] == {"engine": "tantivy", "analyzer": "english"}
    assert card.extra["intent_model"] is None  # no intent probabilities were read (policy none)
    assert card.params["label_gain"][:3] == [0.0, 1.0, 2.0]
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))


def test_search_applies_the_ranker_and_explains_it(shop) -> None:  # type: ignore[no-untyped-def]
    searcher, path, _ = shop
    plain = searcher.search("makita drill 18 V", k=5)
    learned = searcher.search("makita drill 18 V", k=5, options=SearchOptions(ranker=str(path)), explain=True)
    assert "ranker" not in plain.fusion and learned.fusion["ranker"]["path"] == str(path)
    assert learned.hits[0].product is not None and learned.hits[0].product.title.startswith("Makita")
    assert all(a.score >= b.score for a, b in zip(learned.hits, learned.hits[1:], strict=False))
    for hit in learned.hits:
        assert hit.legs is not None and set(hit.legs) == {"lexical", "dense"}
        assert hit.contributions and hit.contributions[-1].feature == BIAS
        assert len(hit.contributions) <= stage_module.EXPLAIN_TOP + 1
    assert searcher.search("makita drill", k=3, options=SearchOptions(ranker=str(path))).hits[0].contributions is None


def test_contributions_sum_to_the_score(shop) -> None:  # type: ignore[no-untyped-def]
    searcher, path, _ = shop
    ranker = LearnedRanker.load(path)
    table = extract_features(searcher, ["bosch hammer 20 oz"], cache_dir=None)
    scores = ranker.score(table.x)
    for row, items in enumerate(ranker.contributions(table.x, list(range(5)))):
        assert sum(c.contribution for c in items) == pytest.approx(scores[row], abs=1e-6)


def served_features(monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """The feature vectors the ranking stage computes from now on, by product id (filled as it serves)."""
    served: dict[str, np.ndarray] = {}
    original = stage_module.extract

    def spy(candidates, needed=None):  # type: ignore[no-untyped-def]
        matrix = original(candidates, needed)
        served.update(zip(candidates.ids, matrix, strict=True))
        return matrix

    monkeypatch.setattr(stage_module, "extract", spy)
    return served


def test_no_training_serving_skew(shop, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The vectors `shopfusion train ranker` learns from are exactly those `search` computes."""
    searcher, path, cache = shop
    served = served_features(monkeypatch)
    _, queries, _ = shop_catalog()
    cached = extract_features(searcher, list(queries.values()), cache_dir=cache)  # from the training cache
    for text in list(queries.values())[:10]:
        served.clear()
        searcher.search(text, k=3, options=SearchOptions(ranker=str(path)))
        rows = cached.rows(text)
        assert list(served) == list(cached.product_ids[rows])
        np.testing.assert_array_equal(np.stack(list(served.values())), cached.x[rows])


def test_feature_cache_is_reused(shop, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    searcher, _, cache = shop
    _, queries, _ = shop_catalog()
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and searcher.manifest.version in files[0].name
    monkeypatch.setattr(HybridSearcher, "candidate_set", lambda *a, **k: pytest.fail("extracted again"))
    table = extract_features(searcher, list(queries.values()), cache_dir=cache)
    assert isinstance(table, FeatureTable) and len(table) == len(set(queries.values()))


def test_rerank_scores_outside_candidates_with_the_index_statistics(shop, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    searcher, path, _ = shop
    served = served_features(monkeypatch)
    products, _, _ = shop_catalog()
    known = [p for p in products if "hose" in p.title][:4]
    copy = Product("outside-1", known[0].title, known[0].description, known[0].brand, known[0].category_path,
                   known[0].price, dict(known[0].attributes))
    candidates = [Candidate(p.id) for p in known] + [Candidate("outside-1", product=copy), Candidate("nothing")]
    plain = searcher.rerank("garden hose 50 ft", candidates, options=SearchOptions(ranker="none"), explain=True)
    lexical = {h.product_id: h.legs["lexical"].raw for h in plain.hits if h.legs}
    assert lexical["outside-1"] == pytest.approx(lexical[known[0].id], rel=1e-5)  # as if it were indexed
    learned = searcher.rerank("garden hose 50 ft", candidates, options=SearchOptions(ranker=str(path)), explain=True)
    assert {h.product_id for h in learned.hits} == {c.product_id for c in candidates}  # every candidate kept
    assert learned.hits[-1].product_id == "nothing" and [u.product_id for u in learned.unscored] == ["nothing"]
    # the outside copy has the indexed product's features (ties aside: equal scores get adjacent ranks)
    same = [i for i, name in enumerate(FEATURE_NAMES) if not name.endswith(("_rank", "_present")) and name != "fused_rrf"]
    np.testing.assert_allclose(served["outside-1"][same], served[known[0].id][same], rtol=1e-5, atol=1e-6)
    assert learned.fusion["ranker"]["path"] == str(path)


def test_a_ranker_of_another_encoder_is_refused(shop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, path, _ = shop
    other = Settings().replace("index", model="hash:16").replace("search", policy="none")
    products, _, _ = shop_catalog()
    run_index(write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in products[:20]]), tmp_path / "idx", settings=other)
    searcher = HybridSearcher(tmp_path / "idx", other.replace("search", ranker=str(path)))
    with pytest.raises(IndexStateError, match="retrain it for this encoder"):
        searcher.search("drill")
    assert searcher.search("drill", options=SearchOptions(ranker="none")).hits


def test_damaged_or_foreign_artifacts_are_refused(shop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, path, _ = shop
    with pytest.raises(ConfigError, match="shopfusion_card.json"):
        LearnedRanker.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    card = json.loads((path / "shopfusion_card.json").read_text())
    card["extra"]["feature_set_version"] = FEATURE_SET_VERSION + 1
    (broken / "shopfusion_card.json").write_text(json.dumps(card))
    (broken / RANKER_FILE).write_text((path / RANKER_FILE).read_text())
    with pytest.raises(ConfigError, match="feature set version"):
        LearnedRanker.load(broken)


def test_products_can_be_read_ahead_of_queries(shop) -> None:  # type: ignore[no-untyped-def]
    searcher, _, _ = shop
    searcher.stage.products.clear()
    assert searcher.stage.warm(limit=5) == 5
    assert searcher.stage.warm() == searcher.manifest.counts["products"] == len(shop_catalog()[0])
    store, searcher.stage.store = searcher.stage.store, None  # every product is in the table: none is read
    try:
        table, slots = searcher.stage.table([p.id for p in shop_catalog()[0][:30]])
        assert len(slots) == 30 and len(set(slots.tolist())) == 30
    finally:
        searcher.stage.store = store


def test_a_monotone_ranker_never_scores_more_coverage_lower(shop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from ranker.features import FEATURES
    from trainer.ranker_trainer import fit_ranker, ranking_data

    searcher, _, cache = shop
    _, queries, qrels = shop_catalog()
    table = extract_features(searcher, list(queries.values()), cache_dir=cache)
    data = ranking_data(table, queries, judgment_gains(qrels))
    fitted = fit_ranker(data, None, replace(PARAMS, monotone=True))
    assert fitted.booster.params["monotone_constraints"] == [f.direction for f in FEATURES]
    x = table.x[:50].copy()
    for name, direction in (("title_coverage", 1), ("lexical_rank", -1), ("quantity_conflict", -1)):
        column = FEATURE_NAMES.index(name)
        low, high = x.copy(), x.copy()
        low[:, column], high[:, column] = 0.0, 1.0 if direction > 0 else 10.0
        delta = fitted.score(high, [0, 50]) - fitted.score(low, [0, 50])
        assert ((delta * direction) >= -1e-9).all(), name
