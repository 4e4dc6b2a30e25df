from pathlib import Path

import numpy as np
import pytest
import torch

from shopfusion.errors import TrainingError
from shopfusion.types import Product
from trainer.encoder_trainer import (
    EncoderTrainer,
    EncoderTrainingArguments,
    EnsembleTeacher,
    distillation_examples,
    examples_from_judgments,
    examples_from_pseudo_queries,
)
from trainer.mining import BM25, judged_split, mine_hard_negatives
from trainer.models import TextEncoder

DOCS = {"d1": "cordless drill 18 v", "d2": "drill bits steel", "d3": "green tea pack", "d4": "black tea 100",
        "d5": "steel pan iron", "d6": "soap pack", "d7": "shampoo 200 ml", "d8": "rice 5 kg"}
QUERIES = {"q1": "cordless drill", "q2": "green tea", "q3": "steel pan", "q4": "shampoo"}
QRELS = {"q1": {"d1": 3.0, "d2": 1.33}, "q2": {"d3": 3.0, "d4": 2.0}, "q3": {"d5": 2.67}, "q4": {"d7": 3.0}}


def _args(**kw) -> EncoderTrainingArguments:  # type: ignore[no-untyped-def]
    return EncoderTrainingArguments(**{**dict(steps=4, batch_size=4, learning_rate=1e-3, show_progress=False,
                                              device="cpu", max_seq_length=16), **kw})


def _encoder(path: Path) -> TextEncoder:
    return TextEncoder.from_path(str(path), max_seq_length=16, device="cpu")


def test_bm25_ranks_and_mines_unjudged_negatives() -> None:
    bm25 = BM25().fit(list(DOCS.values()), list(DOCS))
    assert bm25.search("cordless drill", 1)[0][0] == "d1"
    negatives = mine_hard_negatives(bm25, "steel drill", {"d1"}, n=1, skip_top=0)
    assert negatives and negatives[0] != "d1"
    assert judged_split(QRELS["q1"], 2.5, 1.67) == (["d1"], ["d2"])
    with pytest.raises(TrainingError):
        judged_split({}, 1.0, 2.0)


def test_graded_judgments_decide_positives_and_negatives() -> None:
    bm25 = BM25().fit(list(DOCS.values()), list(DOCS))
    examples = examples_from_judgments(QUERIES, QRELS, DOCS, positive_grade=2.5, bm25=bm25)
    assert {(e.query, e.positive) for e in examples} == {("cordless drill", DOCS["d1"]),
                                                         ("green tea", DOCS["d3"]), ("steel pan", DOCS["d5"]),
                                                         ("shampoo", DOCS["d7"])}
    assert next(e for e in examples if e.query == "cordless drill").negative == DOCS["d2"]
    with pytest.raises(TrainingError, match="positive_grade"):
        examples_from_judgments(QUERIES, QRELS, DOCS, positive_grade=5)


def test_contrastive_training_with_l2sp_lowers_the_loss(tiny_model_dir: Path) -> None:
    examples = examples_from_judgments(QUERIES, QRELS, DOCS, positive_grade=2.5,
                                       bm25=BM25().fit(list(DOCS.values()), list(DOCS)))
    trainer = EncoderTrainer(_encoder(tiny_model_dir), _args(steps=25, l2sp_strength=0.01), examples)
    out = trainer.train()
    assert trainer.phases() == ["contrastive+l2sp"]
    assert np.mean([h["contrastive"] for h in out.history[-5:]]) < np.mean([h["contrastive"] for h in out.history[:5]])
    assert out.history[0]["l2sp"] == 0.0 and out.history[-1]["l2sp"] > 0.0
    vectors = trainer.encode(["green tea"])
    assert vectors.shape == (1, 32) and np.isclose(np.linalg.norm(vectors), 1.0, atol=1e-5)


def test_pseudo_query_adaptation_and_distillation(tiny_model_dir: Path) -> None:
    products = [Product(id=d, title=t.title(), brand="Acme") for d, t in DOCS.items()]
    bm25 = BM25().fit(list(DOCS.values()), list(DOCS))
    pseudo = examples_from_pseudo_queries(products, DOCS, bm25=bm25)
    assert len(pseudo) >= len(products) - 1 and all(e.positive in DOCS.values() for e in pseudo)
    encoder = _encoder(tiny_model_dir)
    teacher = EnsembleTeacher(bm25, lambda texts: encoder.embed(texts).numpy(), alpha=0.5)
    distil = distillation_examples(QUERIES, QRELS, DOCS, teacher)
    assert all(e.teacher_margin is not None and e.negative for e in distil)
    out = EncoderTrainer(encoder, _args(loss="margin_mse"), distil).train()
    assert "margin_mse" in out.history[-1]
    with pytest.raises(TrainingError, match="margin_mse needs"):
        EncoderTrainer(encoder, _args(loss="margin_mse"), pseudo)


def test_resume_matches_uninterrupted_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    examples = examples_from_judgments(QUERIES, QRELS, DOCS, positive_grade=2.5)
    full = _encoder(tiny_model_dir)
    EncoderTrainer(full, _args(steps=6), examples).train()
    partial = _encoder(tiny_model_dir)
    args = _args(steps=6, output_dir=str(tmp_path), checkpoint_steps=3)
    trainer = EncoderTrainer(partial, args, examples)
    trainer.examples = examples  # same data
    trainer.train()
    import shutil

    shutil.rmtree(tmp_path / "checkpoint-6")  # pretend the run died after step 3
    resumed = _encoder(tiny_model_dir)
    out = EncoderTrainer(resumed, _args(steps=6, output_dir=str(tmp_path), resume=True), examples).train()
    assert [h["step"] for h in out.history] == [4.0, 5.0, 6.0]
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_encoder_arguments_are_validated() -> None:
    with pytest.raises(TrainingError):
        EncoderTrainingArguments(loss="triplet")  # type: ignore[arg-type]
    with pytest.raises(TrainingError):
        EncoderTrainingArguments(steps=0)
    with pytest.raises(TrainingError):
        EncoderTrainingArguments(resume=True)
