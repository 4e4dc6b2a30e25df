"""Trainer artifacts: encoders and intent models are written in the formats search loads, with a card
that names the encoder they were trained on; pickles are refused."""

from pathlib import Path

import numpy as np
import pytest

from ranker.intent import load_intent_model
from shopfusion.artifacts import CARD_FILE, ModelCard, read_card
from shopfusion.encoders import HashingEncoder, load_encoder
from shopfusion.errors import TrainingError
from trainer.artifacts import load_sentence_transformer, save_encoder, save_intent_model
from trainer.intent_trainer import IntentTrainer, TrainingArguments
from trainer.models import FrozenEncoder, MultiTaskClassifier, TextEncoder


def test_saved_encoder_is_a_safetensors_sentence_transformers_dir_with_a_card(tmp_path: Path,
                                                                              tiny_model_dir: Path) -> None:
    encoder = TextEncoder.from_path(str(tiny_model_dir), device="cpu")
    base = load_encoder(str(tiny_model_dir))
    card = ModelCard(kind="encoder", method="contrastive", data=("toy judgments",), params={"lr": 1e-3},
                     metrics={"ndcg@10": 0.5}, encoder=None)
    out = save_encoder(encoder, tmp_path / "enc", card)
    assert list(out.rglob("*.safetensors")) and not [p for p in out.rglob("*") if p.suffix in {".bin", ".pt"}]
    readme = (out / "README.md").read_text()
    assert "contrastive" in readme and "toy judgments" in readme and "ndcg@10 | 0.5000" in readme
    saved = read_card(out, "encoder")
    assert saved.extra["embeds"] == "Product.embedding_text()"
    loaded = load_encoder(str(out), device="cpu")  # what indexer / workers do
    import shutil

    shutil.copytree(out, tmp_path / "renamed")
    assert load_encoder(str(tmp_path / "renamed")).model_id.split("@")[1] == loaded.model_id.split("@")[1]
    assert base.model_id != loaded.model_id  # max_seq_length 64 instead of 16: another encoder
    expected = encoder.embed(["green tea"]).numpy()
    got = loaded.encode(["green tea"])
    assert np.allclose(got[0], expected[0] / np.linalg.norm(expected[0]), atol=1e-5)


def test_pickled_weights_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(TrainingError, match="safetensors only"):
        load_sentence_transformer(bad)


@pytest.mark.parametrize("name", ["extra/model.PT", "scaler.joblib"])
def test_trainer_applies_the_one_pickle_rule(tmp_path: Path, tiny_model_dir: Path, name: str) -> None:
    """The trainer refuses exactly what `shopfusion.encoders.check_safetensors` refuses (one rule), with
    its message, as a training error."""
    import shutil

    from shopfusion.encoders import check_safetensors
    from shopfusion.errors import ConfigError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / name).parent.mkdir(parents=True, exist_ok=True)
    (bad / name).write_bytes(b"not really a pickle")
    with pytest.raises(ConfigError) as shared:
        check_safetensors(bad)
    with pytest.raises(TrainingError) as trained:
        load_sentence_transformer(bad)
    assert str(trained.value) == str(shared.value)


def test_intent_model_with_a_frozen_encoder_reads_the_index_vectors(tmp_path: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples()
    model = MultiTaskClassifier(FrozenEncoder(HashingEncoder(32)))
    IntentTrainer(model, TrainingArguments(head_steps=40, show_progress=False, device="cpu"), target="kitchen",
                  train=data).train()
    path = save_intent_model(model, tmp_path / "intent", "kitchen", ModelCard(kind="intent-model", method="head"),
                             base="hash:32", brands=["Tetley"])
    card = read_card(path, "intent-model")
    assert card.encoder is not None and card.encoder.model_id == "hash:32" and not card.extra["own_encoder"]
    loaded = load_intent_model(path)
    texts = [e.text for e in data]
    vectors = HashingEncoder(32).encode(texts)
    served = [max(p.probabilities, key=p.probabilities.get) for p in (loaded.predict(t, v) for t, v in
                                                                       zip(texts, vectors, strict=True))]
    assert served == model.predict(texts, "kitchen")  # numpy serving == torch training
    assert loaded.rules.brands == frozenset({"tetley"})


def test_intent_model_with_a_trained_encoder_carries_it(tmp_path: Path, tiny_model_dir: Path,
                                                        make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples()
    encoder = TextEncoder.from_path(str(tiny_model_dir), device="cpu", normalize=True)
    model = MultiTaskClassifier(encoder)
    args = TrainingArguments(method="finetune", head_steps=5, adapt_steps=3, show_progress=False, device="cpu")
    IntentTrainer(model, args, target="kitchen", train=data).train()
    assert encoder.changed
    path = save_intent_model(model, tmp_path / "intent", "kitchen", ModelCard(kind="intent-model", method="finetune"),
                             base=str(tiny_model_dir))
    card = read_card(path, "intent-model")
    base = load_encoder(str(tiny_model_dir))
    assert card.extra["own_encoder"] and (path / "encoder" / CARD_FILE).is_file()
    assert card.encoder is not None and card.encoder.content_hash != base.model_id.split("@")[1]
    loaded = load_intent_model(path)
    texts = [e.text for e in data]
    served = [max(p.probabilities, key=p.probabilities.get) for p in (loaded.predict(t, None) for t in texts)]
    assert served == model.predict(texts, "kitchen")
