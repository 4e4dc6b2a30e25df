"""Dual-encoder training: supervised contrastive fine-tuning, unsupervised adaptation to a new catalog,
and distillation from a stronger scorer.

Training data are `ContrastiveExample`s (query, positive, optional hard negative, optional teacher margin),
made by one of three builders:

- `examples_from_judgments`: graded judgments decide positives (grade >= `positive_grade`); the hard
  negative is a judged-irrelevant product or a BM25-mined unjudged one;
- `examples_from_pseudo_queries`: no labels: pseudo-queries built from the target catalog's own product
  fields (`trainer.datasets.pseudo_queries`) with BM25-mined hard negatives from the same catalog;
- `distillation_examples`: (query, positive, negative) triples scored by a teacher
  (`EnsembleTeacher`: BM25 + dense ensemble) for the MarginMSE loss.

`EncoderTrainer.train()` runs one phase: in-batch negatives (`InBatchContrastiveLoss`) or `MarginMSELoss`,
optionally with L2-SP toward the source weights (`lambda * ||theta - theta_source||^2`). Seeded,
checkpointed in safetensors, resumable, with a tqdm bar. Save the result with
`trainer.artifacts.save_encoder` (a normal sentence-transformers directory with a model card).

Example (a tiny random model; the real one is `TextEncoder.from_path("default")`)::

    encoder = TextEncoder.from_path("default", max_seq_length=48)
    examples = examples_from_judgments(queries, qrels, documents, bm25=BM25().fit(texts, ids))
    EncoderTrainer(encoder, EncoderTrainingArguments(steps=200, l2sp_strength=0.01), examples).train()
    save_encoder(encoder, "models/hd-encoder", ModelCard(method="contrastive", data=["homedepot"]))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from shopfusion.errors import TrainingError
from shopfusion.types import Product
from trainer.losses import InBatchContrastiveLoss, L2SPPenalty, MarginMSELoss
from trainer.mining import BM25, judged_split, mine_hard_negatives
from trainer.models import TextEncoder, pick_device

LossName = Literal["contrastive", "margin_mse"]


@dataclass(frozen=True)
class ContrastiveExample:
    query: str
    positive: str
    negative: str | None = None
    teacher_margin: float | None = None


@dataclass
class EncoderTrainingArguments:
    """Validated settings of a dual-encoder run (defaults are CPU-friendly)."""

    loss: LossName = "contrastive"
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scale: float = 20.0
    """Similarity scale of the in-batch contrastive loss (temperature 1/scale)."""
    l2sp_strength: float = 0.0
    """lambda of the L2-SP penalty toward the starting (source) weights; 0 turns it off."""
    use_hard_negatives: bool = True
    trainable_layers: int | None = None
    """Top transformer layers to train; None trains the whole encoder."""
    max_seq_length: int = 64
    seed: int = 0
    output_dir: str | None = None
    checkpoint_steps: int = 0
    resume: bool = False
    device: str = "auto"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("contrastive", "margin_mse"):
            raise TrainingError(f"loss must be `contrastive` or `margin_mse`, got {self.loss!r}")
        if self.steps < 1:
            raise TrainingError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise TrainingError("batch_size must be at least 2 (in-batch negatives need company)")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainingError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.l2sp_strength < 0 or self.checkpoint_steps < 0:
            raise TrainingError("l2sp_strength and checkpoint_steps must be >= 0")
        if self.resume and not self.output_dir:
            raise TrainingError("resume needs output_dir: the directory holding checkpoint-<step> folders")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- training data ------------------------------------------------------------------------------------
def examples_from_judgments(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    documents: Mapping[str, str],
    *,
    positive_grade: float = 2.5,
    negative_grade: float = 1.67,
    bm25: BM25 | None = None,
    seed: int = 0,
) -> list[ContrastiveExample]:
    """One example per (query, positive) pair; the negative is a judged-irrelevant product when there is
    one, else a BM25-mined unjudged product (when `bm25` is given), else none (in-batch negatives only)."""
    rng = np.random.default_rng(seed)
    out: list[ContrastiveExample] = []
    for qid, judged in qrels.items():
        if qid not in queries:
            continue
        positives, negatives = judged_split(judged, positive_grade, negative_grade)
        negatives = [d for d in negatives if d in documents]
        for pid in positives:
            if pid not in documents:
                continue
            negative = None
            if negatives:
                negative = documents[negatives[int(rng.integers(len(negatives)))]]
            elif bm25 is not None:
                mined = mine_hard_negatives(bm25, queries[qid], set(judged), n=1, rng=rng)
                negative = documents[mined[0]] if mined else None
            out.append(ContrastiveExample(queries[qid], documents[pid], negative))
    if not out:
        raise TrainingError(
            f"no judged pair reaches positive_grade {positive_grade}: lower it or check that the query and"
            " product ids of the qrels match the queries and the catalog"
        )
    return out


def examples_from_pseudo_queries(
    products: Sequence[Product],
    documents: Mapping[str, str],
    *,
    per_product: int = 1,
    bm25: BM25 | None = None,
    seed: int = 0,
) -> list[ContrastiveExample]:
    """Label-free examples for a new catalog: pseudo-queries from each product's own fields (never its
    category names), the product as positive and a BM25-mined product of the same catalog as negative."""
    from trainer.datasets import pseudo_queries

    rng = np.random.default_rng(seed)
    out = []
    for pq in pseudo_queries(products, per_product=per_product, seed=seed):
        negative = None
        if bm25 is not None:
            mined = mine_hard_negatives(bm25, pq.query, {pq.product_id}, n=1, skip_top=3, rng=rng)
            negative = documents[mined[0]] if mined else None
        out.append(ContrastiveExample(pq.query, documents[pq.product_id], negative))
    if not out:
        raise TrainingError("no pseudo-query could be built: products need titles of two or more words")
    return out


class EnsembleTeacher:
    """Teacher scores `alpha * BM25(q, d) / max_BM25(q) + (1 - alpha) * cos(q, d)` from a frozen dense
    encoder: a stronger scorer than either leg alone, used to distil into the dual encoder."""

    def __init__(self, bm25: BM25, encode: Any, alpha: float = 0.3) -> None:
        if not 0 <= alpha <= 1:
            raise TrainingError(f"alpha must be in [0, 1], got {alpha}")
        self.bm25 = bm25
        self.encode = encode
        self.alpha = alpha

    def margins(self, triples: Sequence[tuple[str, str, str, str, str]]) -> np.ndarray:
        """Teacher margin s(q, p) - s(q, n) for (query, pos_id, pos_text, neg_id, neg_text) triples."""
        queries = [t[0] for t in triples]
        q = np.asarray(self.encode(queries), dtype=np.float32)
        p = np.asarray(self.encode([t[2] for t in triples]), dtype=np.float32)
        n = np.asarray(self.encode([t[4] for t in triples]), dtype=np.float32)
        dense = (q * p).sum(1) - (q * n).sum(1)
        lexical = np.zeros(len(triples), dtype=np.float32)
        for i, (query, pid, _, nid, _) in enumerate(triples):
            scores = self.bm25.scores(query)
            top = float(scores.max()) or 1.0
            pair = self.bm25.score(query, [pid, nid]) if scores.any() else np.zeros(2)
            lexical[i] = (pair[0] - pair[1]) / top
        return self.alpha * lexical + (1 - self.alpha) * dense


def distillation_examples(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    documents: Mapping[str, str],
    teacher: EnsembleTeacher,
    *,
    per_query: int = 2,
    seed: int = 0,
) -> list[ContrastiveExample]:
    """(query, better, worse) triples: the best-graded judged product against a lower-graded one or a
    BM25-mined unjudged one, each labelled with the teacher's margin."""
    rng = np.random.default_rng(seed)
    triples = []
    for qid, judged in qrels.items():
        if qid not in queries:
            continue
        ranked = sorted((g, d) for d, g in judged.items() if d in documents)
        if not ranked:
            continue
        best = ranked[-1][1]
        others = [d for g, d in ranked if g < ranked[-1][0]]
        others += mine_hard_negatives(teacher.bm25, queries[qid], set(judged), n=per_query, rng=rng)
        for nid in others[:per_query]:
            triples.append((queries[qid], best, documents[best], nid, documents[nid]))
    if not triples:
        raise TrainingError("no distillation triple could be built from these judgments")
    margins = teacher.margins(triples)
    return [ContrastiveExample(t[0], t[2], t[4], float(m)) for t, m in zip(triples, margins, strict=True)]


# -- the trainer --------------------------------------------------------------------------------------
@dataclass
class EncoderTrainOutput:
    metrics: dict[str, float]
    history: list[dict[str, float]]


class EncoderTrainer:
    """Fine-tunes a `TextEncoder` on `ContrastiveExample`s; `evaluator(encode) -> metrics` at the end."""

    def __init__(self, encoder: TextEncoder, args: EncoderTrainingArguments,
                 examples: Sequence[ContrastiveExample], evaluator: Any = None) -> None:
        if not getattr(encoder, "trainable", False):
            raise TrainingError("the dual encoder must be a sentence-transformers model (TextEncoder)")
        if not examples:
            raise TrainingError("no training examples: build them with examples_from_judgments or"
                                " examples_from_pseudo_queries")
        if args.loss == "margin_mse" and any(e.negative is None or e.teacher_margin is None for e in examples):
            raise TrainingError("margin_mse needs a negative and a teacher margin on every example:"
                                " build them with distillation_examples")
        self.encoder = encoder
        self.args = args
        self.examples = list(examples)
        self.evaluator = evaluator
        self.device = pick_device(args.device)
        self.history: list[dict[str, float]] = []

    def phases(self) -> list[str]:
        name = "distill-margin-mse" if self.args.loss == "margin_mse" else "contrastive"
        return [name + ("+l2sp" if self.args.l2sp_strength > 0 else "")]

    def train(self) -> EncoderTrainOutput:
        from tqdm.auto import tqdm

        a = self.args
        torch.manual_seed(a.seed)
        self.encoder.to(self.device)
        self.encoder.model.max_seq_length = a.max_seq_length
        self.encoder.freeze()
        self.encoder.unfreeze(a.trainable_layers)
        params = [p for _, p in self.encoder.trainable_named_parameters()]
        l2sp = L2SPPenalty(self.encoder.trainable_named_parameters(), a.l2sp_strength).to(self.device) \
            if a.l2sp_strength > 0 else None
        loss_fn = InBatchContrastiveLoss(a.scale) if a.loss == "contrastive" else MarginMSELoss()
        optimizer = torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=a.weight_decay)
        warmup = max(1, int(a.warmup_ratio * a.steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to zero
            optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (a.steps - s) / max(1, a.steps - warmup)))
        modules: dict[str, torch.nn.Module] = {"encoder": self.encoder.model}
        if l2sp is not None:
            modules["l2sp"] = l2sp
        first = self._resume(modules, optimizer, scheduler)
        self.encoder.train()
        bar = tqdm(range(first, a.steps), desc=self.phases()[0], disable=not a.show_progress, leave=False)
        for step in bar:
            torch.manual_seed(a.seed * 1_000_003 + step)
            rng = np.random.default_rng([a.seed, step])
            batch = [self.examples[int(i)] for i in rng.choice(len(self.examples),
                                                               size=min(a.batch_size, len(self.examples)),
                                                               replace=False)]
            q = self.encoder([e.query for e in batch])
            p = self.encoder([e.positive for e in batch])
            parts: dict[str, torch.Tensor] = {}
            if a.loss == "contrastive":
                negs = [e.negative for e in batch if e.negative is not None] if a.use_hard_negatives else []
                n = self.encoder(negs) if negs else None
                parts["contrastive"] = loss_fn(q, p, n)
            else:
                n = self.encoder([e.negative for e in batch])  # type: ignore[misc]
                margins = torch.tensor([e.teacher_margin for e in batch], device=q.device)
                parts["margin_mse"] = loss_fn(q, p, n, margins)
            loss = sum(parts.values())
            if l2sp is not None:
                parts["l2sp"] = l2sp()
                loss = loss + parts["l2sp"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            record = {"step": float(step + 1), "loss": float(loss.detach()),  # type: ignore[union-attr]
                      **{k: float(v.detach()) for k, v in parts.items()}}
            self.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if a.output_dir and a.checkpoint_steps and (step + 1) % a.checkpoint_steps == 0:
                self._checkpoint(modules, optimizer, scheduler, step + 1)
        self.encoder.eval()
        self.encoder.freeze()
        metrics = {}
        if self.evaluator is not None:
            metrics = self.evaluator(lambda texts: self.encode(texts))
        return EncoderTrainOutput(metrics=metrics, history=self.history)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Normalised float32 embeddings of the current weights (what an index would store)."""
        vectors = torch.nn.functional.normalize(self.encoder.embed(list(texts), batch_size), dim=-1)
        return vectors.cpu().numpy().astype(np.float32)

    def _checkpoint(self, modules: Mapping[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                    scheduler: Any, step: int) -> None:
        from trainer.artifacts import save_checkpoint

        assert self.args.output_dir is not None
        save_checkpoint(Path(self.args.output_dir) / f"checkpoint-{step}", modules, optimizer,
                        {"step": step, "scheduler": scheduler.state_dict(), "args": self.args.to_dict()})

    def _resume(self, modules: Mapping[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                scheduler: Any) -> int:
        if not self.args.resume:
            return 0
        from trainer.artifacts import latest_checkpoint, load_checkpoint

        assert self.args.output_dir is not None
        path = latest_checkpoint(self.args.output_dir)
        if path is None:
            return 0
        saved = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["state"]["args"]
        if saved["seed"] != self.args.seed or saved["loss"] != self.args.loss:
            raise TrainingError(f"checkpoint {path} was written by another run (loss/seed differ):"
                                " use a fresh output_dir or the same arguments")
        state = load_checkpoint(path, modules, optimizer)
        scheduler.load_state_dict(state["scheduler"])
        return int(state["step"])
