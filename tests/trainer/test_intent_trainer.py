from pathlib import Path

import pytest
import torch

from shopfusion.encoders import HashingEncoder
from shopfusion.errors import TrainingError
from trainer.evaluators import ClassificationEvaluator
from trainer.intent_trainer import METHODS, IntentTrainer, TrainingArguments
from trainer.models import FrozenEncoder, MultiTaskClassifier, TextEncoder


def _fast(**kw) -> TrainingArguments:  # type: ignore[no-untyped-def]
    base = dict(head_steps=20, adapt_steps=4, batch_size=8, show_progress=False, device="cpu")
    return TrainingArguments(**{**base, **kw})


def _tiny(tiny_model_dir: Path) -> MultiTaskClassifier:
    return MultiTaskClassifier(TextEncoder.from_path(str(tiny_model_dir), max_seq_length=16, device="cpu"))


def test_head_on_frozen_hashing_encoder_learns_toy_classes(make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples("kitchen", per_label=8)
    model = MultiTaskClassifier(FrozenEncoder(HashingEncoder(64)))
    ev = ClassificationEvaluator([e.text for e in data], [e.label for e in data], "kitchen")
    out = IntentTrainer(model, _fast(head_steps=60, head_lr=0.05), target="kitchen", train=data,
                        evaluator=ev).train()
    assert out.phases == ["head"]
    assert out.metrics["accuracy"] > 0.9


@pytest.mark.parametrize("method", [m for m in METHODS if m != "head"])
def test_every_adaptation_method_runs_its_phases(method: str, tiny_model_dir: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    target, source = make_examples("kitchen"), make_examples("tools") + make_examples("care")
    model = _tiny(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.encoder.model.named_parameters()}
    out = IntentTrainer(model, _fast(method=method, trainable_layers=1), target="kitchen", train=target, source=source,
                        unlabeled=["green tea", "steel pot"]).train()
    assert out.phases[0] == "head" and len(out.phases) == 2
    changed = [n for n, p in model.encoder.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(".layer.1." in n or "pooler" in n for n in changed)  # top layer only
    if method in ("dann", "mmd"):
        assert "da" in out.history[-1]
        assert {"tools", "care"} <= set(model.heads.domains)
    if method == "l2sp":
        assert "l2sp" in out.history[-1]


def test_seeded_runs_are_identical(tiny_model_dir: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples()
    losses = []
    for _ in range(2):
        model = _tiny(tiny_model_dir)
        out = IntentTrainer(model, _fast(method="finetune", seed=3), target="kitchen", train=data).train()
        losses.append([h["loss"] for h in out.history])
    assert losses[0] == losses[1]


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path,
                                                             make_examples) -> None:  # type: ignore[no-untyped-def]
    data = make_examples()
    full = _tiny(tiny_model_dir)
    IntentTrainer(full, _fast(method="l2sp", adapt_steps=6), target="kitchen", train=data).train()

    out_dir = tmp_path / "run"
    first = _tiny(tiny_model_dir)
    IntentTrainer(first, _fast(method="l2sp", adapt_steps=3, output_dir=str(out_dir)), target="kitchen",
                  train=data).train()  # stops half-way through the l2sp phase (6 steps planned below)
    ckpt = out_dir / "checkpoint-23"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.safetensors").is_file()
    state = (ckpt / "trainer_state.json").read_text()
    (ckpt / "trainer_state.json").write_text(state.replace('"adapt_steps": 3', '"adapt_steps": 6'))
    resumed = _tiny(tiny_model_dir)
    trainer = IntentTrainer(resumed, _fast(method="l2sp", adapt_steps=6, output_dir=str(out_dir), resume=True),
                            target="kitchen", train=data)
    out = trainer.train()
    assert [h["step"] for h in out.history] == [24.0, 25.0, 26.0]
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_invalid_arguments_and_inputs_are_training_errors(make_examples) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TrainingError, match="unknown method"):
        TrainingArguments(method="magic")  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="batch_size"):
        TrainingArguments(batch_size=1)
    with pytest.raises(TrainingError, match="resume needs output_dir"):
        TrainingArguments(resume=True)
    frozen = MultiTaskClassifier(FrozenEncoder(HashingEncoder(16)))
    data = make_examples()
    with pytest.raises(TrainingError, match="encoder is frozen"):
        IntentTrainer(frozen, _fast(method="finetune"), target="kitchen", train=data)
    with pytest.raises(TrainingError, match="needs labelled source"):
        IntentTrainer(frozen, _fast(method="dann"), target="kitchen", train=data)
    with pytest.raises(TrainingError, match="unknown label"):
        IntentTrainer(frozen, _fast(), target="kitchen", train=data, labels=["tea", "pan"])
    with pytest.raises(TrainingError, match="domain 'tools'"):
        IntentTrainer(frozen, _fast(), target="kitchen", train=data + make_examples("tools"))


def test_multitask_source_phase_trains_one_head_per_source_domain(tiny_model_dir: Path,
                                                                   make_examples) -> None:  # type: ignore[no-untyped-def]
    model = _tiny(tiny_model_dir)
    source = make_examples("tools") + make_examples("care")
    trainer = IntentTrainer(model, _fast(method="head", source_steps=3, trainable_layers=1), target="kitchen",
                            train=make_examples(), source=source)
    out = trainer.train()
    assert out.phases == ["source-multitask", "head"]
    assert set(model.heads.domains) == {"kitchen", "tools", "care"}
    assert model.predict(["cordless drill"], "tools")[0] in {"drill", "saw"}


def test_balanced_sampling_draws_rare_labels_as_often_as_common_ones() -> None:
    import numpy as np

    from trainer.domains import LabeledText
    from trainer.intent_trainer import _balanced_weights, _sample

    data = [LabeledText(f"a{i}", "a", "d") for i in range(90)] + [LabeledText(f"b{i}", "b", "d") for i in range(10)]
    rng = np.random.default_rng(0)
    drawn = [e.label for _ in range(200) for _, e in _sample(data, 4, rng, _balanced_weights(data))]
    assert 0.4 < drawn.count("b") / len(drawn) < 0.6
