import pytest

from shopfusion.encoders import HashingEncoder
from shopfusion.errors import TrainingError
from trainer.evaluators import ClassificationEvaluator, RetrievalEvaluator, classification_metrics, dense_run


def test_classification_metrics_and_primary_metric() -> None:
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.75
    assert m["macro_recall"] == pytest.approx(0.75)
    assert ClassificationEvaluator.primary_metric in m
    with pytest.raises(TrainingError):
        ClassificationEvaluator(["x"], [], "d")


def test_dense_run_corpus_and_pool_modes() -> None:
    enc = HashingEncoder(64)
    docs = {"d1": "cordless drill", "d2": "garden hose", "d3": "drill bits"}
    vectors = enc.encode(list(docs.values()))
    q = enc.encode(["cordless drill"])
    run = dense_run(q, ["q"], vectors, list(docs), k=2)
    assert max(run["q"], key=run["q"].get) == "d1" and len(run["q"]) == 2
    pooled = dense_run(q, ["q"], vectors, list(docs), pools={"q": ["d2", "d3"]})
    assert set(pooled["q"]) == {"d2", "d3"}


def test_retrieval_evaluator_uses_shopfusion_evaluation() -> None:
    enc = HashingEncoder(64)
    docs = {"d1": "cordless drill", "d2": "garden hose", "d3": "steel hammer"}
    qrels = {"q1": {"d1": 3.0, "d2": 1.0}, "q2": {"d2": 3.0}}
    ev = RetrievalEvaluator({"q1": "cordless drill", "q2": "garden hose"}, qrels, docs)
    scores = ev(enc.encode)
    assert scores["ndcg@10"] == pytest.approx(1.0)
    assert RetrievalEvaluator({"q1": "x"}, qrels, docs, mode="pool").mode == "pool"
    with pytest.raises(TrainingError):
        RetrievalEvaluator({"q9": "x"}, qrels, docs)
