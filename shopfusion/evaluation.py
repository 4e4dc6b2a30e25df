"""Retrieval evaluation: nDCG@10, Recall@100 and MRR with graded judgments, via ranx; paired
significance tests between runs (`compare_runs`, ranx `compare`), so a real gain can be told from noise.

Grades are real numbers (Home Depot: mean of raters, 1 = irrelevant .. 3 = exact match). They map to
integer gains for ranx with `gain = round((grade - min_grade) * GAIN_SCALE)`, so the lowest grade is
non-relevant and gains stay proportional to the grade (GAIN_SCALE 6 keeps halves and thirds exact).
Queries without any relevant judgment are left out of the averages (no ideal ranking to compare with).

>>> qrels = {"q1": {"a": 3.0, "b": 1.0}}
>>> round(evaluate({"q1": {"a": 2.0, "b": 1.0}}, qrels, min_grade=1.0)["ndcg@10"], 3)
1.0
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shopfusion.errors import QueryError

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr")
PRIMARY_METRIC = "ndcg@10"
GAIN_SCALE = 6

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, float]]


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *,
             min_grade: float | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    `min_grade` is the grade that means "not relevant" (default: the smallest grade in `qrels` when it is
    above 0, so Home Depot's 1 maps to gain 0; 0 otherwise). A query missing from `run` scores 0.
    """
    per_query = evaluate_per_query(run, qrels, metrics, min_grade=min_grade)
    return {metric: mean(values.values()) for metric, values in per_query.items()}


def evaluate_per_query(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *,
                       min_grade: float | None = None) -> dict[str, dict[str, float]]:
    """metric -> {query id: value} for every judged query with a relevant product."""
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import evaluate as ranx_evaluate

    int_qrels = gains(qrels, min_grade)
    if not int_qrels:
        raise QueryError("no query in the judgments has a relevant product: check the qrels file")
    run_dict: dict[str, dict[str, float]] = {}
    for qid in int_qrels:
        docs = {str(d): float(s) for d, s in run.get(qid, {}).items()}
        # ranx needs a non-empty ranking per query; an empty one stands for "nothing found".
        run_dict[qid] = docs or {"__none__": 0.0}
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "shopfusion" / "numba"))
    ranx_qrels, ranx_run = RanxQrels.from_dict(int_qrels), RanxRun.from_dict(run_dict)
    ranx_evaluate(ranx_qrels, ranx_run, list(metrics), return_mean=False, save_results_in_run=True)
    return {metric: {qid: float(value) for qid, value in ranx_run.scores[metric].items()} for metric in metrics}


def gains(qrels: Qrels, min_grade: float | None = None) -> dict[str, dict[str, int]]:
    """Integer gains per query for the judged products; queries with no relevant product are dropped."""
    if min_grade is None:
        lowest = min((g for docs in qrels.values() for g in docs.values()), default=0.0)
        min_grade = lowest if lowest > 0 else 0.0
    out: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        mapped = {str(d): max(0, round((float(g) - min_grade) * GAIN_SCALE)) for d, g in docs.items()}
        if any(v > 0 for v in mapped.values()):
            out[str(qid)] = mapped
    return out


def load_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Queries from JSONL (`id`, `text`) or TSV (`id<TAB>text`, optional header)."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"queries file {path} not found")
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if path.suffix in {".jsonl", ".json"}:
                try:
                    record = json.loads(line)
                    queries[str(record["id"])] = str(record["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise QueryError(
                        f"{path} line {number}: expected a JSON object with `id` and `text` ({exc})"
                    ) from exc
            else:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 2:
                    raise QueryError(f"{path} line {number}: expected `id<TAB>text`")
                if number == 1 and parts[0].lower() in {"id", "query_id", "qid"}:
                    continue
                queries[parts[0]] = parts[1]
    if not queries:
        raise QueryError(f"queries file {path} holds no queries")
    return queries


def load_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Judgments from a TSV with header `query_id product_id grade`, or a TREC qrels file
    (`qid 0 docid grade`, whitespace separated)."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"qrels file {path} not found")
    qrels: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
        handle.seek(0)
        if "\t" in first and first.lower().startswith(("query_id", "qid")):
            reader = csv.DictReader(handle, delimiter="\t")
            for number, row in enumerate(reader, start=2):
                try:
                    qid, doc = row.get("query_id") or row["qid"], row.get("product_id") or row["docid"]
                    qrels.setdefault(str(qid), {})[str(doc)] = float(row.get("grade") or row["relevance"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise QueryError(
                        f"{path} line {number}: expected query_id, product_id, grade ({exc})"
                    ) from exc
        else:
            for number, line in enumerate(handle, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 4:
                    raise QueryError(f"{path} line {number}: expected TREC qrels `qid 0 docid grade`")
                try:
                    qrels.setdefault(parts[0], {})[parts[2]] = float(parts[3])
                except ValueError as exc:
                    raise QueryError(f"{path} line {number}: grade {parts[3]!r} is not a number") from exc
    if not qrels:
        raise QueryError(f"qrels file {path} holds no judgments")
    return qrels


STAT_TESTS: tuple[str, ...] = ("student", "fisher", "tukey")
"""ranx's paired tests: Student's paired t-test, Fisher's randomisation test, Tukey's HSD."""


def compare_runs(runs: Mapping[str, Run], qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, *,
                 stat_test: str = "student", max_p: float = 0.01, min_grade: float | None = None,
                 seed: int = 42) -> dict[str, object]:
    """Each run's mean of each metric and a paired significance test of every pair of runs (ranx
    `compare`) over the same judged queries: `{"stat_test", "max_p", "queries", "means": {run: {metric:
    mean}}, "p_values": {run: {other run: {metric: p}}}, "win_tie_loss": {run: {other: {metric: {W, T,
    L}}}}}`. A missing query counts as an empty ranking (score 0) in every run.

    >>> qrels = {"q1": {"a": 2.0}, "q2": {"b": 2.0}, "q3": {"c": 2.0}}
    >>> good = {"q1": {"a": 2.0}, "q2": {"b": 2.0}, "q3": {"c": 2.0}}
    >>> out = compare_runs({"good": good, "bad": {}}, qrels, ["ndcg@10"], min_grade=0.0)
    >>> out["means"]["good"]["ndcg@10"], out["means"]["bad"]["ndcg@10"]
    (1.0, 0.0)
    """
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import compare

    if stat_test not in STAT_TESTS:
        raise QueryError(f"unknown significance test {stat_test!r}: use one of {', '.join(STAT_TESTS)}")
    if not runs:
        raise QueryError("no runs to compare")
    int_qrels = gains(qrels, min_grade)
    if not int_qrels:
        raise QueryError("no query in the judgments has a relevant product: check the qrels file")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "shopfusion" / "numba"))
    ranx_runs = []
    for name, run in runs.items():
        docs = {qid: ({str(d): float(v) for d, v in run.get(qid, {}).items()} or {"__none__": 0.0})
                for qid in int_qrels}
        ranx_runs.append(RanxRun.from_dict(docs, name=name))
    metrics = list(metrics)
    if len(ranx_runs) == 1:
        means = {ranx_runs[0].name: evaluate(runs[ranx_runs[0].name], qrels, metrics, min_grade=min_grade)}
        return {"stat_test": stat_test, "max_p": max_p, "queries": len(int_qrels), "means": means,
                "p_values": {}, "win_tie_loss": {}}
    with warnings.catch_warnings():  # runs with identical per-query values: handled below (p = 1)
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        report = compare(RanxQrels.from_dict(int_qrels), ranx_runs, metrics=metrics, stat_test=stat_test,
                         max_p=max_p, random_seed=seed, rounding_digits=12).to_dict()
    names = [run.name for run in ranx_runs]
    return {
        "stat_test": stat_test, "max_p": max_p, "queries": len(int_qrels),
        "means": {n: {m: float(v) for m, v in report[n]["scores"].items()} for n in names},
        # identical per-query values give the t-test no variance (NaN): no difference, p = 1
        "p_values": {n: {o: {m: 1.0 if math.isnan(float(p)) else float(p) for m, p in ps.items()}
                         for o, ps in report[n]["comparisons"].items()} for n in names},
        "win_tie_loss": {n: {o: {m: dict(w) for m, w in wtl.items()} for o, wtl in report[n]["win_tie_loss"].items()}
                         for n in names},
    }


def load_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """A TREC run file (`qid Q0 docid rank score tag`, whitespace separated) as `{qid: {docid: score}}`."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"run file {path} not found")
    run: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise QueryError(f"{path} line {number}: expected a TREC run line `qid Q0 docid rank score [tag]`")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError as exc:
                raise QueryError(f"{path} line {number}: score {parts[4]!r} is not a number") from exc
    if not run:
        raise QueryError(f"run file {path} holds no results")
    return run


def write_trec_run(run: Run, path: str | os.PathLike[str], tag: str = "shopfusion") -> None:
    """Write a run in TREC format: `qid Q0 docid rank score tag`."""
    lines: list[str] = []
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        lines.extend(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}" for rank, (doc, score) in enumerate(ranked, 1))
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0
