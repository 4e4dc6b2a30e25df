"""Intent and category classifiers adapted to a new domain with few labels.

`IntentTrainer.train()` reads as a list of named phases, each saying what it trains and what stays frozen:

| method     | phases                                                                                   |
|------------|------------------------------------------------------------------------------------------|
| `head`     | `head` (frozen encoder, new target head)                                                 |
| `finetune` | `head` warm-up, then `finetune` (top encoder layers + head, target cross-entropy)        |
| `l2sp`     | `head` warm-up, then `finetune-l2sp` (+ `lambda * ||theta - theta_source||^2`)            |
| `dann`     | `head` warm-up, then `adapt-dann`: `L_CE` (target + source heads) + `lambda * L_DANN`     |
| `mmd`      | `head` warm-up, then `adapt-mmd`: `L_CE` + `lambda * MMD(source, target features)`        |

With `source_steps > 0` a `source-multitask` phase first trains the shared encoder with one head per
source domain. Frozen-encoder phases embed each text once (optionally from a caller's cache), so a head
trains in seconds on CPU. Training is seeded (the batches of step `n` depend only on seed, phase and
`n`), resumable from `checkpoint-<step>` directories (safetensors), and shows a tqdm bar.

>>> from shopfusion.encoders import HashingEncoder
>>> from trainer.models import FrozenEncoder, MultiTaskClassifier
>>> from trainer.domains import LabeledText
>>> data = [LabeledText(t, l, "toy") for t, l in [("red tea", "tea"), ("green tea", "tea"),
...         ("steel pan", "pan"), ("iron pan", "pan")]]
>>> model = MultiTaskClassifier(FrozenEncoder(HashingEncoder(32)))
>>> out = IntentTrainer(model, TrainingArguments(method="head", head_steps=30, show_progress=False),
...                     target="toy", train=data).train()
>>> model.predict(["black tea"], "toy")
['tea']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shopfusion.errors import TrainingError
from trainer.domains import LabeledText, validate_examples
from trainer.evaluators import ClassificationEvaluator
from trainer.losses import DANNLoss, L2SPPenalty, MMDLoss
from trainer.models import MultiTaskClassifier, pick_device

Method = Literal["head", "finetune", "l2sp", "dann", "mmd"]
METHODS: tuple[str, ...] = ("head", "finetune", "l2sp", "dann", "mmd")


@dataclass
class TrainingArguments:
    """Validated settings of an intent/category training run (defaults are CPU-friendly)."""

    method: Method = "head"
    head_steps: int = 300
    """Steps of the frozen-encoder head phase (every method starts with it)."""
    adapt_steps: int = 100
    """Steps of the encoder phase of finetune / l2sp / dann / mmd."""
    source_steps: int = 0
    """Steps of the multi-task source phase (0 skips it; needs source examples)."""
    batch_size: int = 32
    head_lr: float = 5e-3
    encoder_lr: float = 3e-5
    weight_decay: float = 0.01
    l2sp_strength: float = 0.01
    da_weight: float = 0.1
    """lambda in `L_CE + lambda * L_DA` (dann, mmd)."""
    balance_classes: bool = True
    """Sample batches so every label is drawn equally often (imbalanced `k=all` data would otherwise
    bias the head toward the largest classes)."""
    trainable_layers: int | None = 2
    """Top transformer layers trained in encoder phases; None trains every encoder parameter."""
    max_seq_length: int = 48
    seed: int = 0
    output_dir: str | None = None
    checkpoint_steps: int = 0
    """Write a checkpoint every this many global steps (0: only at the end of each phase when output_dir)."""
    resume: bool = False
    device: str = "auto"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainingError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        for name in ("head_steps", "adapt_steps", "source_steps", "checkpoint_steps"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise TrainingError(f"batch_size must be at least 2, got {self.batch_size}")
        for name in ("head_lr", "encoder_lr"):
            if not getattr(self, name) > 0:
                raise TrainingError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("l2sp_strength", "da_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.trainable_layers is not None and self.trainable_layers < 0:
            raise TrainingError("trainable_layers must be >= 0 or None (all layers)")
        if self.resume and not self.output_dir:
            raise TrainingError("resume needs output_dir: the directory holding checkpoint-<step> folders")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Phase:
    """One named stage of training: what trains, on which data, with which extra loss."""

    name: str
    steps: int
    train_encoder: bool
    domains: tuple[str, ...]
    adaptation: Literal["none", "l2sp", "dann", "mmd"] = "none"


@dataclass
class TrainOutput:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)


class IntentTrainer:
    """Trains a `MultiTaskClassifier` for a `target` domain from its labelled `train` examples.

    `source`: labelled examples of other domains (multi-task phase, DANN / MMD source side);
    `unlabeled`: target texts without labels (DANN / MMD target side; the labelled texts count too);
    `evaluator`: scores the model at the end; `embedding_cache`: text -> vector of the *untrained*
    encoder, shared across runs so a frozen encoder embeds each text once.
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        args: TrainingArguments,
        *,
        target: str,
        train: Sequence[LabeledText],
        source: Sequence[LabeledText] = (),
        unlabeled: Sequence[LabeledText] | Sequence[str] = (),
        evaluator: ClassificationEvaluator | None = None,
        embedding_cache: dict[str, np.ndarray] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self.args = args
        self.target = target
        validate_examples(train, min_per_label=1, labels=labels, what=f"training data of domain {target!r}")
        wrong = sorted({e.domain for e in train} - {target})
        if wrong:
            raise TrainingError(f"training examples of domain {wrong[0]!r} given for target {target!r}")
        self.train_examples = list(train)
        self.source = [e for e in source if e.domain != target]
        self.unlabeled = [u.text if isinstance(u, LabeledText) else u for u in unlabeled]
        self.evaluator = evaluator
        self.cache = embedding_cache if embedding_cache is not None else {}
        self.labels = list(labels) if labels is not None else sorted({e.label for e in train})
        self.device = pick_device(args.device)
        self._encoder_changed = False
        self.history: list[dict[str, float]] = []
        needs_source = args.method in ("dann", "mmd") or args.source_steps > 0
        if needs_source and not self.source:
            raise TrainingError(f"method {args.method!r} needs labelled source-domain examples (`source`)")
        if args.method != "head" and not getattr(model.encoder, "trainable", False):
            raise TrainingError(
                f"method {args.method!r} trains the encoder, but this encoder is frozen (hashing or"
                " precomputed vectors): use method `head` or a sentence-transformers encoder"
            )
        if needs_source:
            for domain in sorted({e.domain for e in self.source}):
                validate_examples([e for e in self.source if e.domain == domain], what=f"source {domain!r}")

    # -- the plan -----------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        a = self.args
        source_domains = tuple(sorted({e.domain for e in self.source}))
        plan: list[Phase] = []
        if a.source_steps and self.source:
            plan.append(Phase("source-multitask", a.source_steps, True, source_domains))
        plan.append(Phase("head", a.head_steps, False, (self.target,)))
        if a.method == "finetune":
            plan.append(Phase("finetune", a.adapt_steps, True, (self.target,)))
        elif a.method == "l2sp":
            plan.append(Phase("finetune-l2sp", a.adapt_steps, True, (self.target,), "l2sp"))
        elif a.method in ("dann", "mmd"):
            plan.append(Phase(f"adapt-{a.method}", a.adapt_steps, True, (self.target, *source_domains),
                              a.method))  # type: ignore[arg-type]
        return [p for p in plan if p.steps > 0]

    def train(self) -> TrainOutput:
        """Run every phase in order (skipping those a resumed checkpoint finished) and evaluate."""
        self._set_seed(self.args.seed)
        self.model.to(self.device)
        if self.target not in self.model.heads:
            self.model.heads.add(self.target, self.labels)
        for domain in sorted({e.domain for e in self.source}):
            if domain not in self.model.heads:
                self.model.heads.add(domain, sorted({e.label for e in self.source if e.domain == domain}))
        self.model.to(self.device)
        plan = self.phases()
        resume = self._resume_point()
        global_step = 0
        for index, phase in enumerate(plan):
            if resume is not None and index < resume["phase"]:
                global_step += phase.steps
                continue
            point = resume if resume is not None and index == resume["phase"] and resume["path"] else None
            global_step = self._run_phase(index, phase, point["step"] if point else 0, global_step, point)
        metrics = self.evaluate() if self.evaluator is not None else {}
        return TrainOutput(metrics=metrics, history=self.history, phases=[p.name for p in plan])

    def evaluate(self) -> dict[str, float]:
        """Score the model with the evaluator; an untouched frozen encoder reuses cached embeddings."""
        assert self.evaluator is not None
        if self._encoder_changed or not isinstance(self.evaluator, ClassificationEvaluator):
            return self.evaluator(self.model)
        texts = self.evaluator.texts
        features = self._frozen_embeddings([LabeledText(t, "", self.target) for t in texts])
        self.model.eval()
        with torch.no_grad():
            index = self.model.heads(features, self.evaluator.domain).argmax(dim=-1).cpu().tolist()
        labels = self.model.heads.labels[self.evaluator.domain]
        return self.evaluator.score([labels[i] for i in index])

    # -- one phase ----------------------------------------------------------------------------------
    def _run_phase(self, index: int, phase: Phase, first_step: int, global_step: int,
                   resume_from: dict[str, Any] | None) -> int:
        from tqdm.auto import tqdm

        a = self.args
        encoder = self.model.encoder
        encoder.freeze()
        if phase.train_encoder:
            encoder.unfreeze(a.trainable_layers)
        labelled = self.source if phase.name == "source-multitask" else self.train_examples
        extra: dict[str, nn.Module] = {}
        if phase.adaptation == "l2sp":
            extra["l2sp"] = L2SPPenalty(encoder.trainable_named_parameters(), a.l2sp_strength).to(self.device)
        elif phase.adaptation == "dann":
            extra["dann"] = DANNLoss(encoder.dim).to(self.device)
        elif phase.adaptation == "mmd":
            extra["mmd"] = MMDLoss().to(self.device)
        groups = [{"params": [p for d in phase.domains for p in self.model.heads.heads[_head_key(self, d)]
                              .parameters()], "lr": a.head_lr}]
        if phase.train_encoder:
            groups.append({"params": [p for _, p in encoder.trainable_named_parameters()], "lr": a.encoder_lr})
        if "dann" in extra:
            groups.append({"params": list(extra["dann"].parameters()), "lr": a.head_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=a.weight_decay)
        modules = {"model": self.model, **extra}
        if resume_from is not None:
            from trainer.artifacts import load_checkpoint

            load_checkpoint(resume_from["path"], modules, optimizer)
        frozen_vectors = None if phase.train_encoder else self._frozen_embeddings(labelled)
        weights = _balanced_weights(labelled) if a.balance_classes else None
        self.model.train()
        bar = tqdm(range(first_step, phase.steps), desc=phase.name, disable=not a.show_progress, leave=False)
        global_step += first_step
        for step in bar:
            torch.manual_seed(a.seed * 1_000_003 + index * 10_007 + step)
            rng = np.random.default_rng([a.seed, index, step])
            batch = _sample(labelled, a.batch_size, rng, weights)
            parts: dict[str, torch.Tensor] = {}
            if frozen_vectors is not None:
                features = frozen_vectors[[i for i, _ in batch]]
            else:
                features = encoder([labelled[i].text for i, _ in batch])
            examples = [e for _, e in batch]
            if phase.adaptation in ("dann", "mmd"):
                # labelled source batch (its own heads) + unlabeled target texts for the domain loss
                source_batch = [e for _, e in _sample(self.source, max(2, a.batch_size // 2), rng)]
                source_features = encoder([e.text for e in source_batch])
                target_features = features
                if self.unlabeled:
                    picked = rng.choice(len(self.unlabeled), size=min(max(2, a.batch_size // 4),
                                                                      len(self.unlabeled)), replace=False)
                    target_features = torch.cat([features, encoder([self.unlabeled[i] for i in picked])])
                if phase.adaptation == "dann":
                    dann = extra["dann"]
                    assert isinstance(dann, DANNLoss)
                    dann.reverse.alpha = _dann_schedule(step / max(1, phase.steps))
                parts["da"] = extra[phase.adaptation](source_features, target_features)
                features = torch.cat([features, source_features])
                examples = examples + source_batch
            parts["ce"] = self._cross_entropy(features, examples)
            loss = parts["ce"]
            if "da" in parts:
                loss = loss + a.da_weight * parts["da"]
            if phase.adaptation == "l2sp":
                parts["l2sp"] = extra["l2sp"]()
                loss = loss + parts["l2sp"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            global_step += 1
            record = {"step": float(global_step), **{k: float(v.detach()) for k, v in parts.items()}}
            record["loss"] = float(loss.detach())
            self.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if a.output_dir and a.checkpoint_steps and global_step % a.checkpoint_steps == 0:
                self._checkpoint(modules, optimizer, index, step + 1, global_step)
        if phase.train_encoder:
            self._encoder_changed = True
            encoder.changed = True
            encoder.freeze()
        if a.output_dir:
            self._checkpoint(modules, optimizer, index, phase.steps, global_step)
        return global_step

    def _cross_entropy(self, features: torch.Tensor, examples: list[LabeledText]) -> torch.Tensor:
        """Mean cross-entropy over the batch, each example scored by its own domain's head."""
        total = features.new_zeros(())
        for domain in sorted({e.domain for e in examples}):
            rows = [i for i, e in enumerate(examples) if e.domain == domain]
            logits = self.model.heads(features[rows], domain)
            labels = self.model.heads.label_index(domain, [examples[i].label for i in rows]).to(logits.device)
            total = total + F.cross_entropy(logits, labels, reduction="sum")
        return total / len(examples)

    def _frozen_embeddings(self, examples: Sequence[LabeledText]) -> torch.Tensor:
        """Embeddings of a frozen encoder: from the shared cache while the encoder is untouched."""
        texts = [e.text for e in examples]
        if self._encoder_changed:
            return self.model.encoder.embed(texts).detach()
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vectors = self.model.encoder.embed(missing).detach().cpu().numpy()
            self.cache.update(zip(missing, vectors, strict=True))
        return torch.from_numpy(np.stack([self.cache[t] for t in texts])).float().to(self.device)

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint(self, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer, phase: int,
                    step: int, global_step: int) -> None:
        from trainer.artifacts import save_checkpoint

        assert self.args.output_dir is not None
        path = Path(self.args.output_dir) / f"checkpoint-{global_step}"
        save_checkpoint(path, modules, optimizer, {"phase": phase, "step": step, "global_step": global_step,
                                                   "encoder_changed": self._encoder_changed,
                                                   "args": self.args.to_dict()})

    def _resume_point(self) -> dict[str, Any] | None:
        if not self.args.resume:
            return None
        import json

        from trainer.artifacts import latest_checkpoint

        assert self.args.output_dir is not None
        path = latest_checkpoint(self.args.output_dir)
        if path is None:
            return None
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["state"]
        if state["args"]["method"] != self.args.method or state["args"]["seed"] != self.args.seed:
            raise TrainingError(f"checkpoint {path} was written by another run (method/seed differ):"
                                " use a fresh output_dir or the same arguments")
        plan = self.phases()
        phase, step = int(state["phase"]), int(state["step"])
        self._encoder_changed = bool(state.get("encoder_changed"))
        self.model.encoder.changed = self._encoder_changed or self.model.encoder.changed
        if step >= plan[phase].steps:  # that phase was finished: restore its weights, go on with the next
            _load_model_only(path, self.model)
            return {"phase": phase + 1, "step": 0, "path": None}
        self._encoder_changed = bool(state.get("encoder_changed"))
        return {"phase": phase, "step": step, "path": path}

    @staticmethod
    def _set_seed(seed: int) -> None:
        import random

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def _load_model_only(path: Path, model: nn.Module) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path / "model.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})


def _head_key(trainer: IntentTrainer, domain: str) -> str:
    from trainer.heads import _key

    return _key(domain)


def _sample(examples: Sequence[LabeledText], batch_size: int, rng: np.random.Generator,
            weights: np.ndarray | None = None) -> list[tuple[int, LabeledText]]:
    size = min(batch_size, len(examples))
    return [(int(i), examples[int(i)]) for i in rng.choice(len(examples), size=size, replace=False, p=weights)]


def _balanced_weights(examples: Sequence[LabeledText]) -> np.ndarray:
    """Sampling probabilities proportional to 1 / (examples of the same domain and label)."""
    counts: dict[tuple[str, str], int] = {}
    for e in examples:
        counts[(e.domain, e.label)] = counts.get((e.domain, e.label), 0) + 1
    weights = np.array([1.0 / counts[(e.domain, e.label)] for e in examples])
    return weights / weights.sum()


def _dann_schedule(progress: float) -> float:
    """Ganin et al.'s ramp of the reversal strength from 0 to 1 over training."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
