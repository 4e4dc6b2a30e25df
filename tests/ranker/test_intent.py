"""Serving-side intent: the taxonomy, the rule layer, the dense head and loading the intent-model artifact
(fast: hashing encoder, heads written by the real trainer on tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker.intent import (
    COMPARISON,
    LABELS,
    PRODUCT_INFORMATION,
    PRODUCT_LOOKUP,
    SERVICE,
    DenseHead,
    IntentModel,
    IntentPrediction,
    RuleLayer,
    accuracy_report,
    intent_label,
    load_intent_model,
    part_numbers,
)
from shopfusion.artifacts import CARD_FILE, EncoderRef
from shopfusion.errors import ConfigError
from tests.plugins.models import train_tiny_intent_model


@pytest.mark.parametrize("query, expected", [
    ("ge profile pb911sjss range", ["pb911sjss"]),
    ("american standard t55.521.224", ["t55.521.224"]),
    ("hampton bay 003234", ["003234"]),
    ("dewalt dw059 18 volt", ["dw059"]),
    ("2x4 stud 8 ft", []),
    ("12v cordless drill", []),
    ("3/4in copper elbow", []),
    ("1-1/2in. x 1ft. pipe", []),
    ("3-way switch", []),
])
def test_part_numbers(query: str, expected: list[str]) -> None:
    assert part_numbers(query) == expected


@pytest.mark.parametrize("query, intent", [
    ("where is my order", SERVICE),
    ("cancel my order please", SERVICE),
    ("add paint rollers to my cart", SERVICE),
    ("i want a refund", SERVICE),
    ("how do i contact customer service", SERVICE),
    ("what are your store hours", SERVICE),
    ("ryobi vs dewalt drill", COMPARISON),
    ("compare gas and electric dryers", COMPARISON),
    ("difference between latex and oil paint", COMPARISON),
    ("how to install a ceiling fan", PRODUCT_INFORMATION),
    ("what size screws for drywall", PRODUCT_INFORMATION),
    ("manual transfer switch", None),
    ("can light conversion kit", None),
    ("order picker ladder", None),
    ("return air grille", None),
    ("cordless drill", None),
    # product queries that earlier rules mistook for service questions (and withheld their products)
    ("the cart wheels", None),
    ("replacement handle for the basket", None),
    ("customer service headset", None),
    ("store hours sign", None),
])
def test_rule_intents(query: str, intent: str | None) -> None:
    assert RuleLayer().intent(query) == intent


def test_rule_specificity_uses_catalog_brands() -> None:
    rules = RuleLayer(["Hampton Bay", "BEHR"])
    assert rules.specificity("hampton bay ceiling fan") == "specific"
    assert rules.specificity("behr deck paint") == "specific"
    assert rules.specificity("ge jb605d range") == "specific"
    assert rules.specificity("white ceiling fan 52 in.") == "attribute"
    assert rules.specificity("patio ideas") == "broad"


def test_labels_and_policy_keys() -> None:
    assert intent_label(PRODUCT_LOOKUP, "attribute") == "product_lookup.attribute"
    assert intent_label(COMPARISON, None) == "comparison"
    prediction = IntentPrediction(PRODUCT_LOOKUP, "specific", 0.9, "model", {"product_lookup.specific": 0.9})
    assert prediction.keys == ("product_lookup.specific", "product_lookup")
    assert IntentPrediction(SERVICE, None, 1.0, "rule").keys == ("service",)
    assert list(prediction.taxonomy_probabilities()) == list(LABELS)
    assert prediction.taxonomy_probabilities()["service"] == 0.0


def test_dense_head_matches_the_trainers_torch_head() -> None:
    import torch

    from trainer.heads import ClassificationHead

    torch.manual_seed(0)
    head = ClassificationHead(8, 3, hidden=5).eval()
    linears = [m for m in head.net if isinstance(m, torch.nn.Linear)]
    dense = DenseHead(("a", "b", "c"), tuple((m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linears))
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    expected = torch.softmax(head(torch.from_numpy(x)), dim=-1).detach().numpy()
    assert np.allclose(dense.proba(x), expected, atol=1e-5)


def _toy_model(rules: RuleLayer | None = None) -> IntentModel:
    # dimension i of the query vector votes for LABELS[i]
    weight = np.eye(len(LABELS), 8, dtype=np.float32) * 10
    head = DenseHead(LABELS, ((weight, np.zeros(len(LABELS), np.float32)),))
    return IntentModel(head, encoder=EncoderRef("toy@abc", 8), rules=rules or RuleLayer())


def _vector(label: str, weight: float = 1.0) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[LABELS.index(label)] = weight
    return v


def test_model_rules_first_then_the_head_and_the_service_threshold() -> None:
    model = _toy_model()
    assert model.predict("ryobi vs dewalt", _vector("product_lookup.broad")).intent == COMPARISON
    lookup = model.predict("patio chairs", _vector("product_lookup.broad"))
    assert (lookup.label, lookup.source) == ("product_lookup.broad", "model")
    assert set(lookup.probabilities) == set(LABELS) and abs(sum(lookup.probabilities.values()) - 1) < 1e-5
    assert model.predict("ge pb911sjss", _vector("product_lookup.broad")).specificity == "specific"
    sure = model.predict("something", _vector("service"))
    assert sure.intent == SERVICE and sure.probability > 0.99
    unsure = _vector("service", 0.6) + _vector("product_lookup.attribute", 0.5)  # service ~0.73 < 0.9
    assert model.predict("something", unsure).label == "product_lookup.attribute"
    assert model.predict("how to fix a sofa", _vector("product_lookup.broad")).intent == PRODUCT_INFORMATION


def test_rules_only_without_a_readable_vector() -> None:
    model = _toy_model()
    prediction = model.predict("where is my order", np.ones(32, np.float32))
    assert prediction.intent == SERVICE and prediction.source == "rules-only" and not prediction.probabilities
    assert model.predict("patio chairs", None).label == "product_lookup.broad"
    assert model.compatible(EncoderRef("renamed@abc", 8)) and not model.compatible(EncoderRef("other@def", 8))


def test_artifact_written_by_the_trainer_loads_and_predicts(tmp_path: Path) -> None:
    path = train_tiny_intent_model(tmp_path / "intent")
    card = json.loads((path / CARD_FILE).read_text())
    assert card["kind"] == "intent-model" and card["encoder"]["model_id"] == "hash:32"
    assert {p.name for p in path.iterdir()} >= {CARD_FILE, "heads.safetensors", "README.md"}
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.bin"))
    model = load_intent_model(path)
    assert model.labels == tuple(sorted(LABELS)) and not model.has_own_encoder and model.identity
    from shopfusion.encoders import load_encoder

    encoder = load_encoder("hash:32")
    assert model.predict("cordless drill", encoder.encode_query("cordless drill")).source == "model"


def test_broken_artifacts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shopfusion_card.json"):
        load_intent_model(tmp_path)
    path = train_tiny_intent_model(tmp_path / "intent")
    (path / "heads.safetensors").unlink()
    with pytest.raises(ConfigError, match="heads.safetensors"):
        load_intent_model(path)


def test_accuracy_report() -> None:
    report = accuracy_report(["a", "a", "b"], ["a", "b", "b"], ("a", "b"))
    assert report["accuracy"] == pytest.approx(2 / 3) and report["labels"]["b"]["precision"] == 0.5
