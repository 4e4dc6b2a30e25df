"""Click logs: the format, the position-based simulator, EM propensities and IPW labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfusion.errors import TrainingError
from trainer.clicks import (
    ClickModel,
    Session,
    click_labels,
    debiased_relevance,
    estimate_propensities,
    read_click_log,
    simulate,
    write_click_log,
)


def _synthetic(queries: int = 300, sessions: int = 20, seed: int = 1) -> tuple[list[Session], dict[str, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{i}_{j}": float(rng.choice([1, 2, 3])) for j in range(0, 30, 3)} for i in range(queries)}
    rankings = {f"q{i}": [f"d{i}_{j}" for j in rng.permutation(30)] for i in range(queries)}
    return simulate(rankings, qrels, {q: f"text {q}" for q in qrels}, sessions_per_query=sessions, seed=seed), qrels


def test_log_round_trip_and_errors(tmp_path: Path) -> None:
    sessions = [Session("drill", ("a", "b", "c"), frozenset({"b"}), "q1"), Session("hose", ("x",), frozenset())]
    assert write_click_log(sessions, tmp_path / "log.jsonl") == 2
    assert read_click_log(tmp_path / "log.jsonl") == sessions
    (tmp_path / "bad.jsonl").write_text('{"query": "drill", "shown": ["a"], "clicked": ["z"]}\n')
    with pytest.raises(TrainingError, match="line 1.*not shown"):
        read_click_log(tmp_path / "bad.jsonl")
    (tmp_path / "worse.jsonl").write_text('{"query": "drill"}\n')
    with pytest.raises(TrainingError, match="line 1"):
        read_click_log(tmp_path / "worse.jsonl")


def test_simulator_follows_the_click_model() -> None:
    sessions, _ = _synthetic(sessions=30)
    assert len(sessions) == 300 * 30 and all(len(s.shown) == 10 for s in sessions)
    assert all(s.clicked <= set(s.shown) for s in sessions)
    ctr = np.zeros(10)
    for s in sessions:
        for k, p in enumerate(s.shown):
            ctr[k] += p in s.clicked
    assert (np.diff(ctr) < 0).sum() >= 8  # fewer clicks further down
    again, _ = _synthetic(sessions=30)
    assert again == sessions  # deterministic for a seed


def test_em_recovers_the_propensities() -> None:
    sessions, _ = _synthetic()
    theta = estimate_propensities(sessions)
    truth = np.array([ClickModel().examination(k) for k in range(1, 11)])
    assert theta[0] == 1.0
    np.testing.assert_allclose(theta, truth, atol=0.07)


def test_ipw_labels_track_relevance_not_position() -> None:
    sessions, qrels = _synthetic()
    relevance = debiased_relevance(sessions, [ClickModel().examination(k) for k in range(1, 11)])
    naive = debiased_relevance(sessions, [1.0] * 10)
    by_grade: dict[float, list[float]] = {}
    by_grade_naive: dict[float, list[float]] = {}
    for qid, docs in relevance.items():
        for pid, value in docs.items():
            grade = qrels[qid].get(pid)
            if grade is not None:
                by_grade.setdefault(grade, []).append(value)
                by_grade_naive.setdefault(grade, []).append(naive[qid][pid])
    means = [np.mean(by_grade[g]) for g in (1.0, 2.0, 3.0)]
    assert means[0] < means[1] < means[2]
    assert means[2] > 1.5 * np.mean(by_grade_naive[3.0])  # the correction undoes the position discount
    labels = click_labels(relevance)
    assert all(0 <= v <= 10 for docs in labels.values() for v in docs.values())
    with pytest.raises(TrainingError):
        debiased_relevance(sessions, [1.0, 0.0])
