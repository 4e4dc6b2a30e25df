from pathlib import Path

import numpy as np
import pytest

from shopfusion.encoders import HashingEncoder, load_encoder
from shopfusion.errors import TrainingError
from trainer.artifacts import (
    ModelCard,
    load_classifier,
    load_sentence_transformer,
    save_classifier,
    save_encoder,
)
from trainer.intent_trainer import IntentTrainer, TrainingArguments
from trainer.models import FrozenEncoder, MultiTaskClassifier, TextEncoder


def test_saved_encoder_is_a_safetensors_sentence_transformers_dir_with_a_card(tmp_path: Path,
                                                                              tiny_model_dir: Path) -> None:
    encoder = TextEncoder.from_path(str(tiny_model_dir), device="cpu")
    card = ModelCard(method="contrastive", data=["toy judgments"], params={"lr": 1e-3},
                     metrics={"ndcg@10": 0.5})
    out = save_encoder(encoder, tmp_path / "enc", card)
    assert list(out.rglob("*.safetensors")) and not [p for p in out.rglob("*") if p.suffix in {".bin", ".pt"}]
    readme = (out / "README.md").read_text()
    assert "contrastive" in readme and "toy judgments" in readme and "ndcg@10 | 0.5000" in readme
    loaded = load_encoder(str(out), device="cpu")  # what indexer / workers do
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


def test_classifier_round_trip(tmp_path: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples()
    model = MultiTaskClassifier(FrozenEncoder(HashingEncoder(32)))
    IntentTrainer(model, TrainingArguments(head_steps=20, show_progress=False, device="cpu"), target="kitchen",
                  train=data).train()
    path = save_classifier(model, tmp_path / "clf", ModelCard(method="head"))
    assert (path / "heads.safetensors").is_file()
    again = load_classifier(path, device="cpu")
    texts = [e.text for e in data]
    assert again.predict(texts, "kitchen") == model.predict(texts, "kitchen")
    with pytest.raises(TrainingError, match="classifier.json"):
        load_classifier(tmp_path)
