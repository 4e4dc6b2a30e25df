"""Fusion policies at serving time: rows by intent, no default that hides products, explicit settings over
rows, and models trained on another encoder refused or falling back visibly (tiny index, hashing encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.pipeline import run_index
from ranker.fusion import FusionConfig
from ranker.intent import LABELS, SERVICE, DenseHead, IntentModel, RuleLayer
from ranker.policy import (
    SERVICE_MESSAGE,
    IntentPolicy,
    PolicyFile,
    PolicyRow,
    StaticPolicy,
    load_policy,
)
from ranker.searcher import HybridSearcher
from shopfusion.artifacts import EncoderRef, ModelCard
from shopfusion.cli import main as cli_main
from shopfusion.client import Client
from shopfusion.config import Settings, load_settings
from shopfusion.errors import ConfigError, IndexStateError
from shopfusion.types import Candidate
from tests.plugins.catalogs import TINY, write_jsonl
from tests.plugins.models import train_tiny_intent_model

SETTINGS = Settings().replace("index", model="hash:32", source="default")
HASH = EncoderRef("hash:32", 32)
SERVICE_LOOKING = ["the cart wheels", "replacement handle for the basket", "customer service headset",
                   "store hours sign", "where is my order"]


def _policy_file() -> PolicyFile:
    return PolicyFile(
        default=PolicyRow(FusionConfig(method="linear", alpha=0.6), depth=100),
        rows={"product_lookup.specific": PolicyRow(FusionConfig(method="linear", alpha=0.2, normalization="zscore")),
              "comparison": PolicyRow(FusionConfig(method="rrf", rrf_k=30))},
        stats={"product_lookup.specific": {"queries": 80, "ndcg@10": 0.41}})


def _model(dim: int = 32) -> IntentModel:
    weight = np.zeros((len(LABELS), dim), np.float32)
    bias = np.array([0, 0, 5, 0, 0, 0], np.float32)  # everything not ruled is a broad lookup
    return IntentModel(DenseHead(LABELS, ((weight, bias),)), encoder=EncoderRef("toy", dim), rules=RuleLayer(["makita"]))


def test_policy_file_round_trip(tmp_path: Path) -> None:
    original = _policy_file()
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(original.to_dict()))
    loaded = PolicyFile.load(path)
    assert loaded.rows == original.rows and loaded.default == original.default
    assert loaded.stats["product_lookup.specific"]["ndcg@10"] == 0.41
    path.write_text(json.dumps({**original.to_dict(), "version": 1}))
    with pytest.raises(ConfigError, match="retrain"):
        PolicyFile.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a shopfusion fusion policy"):
        PolicyFile.load(path)


def test_rows_by_key_and_service_gets_products_and_a_message() -> None:
    policy = IntentPolicy(model=_model(), rows=_policy_file(), static=PolicyRow(FusionConfig()))
    vector = np.ones(32, np.float32) / np.sqrt(32)
    specific = policy.decide("makita drill", vector)
    assert specific.intent is not None and specific.intent.label == "product_lookup.specific"
    assert specific.row.fusion.alpha == 0.2 and specific.intent.policy["key"] == "product_lookup.specific"
    broad = policy.decide("patio chairs", vector)
    assert broad.row.fusion.alpha == 0.6 and broad.intent is not None and broad.intent.policy["key"] == "default"
    assert broad.message is None and broad.prediction is not None and broad.prediction.probabilities
    assert policy.decide("ryobi vs makita drill", vector).row.fusion.method == "rrf"
    service = policy.decide("where is my order", vector)
    assert service.intent is not None and service.intent.label == SERVICE
    assert service.row.search is True and service.message == SERVICE_MESSAGE


def test_static_policy() -> None:
    row = StaticPolicy.from_settings(SETTINGS.search).row
    assert row.fusion.alpha == SETTINGS.search.alpha and row.depth == SETTINGS.search.depth


# -- on a tiny index ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("policy-index")
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in TINY]), tmp / "idx", settings=SETTINGS)
    return tmp / "idx"


@pytest.fixture(scope="module")
def intent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_intent_model(tmp_path_factory.mktemp("intent") / "model")


def test_no_default_hides_products(index_dir: Path) -> None:
    """The queries that used to come back empty (and the real service question) get products."""
    client = Client(index_dir, settings=SETTINGS)
    for query in SERVICE_LOOKING:
        assert client.search(query, k=3).hits or query == "where is my order", query
    service = client.search("where is my order", k=3)
    assert service.message and service.intent is not None and service.intent.label == SERVICE
    reranked = client.rerank("where is my order", ["p01", "p04", Candidate("x-9")])
    assert [h.product_id for h in reranked.hits] and len(reranked.hits) == 3 and reranked.message
    client.close()


def test_withholding_is_an_explicit_opt_in(index_dir: Path, tmp_path: Path) -> None:
    rows = {"service": {"fusion": {"method": "rrf"}, "search": False, "message": "Ask our help desk."}}
    (tmp_path / "policy.json").write_text(json.dumps({**_policy_file().to_dict(), "rows": rows}))
    ModelCard(kind="fusion-policy").save(tmp_path)
    client = Client(index_dir, settings=SETTINGS.replace("search", policy=str(tmp_path)))
    withheld = client.search("where is my order", k=3)
    assert withheld.hits == () and withheld.message == "Ask our help desk."
    assert len(client.rerank("where is my order", ["p01", "p02"]).hits) == 2  # re-ranking never withholds
    client.close()


def test_trained_intent_model_round_trip_through_search_and_explain(index_dir: Path, intent_dir: Path) -> None:
    settings = SETTINGS.replace("search", intent_model=str(intent_dir))
    results = Client(index_dir, settings=settings).search("cordless drill", k=3, explain=True)
    assert results.intent is not None and results.intent.policy["source"] in {"model", "rule"}
    assert results.intent.policy["intent_model"]["id"] and not results.warnings
    runner = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_INTENT_MODEL": str(intent_dir)})
    out = runner.invoke(cli_main, ["search", "cordless drill", "--index", str(index_dir), "--explain"])
    assert out.exit_code == 0, out.output
    assert "intent model: " in out.output and "row 'default'" in out.output
    data = json.loads(runner.invoke(cli_main, ["search", "where is my order", "--index", str(index_dir),
                                               "--json"]).output)
    assert data["hits"] and data["message"] and data["intent"]["label"] == SERVICE


def test_a_model_trained_on_another_encoder_is_refused_when_asked_for(index_dir: Path, tmp_path: Path) -> None:
    other = train_tiny_intent_model(tmp_path / "hash16", "hash:16")
    with pytest.raises(IndexStateError, match="trained on vectors of hash:16"):
        Client(index_dir, settings=SETTINGS.replace("search", intent_model=str(other))).search("drill")
    result = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32"}).invoke(
        cli_main, ["search", "drill", "--index", str(index_dir), "--intent-model", str(other)])
    assert result.exit_code == IndexStateError.exit_code and "retrain it" in result.output


def test_the_shipped_model_on_another_encoder_falls_back_visibly(index_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = train_tiny_intent_model(tmp_path / "shipped", "hash:16")
    monkeypatch.setattr("ranker.policy.default_intent_model_dir", lambda: shipped)
    results = Client(index_dir, settings=SETTINGS).search("cordless drill", k=3, explain=True)
    assert results.hits and any("hash:16" in w and "rules only" in w for w in results.warnings)
    assert results.intent is not None and results.intent.policy["source"] == "rules-only"
    data = json.loads(CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32"}).invoke(
        cli_main, ["search", "cordless drill", "--index", str(index_dir), "--json"]).output)
    assert data["warnings"] and data["hits"]


def test_explicit_settings_win_over_the_policy_row_and_are_named(index_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "shopfusion.toml"
    config.write_text('[index]\nmodel = "hash:32"\n[search]\nalpha = 0.15\n')
    settings = load_settings(config, env={"SHOPFUSION_SEARCH_FUSION": "linear"})
    assert settings.source("search", "alpha") == f"file {config}"
    assert settings.source("search", "fusion") == "env SHOPFUSION_SEARCH_FUSION"
    assert settings.source("search", "depth") == "default"
    client = Client(index_dir, settings=settings)
    results = client.search("cordless drill", k=3, explain=True)
    assert results.fusion["alpha"] == 0.15
    assert results.intent is not None and results.intent.policy["overrides"]["alpha"] == f"file {config}"
    per_call = client.search("cordless drill", k=3, alpha=0.9, explain=True)
    assert per_call.fusion["alpha"] == 0.9 and per_call.intent is not None
    assert per_call.intent.policy["overrides"]["alpha"] == "call"
    client.close()
    shown = CliRunner().invoke(cli_main, ["--config", str(config), "config", "--json"])
    described = json.loads(shown.output)
    assert described["search"]["alpha"] == {"value": 0.15, "source": f"file {config}"}
    assert described["search"]["k"]["source"] == "default"
    text = CliRunner().invoke(cli_main, ["--config", str(config), "config"]).output
    assert f"alpha = 0.15  # file {config}" in text


def test_a_policy_keyed_on_another_intent_model_is_refused(index_dir: Path, intent_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text(json.dumps(_policy_file().to_dict()))  # with intent rows
    ModelCard(kind="fusion-policy", extra={"intent_model": "0123456789ab"}).save(tmp_path)
    settings = SETTINGS.replace("search", policy=str(tmp_path), intent_model=str(intent_dir))
    with pytest.raises(IndexStateError, match="learned with intent model 0123456789ab"):
        load_policy(settings, HASH)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(SETTINGS.replace("search", policy=str(tmp_path / "missing")), HASH)


def test_searcher_uses_the_index_encoder_reference(index_dir: Path) -> None:
    searcher = HybridSearcher(index_dir, SETTINGS.replace("search", intent_model="none", policy="none"))
    try:
        decision = searcher.policy.decide("where is my order", None)
        assert decision.message == SERVICE_MESSAGE and decision.intent is not None
        assert decision.intent.policy["source"] == "rules-only"
    finally:
        searcher.close()
