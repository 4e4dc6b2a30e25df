"""Training the intent model: heads on frozen query embeddings, evaluated on held-out data.

`train_intent_model` reads as its phases: assemble examples (`ranker.intent_data`), embed them with the
index's encoder (the model must see the vectors the dense leg computes at query time), fit the heads
(`intent` over all examples, `specificity` over product lookups, `leg` over judged queries), then score
the model on held-out data that shares no utterance, template or class name with training: CLINC150's
test split, the other half of WANDS, held-out seed templates, and held-out product queries if given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.intent import (
    INTENTS,
    LEGS,
    PRODUCT_LOOKUP,
    SPECIFICITIES,
    IntentModel,
    RuleLayer,
    SoftmaxHead,
    accuracy_report,
    head_features,
    label_counts,
)
from ranker.intent_data import (
    LabeledQuery,
    clinc_examples,
    product_examples,
    read_jsonl,
    seed_examples,
    split_class_names,
)
from shopfusion.errors import TrainingError

log = logging.getLogger(__name__)

Encode = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class IntentTrainingArguments:
    """What the intent model trains on; paths are inside `data_dir` (../shared/data by default)."""

    data_dir: Path
    clinc_per_intent: int = 40
    clinc_heldout_per_intent: int = 10
    seed_per_template: int = 25
    l2: float = 1e-4
    steps: int = 800
    lr: float = 0.1
    service_threshold: float = 0.9
    folds: int = 5
    """Blocks for the out-of-fold `leg` predictions the policy is learned on."""
    intent_features: tuple[str, ...] = ("embedding", "surface")
    """What the intent head sees: the query embedding, and `surface` features (length, digits, part numbers)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.data_dir / "clinc150" / "queries.jsonl").is_file():
            raise TrainingError(f"{self.data_dir}/clinc150/queries.jsonl not found: pass --data-dir (the shared"
                                " data folder holding clinc150/ and wands_queries/)")
        if self.steps < 1 or self.l2 < 0 or not 0.5 <= self.service_threshold <= 1.0:
            raise TrainingError("steps must be >= 1, l2 >= 0 and service_threshold within [0.5, 1]")


@dataclass
class IntentTrainingOutput:
    model: IntentModel
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    oof_legs: dict[int, str] = field(default_factory=dict)
    """Out-of-fold `leg` predictions for the judged training queries (row -> leg): what the policy must
    be learned on, since the `leg` head has seen those queries' labels."""


def train_intent_model(args: IntentTrainingArguments, encode: Encode, *, encoder_id: str,
                       product_queries: Sequence[str], product_vectors: np.ndarray,
                       leg_labels: Mapping[int, str] | None = None, brands: Sequence[str] = (),
                       heldout_queries: Sequence[str] = (), heldout_vectors: np.ndarray | None = None,
                       heldout_legs: Mapping[int, str] | None = None) -> IntentTrainingOutput:
    """Fit the heads; `product_queries`/`product_vectors` are the judged validation queries (and their
    vectors, already computed by the dense leg), `leg_labels` maps their row to the winning leg."""
    rules = RuleLayer(brands)
    # phase 1: examples
    clinc_path = args.data_dir / "clinc150" / "queries.jsonl"
    service = clinc_examples(clinc_path, ["train", "val", "oos_train", "oos_val"], per_intent=args.clinc_per_intent,
                             seed=args.seed)
    service_test = clinc_examples(clinc_path, ["test", "oos_test"], per_intent=args.clinc_heldout_per_intent,
                                  seed=args.seed)
    wands_path = args.data_dir / "wands_queries" / "queries.jsonl"
    wands = read_jsonl(wands_path) if wands_path.is_file() else []
    wands_train = product_examples([str(r["text"]) for r in wands[0::2]], rules, "wands")
    wands_test = product_examples([str(r["text"]) for r in wands[1::2]], rules, "wands")
    train_names, test_names = split_class_names(str(r.get("category") or "") for r in wands)
    if len(train_names) < 2:
        train_names = test_names = ["sofa", "armchair", "bookcase", "desk", "table lamp", "rug"]
    seeds = seed_examples(train_names, "train", per_template=args.seed_per_template, seed=args.seed)
    seeds_test = seed_examples(test_names, "heldout", per_template=max(args.seed_per_template // 2, 2), seed=args.seed)
    products = product_examples(product_queries, rules, "validation queries")

    # phase 2: embeddings (validation queries reuse the dense leg's vectors)
    other = service + wands_train + seeds
    other_test = service_test + wands_test + seeds_test
    vectors_other = encode([e.text for e in other + other_test])
    train_x = np.concatenate([vectors_other[:len(other)], product_vectors]).astype(np.float32)
    test_x = vectors_other[len(other):]
    train_examples = other + products
    if train_x.shape[1] != product_vectors.shape[1]:
        raise TrainingError("the encoder's vectors and the validation query vectors differ in dimension")

    # phase 3: heads
    heads: dict[str, SoftmaxHead] = {}
    fit = dict(l2=args.l2, steps=args.steps, lr=args.lr, seed=args.seed)
    train_texts = [e.text for e in train_examples]
    heads["intent"] = SoftmaxHead.fit(head_features(rules, train_texts, train_x, args.intent_features),
                                      [e.intent for e in train_examples], INTENTS, features=args.intent_features,
                                      **fit)  # type: ignore[arg-type]
    lookup = [i for i, e in enumerate(train_examples) if e.intent == PRODUCT_LOOKUP]
    heads["specificity"] = SoftmaxHead.fit(train_x[lookup], [train_examples[i].specificity or "broad" for i in lookup],
                                           SPECIFICITIES, **fit)  # type: ignore[arg-type]
    if leg_labels:
        rows = sorted(leg_labels)
        features = ("embedding", "surface")
        x = head_features(rules, [product_queries[r] for r in rows], product_vectors[rows], features)
        y = [leg_labels[r] for r in rows]
        heads["leg"] = SoftmaxHead.fit(x, y, LEGS, features=features, **fit)  # type: ignore[arg-type]
        oof_legs = cross_fitted(x, y, LEGS, features, args.folds, fit)
        oof = dict(zip(rows, oof_legs, strict=True))
    else:
        oof = {}
    model = IntentModel(heads=heads, dim=int(train_x.shape[1]), encoder=encoder_id, rules=rules,
                        service_threshold=args.service_threshold,
                        metadata={"name": "shopfusion intent model", "arguments": _args_dict(args)})

    # phase 4: held-out evaluation
    metrics = {"heldout_utterances": evaluate_intents(model, other_test, test_x)}
    if len(heldout_queries):
        assert heldout_vectors is not None
        held = product_examples(heldout_queries, rules, "heldout queries")
        metrics["heldout_product_queries"] = evaluate_intents(model, held, heldout_vectors, heldout_legs)
    metrics["service_threshold_sweep"] = service_threshold_sweep(model, other_test, test_x, heldout_queries,
                                                                 heldout_vectors)
    counts = {"train": label_counts(e.intent for e in train_examples),
              "train_specificity": label_counts(train_examples[i].specificity or "broad" for i in lookup),
              "train_leg": label_counts((leg_labels or {}).values()),
              "heldout": label_counts(e.intent for e in other_test), "brands": len(rules.brands),
              "sources": label_counts(e.source.split(":")[0] for e in train_examples)}
    model.metadata.update({"metrics": metrics, "counts": counts})
    return IntentTrainingOutput(model, metrics, counts, oof)


def evaluate_intents(model: IntentModel, examples: Sequence[LabeledQuery], vectors: np.ndarray,
                     legs: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Accuracy, per-label precision/recall/F1 of the intent, of the specificity (product lookups whose
    weak label is known) and of the winning leg (where judged), plus prediction time per query."""
    import time

    predictions = []
    start = time.perf_counter()
    for example, vector in zip(examples, vectors, strict=True):
        predictions.append(model.predict(example.text, vector))
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {"intent": accuracy_report([e.intent for e in examples], [p.intent for p in predictions],
                                                     INTENTS),
                           "ms_per_query": round(1000 * elapsed / max(len(examples), 1), 4)}
    both = [(e, p) for e, p in zip(examples, predictions, strict=True)
            if e.intent == PRODUCT_LOOKUP and p.intent == PRODUCT_LOOKUP and e.specificity]
    if both:
        out["specificity"] = accuracy_report([e.specificity or "" for e, _ in both],
                                             [p.specificity or "" for _, p in both], SPECIFICITIES)
    if legs:
        rows = sorted(legs)
        out["leg"] = accuracy_report([legs[r] for r in rows], [predictions[r].leg or "either" for r in rows], LEGS)
    return out


def cross_fitted(x: np.ndarray, y: Sequence[str], labels: Sequence[str], features: Sequence[str], folds: int,
                 fit: Mapping[str, Any]) -> list[str]:
    """Predictions for each row from a head fit without its block (contiguous blocks: near-duplicate
    neighbouring queries stay on one side)."""
    n = len(y)
    if folds < 2 or n < 2 * folds:
        head = SoftmaxHead.fit(x, y, labels, features=features, **fit)
        return [head.labels[int(i)] for i in head.proba(x).argmax(axis=1)]
    block = np.arange(n) * folds // n
    out = [""] * n
    for f in range(folds):
        inside = np.flatnonzero(block != f)
        outside = np.flatnonzero(block == f)
        head = SoftmaxHead.fit(x[inside], [y[int(i)] for i in inside], labels, features=features, **fit)
        for i, p in zip(outside, head.proba(x[outside]).argmax(axis=1), strict=True):
            out[i] = head.labels[int(p)]
    return out


def service_threshold_sweep(model: IntentModel, examples: Sequence[LabeledQuery], vectors: np.ndarray,
                            product_queries: Sequence[str] = (), product_vectors: np.ndarray | None = None,
                            thresholds: Sequence[float] = (0.5, 0.65, 0.8, 0.9)) -> dict[str, Any]:
    """How the service threshold trades held-out intent accuracy and service recall against real product
    queries withheld as service (each of which loses its results)."""
    keep = model.service_threshold
    out = {}
    try:
        for threshold in thresholds:
            model.service_threshold = threshold
            report = evaluate_intents(model, examples, vectors)["intent"]
            entry = {"accuracy": round(report["accuracy"], 4),
                     "service_recall": report["labels"].get("service", {}).get("recall")}
            if len(product_queries) and product_vectors is not None:
                withheld = sum(model.predict(q, v).intent == "service"
                               for q, v in zip(product_queries, product_vectors, strict=True))
                entry["product_queries_withheld"] = int(withheld)
            out[str(threshold)] = entry
    finally:
        model.service_threshold = keep
    return out


def _args_dict(args: IntentTrainingArguments) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in args.__dict__.items() if k != "data_dir"}
