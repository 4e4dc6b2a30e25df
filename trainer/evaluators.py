"""Evaluators: objects that score a model on held-out data and return a dict of metrics with a named
primary metric (sentence-transformers style). Trainers receive them; benchmarks call them directly.

- `ClassificationEvaluator`: accuracy and macro precision / recall / F1 of a classifier on one domain;
- `RetrievalEvaluator`: brute-force dense retrieval over a product corpus, scored with
  `shopfusion.evaluation.evaluate` (nDCG@10, Recall@100, MRR) in `corpus` mode (rank the whole corpus)
  or `pool` mode (re-rank only each query's judged products).

>>> ev = ClassificationEvaluator(["a b", "c d"], ["x", "y"], domain="toy")
>>> ev.score(["x", "x"])["accuracy"]
0.5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from shopfusion.errors import TrainingError

RetrievalMode = Literal["corpus", "pool"]


class ClassificationEvaluator:
    """Accuracy, macro precision, recall and F1 of `model.predict(texts, domain)` on labelled texts."""

    primary_metric = "macro_f1"

    def __init__(self, texts: Sequence[str], labels: Sequence[str], domain: str, name: str = "") -> None:
        if len(texts) != len(labels):
            raise TrainingError(f"{len(texts)} texts but {len(labels)} labels: give one label per text")
        if not texts:
            raise TrainingError("an evaluator needs at least one labelled example")
        self.texts = list(texts)
        self.labels = list(labels)
        self.domain = domain
        self.name = name or domain

    def __call__(self, model: Any) -> dict[str, float]:
        return self.score(model.predict(self.texts, self.domain))

    def score(self, predictions: Sequence[str]) -> dict[str, float]:
        return classification_metrics(self.labels, predictions)


def classification_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 over the gold labels' classes."""
    if len(gold) != len(predicted):
        raise TrainingError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = sorted(set(gold))
    p, r, f, _ = precision_recall_fscore_support(gold, predicted, labels=classes, average="macro",
                                                 zero_division=0)
    return {"accuracy": float(accuracy_score(gold, predicted)), "macro_precision": float(p),
            "macro_recall": float(r), "macro_f1": float(f)}


def dense_run(
    query_vectors: np.ndarray,
    query_ids: Sequence[str],
    doc_vectors: np.ndarray,
    doc_ids: Sequence[str],
    *,
    k: int = 100,
    pools: Mapping[str, Sequence[str]] | None = None,
    chunk: int = 256,
) -> dict[str, dict[str, float]]:
    """Top-`k` cosine (dot-product on normalised vectors) run; with `pools`, each query ranks only its pool."""
    run: dict[str, dict[str, float]] = {}
    if pools is not None:
        index = {d: i for i, d in enumerate(doc_ids)}
        for row, qid in enumerate(query_ids):
            ids = [d for d in pools.get(qid, ()) if d in index]
            if not ids:
                run[qid] = {}
                continue
            scores = doc_vectors[[index[d] for d in ids]] @ query_vectors[row]
            run[qid] = {d: float(s) for d, s in zip(ids, scores, strict=True)}
        return run
    k = min(k, len(doc_ids))
    for start in range(0, len(query_ids), chunk):
        scores = query_vectors[start:start + chunk] @ doc_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, cols in enumerate(top):
            qid = query_ids[start + row]
            run[qid] = {doc_ids[c]: float(scores[row, c]) for c in cols}
    return run


class RetrievalEvaluator:
    """Dense retrieval quality of an encoder (`encode(texts) -> normalised vectors`) on judged queries.

    `documents` maps product id to the text to embed. `doc_cache` (optional) lets callers reuse corpus
    embeddings of a frozen encoder across evaluations.
    """

    primary_metric = "ndcg@10"

    def __init__(
        self,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, float]],
        documents: Mapping[str, str],
        *,
        mode: RetrievalMode = "corpus",
        metrics: Sequence[str] = ("ndcg@10", "recall@100", "mrr"),
        min_grade: float | None = None,
        name: str = "",
    ) -> None:
        if mode not in ("corpus", "pool"):
            raise TrainingError(f"retrieval mode must be `corpus` or `pool`, got {mode!r}")
        self.query_ids = [q for q in queries if q in qrels]
        if not self.query_ids:
            raise TrainingError("no query has judgments: check that query ids match the qrels")
        self.queries = [queries[q] for q in self.query_ids]
        self.qrels = {q: dict(qrels[q]) for q in self.query_ids}
        self.doc_ids = list(documents)
        self.documents = [documents[d] for d in self.doc_ids]
        self.mode = mode
        self.metrics = tuple(metrics)
        self.min_grade = min_grade
        self.name = name

    def __call__(self, encode: Callable[[list[str]], np.ndarray],
                 doc_vectors: np.ndarray | None = None) -> dict[str, float]:
        if doc_vectors is None:
            doc_vectors = np.asarray(encode(self.documents), dtype=np.float32)
        query_vectors = np.asarray(encode(self.queries), dtype=np.float32)
        return self.score(query_vectors, doc_vectors)

    def score(self, query_vectors: np.ndarray, doc_vectors: np.ndarray) -> dict[str, float]:
        pools = {q: list(j) for q, j in self.qrels.items()} if self.mode == "pool" else None
        run = dense_run(query_vectors, self.query_ids, doc_vectors, self.doc_ids, k=100, pools=pools)
        from shopfusion.evaluation import evaluate

        result = evaluate(run, self.qrels, self.metrics, min_grade=self.min_grade)
        return {m: float(v) for m, v in result.items()}  # type: ignore[union-attr]
