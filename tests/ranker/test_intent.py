"""The intent taxonomy, its rule layer, the softmax heads and the intent model (fast: hashing encoder,
tiny synthetic data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ranker.intent import (
    COMPARISON,
    PRODUCT_INFORMATION,
    PRODUCT_LOOKUP,
    SERVICE,
    IntentModel,
    IntentPrediction,
    RuleLayer,
    SoftmaxHead,
    accuracy_report,
    intent_label,
    part_numbers,
)
from ranker.intent_data import SEED_TEMPLATES, brands_from_products, catalog_brands, leg_labels, seed_examples
from ranker.intent_training import IntentTrainingArguments, train_intent_model
from shopfusion.encoders import load_encoder
from shopfusion.errors import ConfigError, TrainingError
from tests.plugins.catalogs import TINY


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
    assert rules.surface("hampton bay 52 in fan").shape == (7,)


def test_labels_and_policy_keys() -> None:
    assert intent_label(PRODUCT_LOOKUP, "attribute") == "product_lookup.attribute"
    assert intent_label(COMPARISON, None) == "comparison"
    prediction = IntentPrediction(PRODUCT_LOOKUP, "specific", 0.9, "model", leg="lexical")
    assert prediction.keys == ("product_lookup.specific|lexical", "product_lookup.specific", "product_lookup")
    assert IntentPrediction(SERVICE, None, 1.0, "rule").keys == ("service",)


def test_softmax_head_learns_separable_classes() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(3, 8) * 4
    y = [str(i) for i in rng.integers(0, 3, 300)]
    x = np.stack([centers[int(label)] + rng.normal(0, 0.5, 8) for label in y]).astype(np.float32)
    head = SoftmaxHead.fit(x, y, ("0", "1", "2"), steps=200)
    predicted = [head.labels[i] for i in head.proba(x).argmax(axis=1)]
    assert accuracy_report(y, predicted, ("0", "1", "2"))["accuracy"] > 0.97
    assert np.allclose(head.proba(x[0]).sum(), 1.0)
    with pytest.raises(TrainingError, match="not among"):
        SoftmaxHead.fit(x, ["9"] * len(x), ("0", "1", "2"))


def _toy_model(dim: int = 4, rules: RuleLayer | None = None) -> IntentModel:
    # intent head: dimension 0 -> lookup, 1 -> information, 2 -> comparison, 3 -> service
    intent = SoftmaxHead(("product_lookup", "product_information", "comparison", "service"),
                         np.eye(dim, 4, dtype=np.float32) * 10, np.zeros(4, dtype=np.float32))
    specificity = SoftmaxHead(("specific", "attribute", "broad"), np.zeros((dim, 3), dtype=np.float32),
                              np.array([0, 0, 1], dtype=np.float32))
    return IntentModel({"intent": intent, "specificity": specificity}, dim=dim, encoder="toy", rules=rules or RuleLayer())


def test_model_rules_first_then_heads_and_service_threshold() -> None:
    model = _toy_model()
    assert model.predict("ryobi vs dewalt", np.array([1, 0, 0, 0], np.float32)).intent == COMPARISON
    lookup = model.predict("patio chairs", np.array([1, 0, 0, 0], np.float32))
    assert (lookup.label, lookup.source) == ("product_lookup.broad", "model")
    assert model.predict("ge pb911sjss", np.array([1, 0, 0, 0], np.float32)).specificity == "specific"
    sure = model.predict("something", np.array([0, 0, 0, 1], np.float32))
    assert sure.intent == SERVICE and sure.probability > 0.99
    unsure = model.predict("something", np.array([0.5, 0, 0, 0.6], np.float32))  # service ~0.73 < 0.9
    assert unsure.intent == PRODUCT_LOOKUP


def test_model_falls_back_to_rules_on_dimension_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    model = _toy_model()
    with caplog.at_level(logging.WARNING, logger="ranker.intent"):
        prediction = model.predict("where is my order", np.ones(32, np.float32))
        again = model.predict("patio chairs", np.ones(32, np.float32))
    assert prediction.intent == SERVICE and prediction.source == "rules-only"
    assert again.label == "product_lookup.broad"
    assert sum("rules only" in r.message for r in caplog.records) == 1  # warned once


def test_model_round_trip_without_pickle(tmp_path: Path) -> None:
    model = _toy_model(rules=RuleLayer(["makita"]))
    path = model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intent_model.json", "intent_model.safetensors"]
    loaded = IntentModel.load(path)
    assert loaded.rules.brands == frozenset({"makita"}) and loaded.dim == 4 and loaded.encoder == "toy"
    for vector in np.eye(4, dtype=np.float32):
        assert loaded.predict("makita drill", vector) == model.predict("makita drill", vector)
    meta = json.loads(path.read_text())
    meta["version"] = 99
    path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="version"):
        IntentModel.load(path)


def test_catalog_brands_from_title_prefixes() -> None:
    titles = [f"Makita {kind} {i}" for i in range(10) for kind in ("drill", "saw")]
    titles += [f"Garden hose {i} m" for i in range(10)] + [f"Blue garden hose {i}" for i in range(10)]
    brands = catalog_brands(titles, min_count=5)
    assert "makita" in brands and "garden" not in brands
    assert {"makita", "philips", "stanley", "gardena", "dewalt"} <= set(brands_from_products(TINY))


def test_seed_examples_keep_train_and_heldout_apart() -> None:
    train = seed_examples(["sofa", "desk", "lamp"], "train", per_template=2)
    held = seed_examples(["rug", "bed", "chair"], "heldout", per_template=2)
    assert {e.intent for e in train} == {PRODUCT_INFORMATION, COMPARISON}
    assert not {e.text for e in train} & {e.text for e in held}
    assert not set(SEED_TEMPLATES["train"][COMPARISON]) & set(SEED_TEMPLATES["heldout"][COMPARISON])


def test_leg_labels() -> None:
    assert leg_labels({"a": 0.9, "b": 0.1, "c": 0.5}, {"a": 0.2, "b": 0.8, "c": 0.52}) == {
        "a": "lexical", "b": "dense", "c": "either"}


def write_data_dir(root: Path) -> Path:
    """A tiny stand-in for ../shared/data: CLINC150-like utterances and WANDS-like queries."""
    (root / "clinc150").mkdir(parents=True)
    (root / "wands_queries").mkdir()
    utterances = ["where is my package", "what is my credit card balance", "set an alarm for seven",
                  "tell me a joke", "book a table for two", "what is the weather like today"]
    records = [{"id": f"c{i}-{s}", "text": f"{u} {s}", "intent": f"intent{i}", "domain": "d", "split": s}
               for i, u in enumerate(utterances) for s in ("train", "test")]
    (root / "clinc150" / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    wands = [{"id": f"w{i}", "text": t, "category": c} for i, (t, c) in enumerate(
        [("blue velvet sofa", "Sofas"), ("oak desk", "Desks"), ("floor lamp", "Lamps"), ("area rug 5x8", "Rugs"),
         ("bar stool", "Stools"), ("bunk bed", "Beds")])]
    (root / "wands_queries" / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wands))
    return root


def test_train_intent_model_on_tiny_data(tmp_path: Path) -> None:
    encoder = load_encoder("hash:32")
    queries = ["makita cordless drill", "garden hose 25 m", "led ceiling light", "claw hammer", "dw059 bits",
               "sprinkler", "leaf blower", "screwdriver set"]
    vectors = encoder.encode(queries)
    args = IntentTrainingArguments(write_data_dir(tmp_path / "data"), steps=50, seed_per_template=2)
    output = train_intent_model(args, encoder.encode, encoder_id=encoder.model_id, product_queries=queries,
                                product_vectors=vectors, leg_labels={0: "lexical", 1: "dense", 4: "lexical"},
                                brands=["makita"], heldout_queries=queries[:3], heldout_vectors=vectors[:3],
                                heldout_legs={0: "lexical"})
    model = output.model
    assert set(model.heads) == {"intent", "specificity", "leg"} and model.dim == 32
    assert model.heads["leg"].features == ("embedding", "surface")
    assert output.counts["train"]["service"] == 6 and output.counts["train"]["product_lookup"] >= 8
    held = output.metrics["heldout_utterances"]
    assert 0.0 <= held["intent"]["accuracy"] <= 1.0 and held["ms_per_query"] < 5
    assert "leg" in output.metrics["heldout_product_queries"]
    prediction = model.predict("makita drill", encoder.encode_query("makita drill"))
    assert prediction.leg in {"lexical", "dense", "either"}
    with pytest.raises(TrainingError, match="clinc150"):
        IntentTrainingArguments(tmp_path / "nowhere")
