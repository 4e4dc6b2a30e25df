from __future__ import annotations

from pathlib import Path

import pytest

from shopfusion.errors import QueryError
from shopfusion.evaluation import (
    evaluate,
    evaluate_per_query,
    gains,
    load_qrels,
    load_queries,
    write_trec_run,
)


def test_perfect_and_reversed_rankings() -> None:
    qrels = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    perfect = evaluate({"q": {"a": 3, "b": 2, "c": 1}}, qrels)
    assert perfect["ndcg@10"] == pytest.approx(1.0) and perfect["mrr"] == 1.0 and perfect["recall@100"] == 1.0
    reversed_ = evaluate({"q": {"c": 3, "b": 2, "a": 1}}, qrels)
    assert reversed_["ndcg@10"] < 1.0 and reversed_["mrr"] == pytest.approx(0.5)


def test_graded_gains_and_irrelevant_queries_dropped() -> None:
    assert gains({"q": {"a": 3.0, "b": 1.33, "c": 1.0}, "none": {"x": 1.0}}) == {"q": {"a": 12, "b": 2, "c": 0}}


def test_missing_query_scores_zero() -> None:
    result = evaluate({}, {"q": {"a": 2.0}}, min_grade=0.0)
    assert result["ndcg@10"] == 0.0


def test_per_query_values() -> None:
    out = evaluate_per_query({"q1": {"a": 1.0}, "q2": {"x": 1.0}}, {"q1": {"a": 1.0}, "q2": {"b": 1.0}},
                             min_grade=0.0)
    assert out["ndcg@10"] == {"q1": pytest.approx(1.0), "q2": 0.0}


def test_loaders(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "text": "drill"}\n')
    (tmp_path / "q.tsv").write_text("id\ttext\nq1\tdrill\n")
    (tmp_path / "r.tsv").write_text("query_id\tproduct_id\tgrade\nq1\ta\t2.5\n")
    (tmp_path / "r.trec").write_text("q1 0 a 2\n")
    assert load_queries(tmp_path / "q.jsonl") == load_queries(tmp_path / "q.tsv") == {"q1": "drill"}
    assert load_qrels(tmp_path / "r.tsv") == {"q1": {"a": 2.5}}
    assert load_qrels(tmp_path / "r.trec") == {"q1": {"a": 2.0}}
    (tmp_path / "bad.jsonl").write_text('{"id": "q1"}\n')
    with pytest.raises(QueryError, match="line 1"):
        load_queries(tmp_path / "bad.jsonl")


def test_trec_run_file(tmp_path: Path) -> None:
    write_trec_run({"q1": {"a": 1.0, "b": 2.0}}, tmp_path / "run.trec", tag="t")
    assert (tmp_path / "run.trec").read_text().splitlines() == ["q1 Q0 b 1 2.000000 t", "q1 Q0 a 2 1.000000 t"]


def test_compare_runs_paired_tests() -> None:
    from shopfusion.evaluation import compare_runs

    qrels = {f"q{i}": {"a": 2.0, "b": 0.0} for i in range(30)}
    good = {q: {"a": 2.0, "b": 1.0} for q in qrels}
    bad = {q: {"b": 2.0, "a": 1.0} for q in qrels}
    out = compare_runs({"good": good, "bad": bad, "same": dict(good)}, qrels, ["ndcg@10", "mrr"], min_grade=0.0)
    assert out["means"]["good"]["mrr"] == 1.0 and out["means"]["bad"]["mrr"] == 0.5
    assert out["p_values"]["good"]["bad"]["mrr"] < 0.01
    assert out["p_values"]["good"]["same"]["ndcg@10"] == 1.0  # identical: no difference
    assert out["win_tie_loss"]["good"]["bad"]["mrr"]["W"] == 30
    with pytest.raises(QueryError, match="significance test"):
        compare_runs({"good": good}, qrels, stat_test="coin")


def test_trec_run_round_trip(tmp_path: Path) -> None:
    from shopfusion.evaluation import load_trec_run

    write_trec_run({"q1": {"a": 1.0, "b": 2.0}, "q2": {"c": 0.5}}, tmp_path / "run.trec")
    assert load_trec_run(tmp_path / "run.trec") == {"q1": {"b": 2.0, "a": 1.0}, "q2": {"c": 0.5}}
    (tmp_path / "bad.trec").write_text("q1 Q0 a\n")
    with pytest.raises(QueryError, match="line 1"):
        load_trec_run(tmp_path / "bad.trec")
