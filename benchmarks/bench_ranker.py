"""The learned ranking stage against static fusion, the intent policy and RRF; trained from judgments and
from simulated clicks; transferred to catalogs it never saw.

    python benchmarks/bench_ranker.py homedepot --index /work/scratch/shared/hd-minilm --work /work/scratch/10
    python benchmarks/bench_ranker.py transfer --index /work/scratch/shared/hd-minilm --work /work/scratch/10

`homedepot` (corpus mode, the full 54,667-product catalog, the fixed split of benchmarks/splits.py):
1. features of every judged query through the searcher (policy `default`, depth 200 per leg: the union of
   both legs, up to 400 candidates), cached under `--work`;
2. baselines from the same candidates, fused by `ranker.fusion.fuse` (the searcher's function): RRF
   (k 60), linear min-max fusion for alpha 0, 0.1, ..., 1 (the best alpha chosen on `validation`), and
   today's intent policy (the shipped policy's row per query);
3. LambdaMART from judgments: fit on `fit`, early stopping and a small hyper-parameter grid on
   `validation`; from clicks: sessions simulated from the same judgments (trainer.clicks: position-based
   model, eta 1, epsilon 0.1; logging policy = the best static fusion's top 20, Plackett-Luce, 10 shown),
   propensities estimated by EM, IPW labels, early stopping on the validation queries' clicks;
4. `test` only for the report: nDCG@10, Recall@100, MRR, paired t-tests (ranx), a bootstrap 95% interval
   of the nDCG@10 gain over the best static fusion;
5. latency: live `search` p50/p99 with and without the ranker, interleaved in one run, and the stage alone.

`transfer`: BigBasket and Flipkart indexes (MiniLM, built under `--work` when missing), category-name
queries (a product is relevant to its own leaf category's name); the Home Depot rankers applied as they
are, with per-query normalisation, portable (`--portable`: no scaled, title-only or catalog-specific
features), portable and monotone, portable on the features that vary on the target, and warm-started on
half of the target's queries; the reverse direction (trained on BigBasket, applied to Home Depot and
Flipkart).

Home Depot and BigBasket are evaluation-only: models trained here stay under `--work`, never in the package.
Prints tables and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.splits import RULE, split  # noqa: E402

METRICS = ("ndcg@10", "recall@100", "mrr")
K = 100
ALPHAS = tuple(round(a / 10, 1) for a in range(11))
GRID = (  # (num_leaves, learning_rate, min_data_in_leaf): chosen on validation
    (7, 0.1, 50), (15, 0.1, 50), (31, 0.1, 100), (31, 0.05, 100), (63, 0.05, 100),
)
PREDICT_BUDGET_MS = 0.8
"""The ranker served is the best on validation among those that score 400 candidates within this many
milliseconds (LightGBM alone, measured here); the best without the budget is reported beside it."""


# -- data -----------------------------------------------------------------------------------------------
def load_homedepot() -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    from shopfusion.evaluation import load_qrels, load_queries

    queries = load_queries(DATA / "homedepot" / "queries.jsonl")
    qrels = load_qrels(DATA / "homedepot" / "qrels.tsv")
    return {q: t for q, t in queries.items() if q in qrels}, qrels


def category_queries(catalog: Path, prefix: str) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """One query per leaf category name; every product of that leaf is relevant (grade 1)."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    with catalog.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            path = record.get("category_path") or []
            if not path:
                continue
            leaf = str(path[-1]).strip()
            qid = f"{prefix}:{hashlib.sha1(leaf.lower().encode()).hexdigest()[:10]}"
            queries[qid] = leaf
            qrels.setdefault(qid, {})[str(record["id"])] = 1.0
    return queries, qrels


def open_index(index_dir: Path, catalog: Path | None = None) -> Any:
    from ranker.searcher import HybridSearcher
    from shopfusion.client import Client
    from shopfusion.config import Settings

    if not (index_dir / "manifest.json").is_file():
        if catalog is None:
            raise click.ClickException(f"no index at {index_dir}")
        print(f"indexing {catalog} into {index_dir} ...", flush=True)
        summary = Client(index_dir, settings=Settings()).index(catalog, progress=False)
        print(f"  {summary.total} products in {summary.seconds:.0f}s", flush=True)
    return HybridSearcher(index_dir, Settings())


# -- runs from cached candidates ----------------------------------------------------------------------------
def legs_of(table: Any, text: str) -> dict[str, list[Any]]:
    from ranker.features import FEATURE_NAMES
    from shopfusion.types import LegHit

    rows = table.rows(text)
    x, ids = table.x[rows], table.product_ids[rows]
    legs: dict[str, list[LegHit]] = {}
    for leg in ("lexical", "dense"):
        present = x[:, FEATURE_NAMES.index(f"{leg}_present")] > 0
        ranks = np.rint(2.0 ** x[:, FEATURE_NAMES.index(f"{leg}_rank")] - 1).astype(int)
        scores = x[:, FEATURE_NAMES.index(f"{leg}_score")]
        hits = sorted((int(ranks[i]), str(ids[i]), float(scores[i])) for i in np.flatnonzero(present))
        legs[leg] = [LegHit(pid, score, rank) for rank, pid, score in hits]
    return legs


def fusion_run(table: Any, queries: Mapping[str, str], config: Any | Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Top-K by a fusion config (or, per query id, its own config)."""
    from ranker.fusion import fuse

    run = {}
    for qid, text in queries.items():
        cfg = config[qid] if isinstance(config, Mapping) else config
        fused = fuse(legs_of(table, text), cfg)[:K]
        run[qid] = {f.product_id: float(K - i) for i, f in enumerate(fused)}
    return run


def model_run(score: Any, table: Any, queries: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Top-K by a scorer `score(x_full, offsets) -> scores` over each query's candidates."""
    texts = list(dict.fromkeys(queries.values()))
    parts = [table.rows(t) for t in texts]
    x = np.concatenate([table.x[r] for r in parts])
    offsets = np.concatenate([[0], np.cumsum([r.stop - r.start for r in parts])])
    scores = score(x, offsets)
    by_text = {}
    for i, text in enumerate(texts):
        s = scores[offsets[i]:offsets[i + 1]]
        ids = table.product_ids[parts[i]]
        order = np.lexsort((np.arange(len(s)), -s))[:K]  # ties: the fused order
        by_text[text] = {str(ids[j]): float(K - n) for n, j in enumerate(order)}
    return {qid: by_text[text] for qid, text in queries.items()}


def per_query(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, float]],
              min_grade: float | None) -> dict[str, dict[str, float]]:
    from shopfusion.evaluation import evaluate_per_query

    return evaluate_per_query(run, qrels, METRICS, min_grade=min_grade)


def mean_ndcg(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, float]],
              min_grade: float | None) -> float:
    from shopfusion.evaluation import evaluate

    return evaluate(run, qrels, ("ndcg@10",), min_grade=min_grade)["ndcg@10"]


def bootstrap_ci(delta: np.ndarray, rounds: int = 10000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = delta[rng.integers(0, len(delta), size=(rounds, len(delta)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(runs: Mapping[str, Mapping[str, Mapping[str, float]]], qrels: Mapping[str, Mapping[str, float]],
           baseline: str, *, min_grade: float | None = None, title: str = "") -> dict[str, Any]:
    """Means, paired t-tests against every run, and the bootstrap interval of each run's nDCG@10 gain
    over `baseline`; prints a table."""
    from shopfusion.evaluation import compare_runs

    comparison = compare_runs(runs, qrels, METRICS, stat_test="student", max_p=0.01, min_grade=min_grade)
    values = {name: per_query(run, qrels, min_grade) for name, run in runs.items()}
    base = values[baseline]["ndcg@10"]
    qids = sorted(base)
    out: dict[str, Any] = {"queries": len(qids), "baseline": baseline, "means": comparison["means"],
                           "p_values": comparison["p_values"], "gain_ci95": {}}
    print(f"\n{title} ({len(qids)} queries; paired t-test against {baseline!r})")
    print(f"{'run':<34} {'nDCG@10':>8} {'R@100':>8} {'MRR':>8} {'gain':>8} {'95% CI':>18} {'p':>9}")
    for name in runs:
        m = comparison["means"][name]
        row = f"{name:<34} {m['ndcg@10']:8.4f} {m['recall@100']:8.4f} {m['mrr']:8.4f}"
        if name != baseline:
            delta = np.array([values[name]["ndcg@10"][q] - base[q] for q in qids])
            low, high = bootstrap_ci(delta)
            p = comparison["p_values"][name][baseline]["ndcg@10"]
            out["gain_ci95"][name] = [low, high]
            row += f" {100 * delta.mean():+8.2f} [{100 * low:+6.2f}, {100 * high:+6.2f}] {p:9.1e}"
        print(row)
    return out


# -- training -----------------------------------------------------------------------------------------------
def fit(table: Any, queries: Mapping[str, str], labels: Any, valid_queries: Mapping[str, str], valid_labels: Any,
        params: Any, init_model: Any = None, only_labelled: bool = False) -> Any:
    """LambdaMART on the cached features; `only_labelled`: each query's group holds only the products
    with a label (for clicks: the products ever shown), not every candidate."""
    from trainer.ranker_trainer import fit_ranker, ranking_data

    train = ranking_data(table, queries, labels)
    valid = ranking_data(table, valid_queries, valid_labels) if valid_queries else None
    if only_labelled:
        train, valid = _labelled(train, labels), (_labelled(valid, valid_labels) if valid is not None else None)
    return fit_ranker(train, valid, params, init_model=init_model)


def _labelled(data: Any, labels: Any) -> Any:
    from trainer.ranker_trainer import RankingData

    keep = np.zeros(len(data.labels), dtype=bool)
    sizes = []
    for i, qid in enumerate(data.query_ids):
        rows = slice(int(data.offsets[i]), int(data.offsets[i + 1]))
        mask = np.array([str(p) in labels.get(qid, {}) for p in data.product_ids[rows]])
        keep[rows] = mask
        sizes.append(int(mask.sum()))
    return RankingData(list(data.query_ids), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                       data.product_ids[keep], data.x[keep], data.labels[keep])


def predict_ms(fitted: Any, table: Any, rows: int = 400, repeats: int = 30) -> float:
    """Median milliseconds LightGBM takes to score `rows` candidates (one thread, as the stage does)."""
    from ranker.features import model_matrix

    x = model_matrix(table.x[:rows], fitted.params.feature_names, fitted.params.normalization)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fitted.booster.predict(x, num_iteration=fitted.best_iteration or None, num_threads=1)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def grid_search(table: Any, fit_q: Mapping[str, str], labels: Any, valid_q: Mapping[str, str], valid_labels: Any,
                qrels_valid: Mapping[str, Mapping[str, float]], base: Any, min_grade: float | None = None,
                grid: Sequence[tuple[int, float, int]] = GRID) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The grid points with the best validation nDCG@10 within `PREDICT_BUDGET_MS` and without it."""
    from dataclasses import replace

    tried, fitted_all = [], []
    for leaves, rate, min_leaf in grid:
        params = replace(base, num_leaves=leaves, learning_rate=rate, min_data_in_leaf=min_leaf)
        started = time.perf_counter()
        fitted = fit(table, fit_q, labels, valid_q, valid_labels, params)
        score = mean_ndcg(model_run(fitted.score, table, valid_q), qrels_valid, min_grade)
        tried.append({"num_leaves": leaves, "learning_rate": rate, "min_data_in_leaf": min_leaf,
                      "trees": fitted.best_iteration, "validation_ndcg@10": round(score, 4),
                      "predict_ms_400": round(predict_ms(fitted, table), 3),
                      "seconds": round(time.perf_counter() - started, 1)})
        fitted_all.append(fitted)
        print(f"  grid {tried[-1]}", flush=True)
    best = max(range(len(tried)), key=lambda i: tried[i]["validation_ndcg@10"])
    within = [i for i in range(len(tried)) if tried[i]["predict_ms_400"] <= PREDICT_BUDGET_MS] or [best]
    served = max(within, key=lambda i: tried[i]["validation_ndcg@10"])
    tried[served]["served"] = True
    tried[best]["best_unconstrained"] = True
    return fitted_all[served], fitted_all[best], tried


# -- latency ---------------------------------------------------------------------------------------------------
def latency(searcher: Any, texts: Sequence[str], ranker_dir: Path) -> dict[str, Any]:
    """Search p50/p99 with and without the ranker (interleaved, same run) with every product in the
    stage's product table (`RankingStage.warm`, as a long-running service has them), the stage alone,
    and the stage with an empty table (a searcher's first queries)."""
    from ranker.fusion import fuse
    from ranker.searcher import SearchOptions

    with_ranker, without = SearchOptions(ranker=str(ranker_dir)), SearchOptions(ranker="none")
    ranker, _ = searcher.ranker(with_ranker)
    started = time.perf_counter()
    views = searcher.stage.warm()
    warm_seconds = time.perf_counter() - started
    for text in texts[:20]:  # warm up the model and the encoder
        searcher.search(text, options=with_ranker)
        searcher.search(text, options=without)
    times: dict[str, list[float]] = {"search": [], "search+ranker": [], "stage": [], "stage_cold": [],
                                     "candidates": []}
    for i, text in enumerate(texts):
        order = [(without, "search"), (with_ranker, "search+ranker")]
        for options, name in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            searcher.search(text, options=options)
            times[name].append(1000 * (time.perf_counter() - start))
    prepared = []
    for text in texts:
        vector = searcher.encoder.encode_query(text)
        decision = searcher.policy.decide(text, vector)
        legs = searcher.retrieve(text, vector, decision.row.depth)
        prepared.append((text, vector, decision, legs, fuse(legs, decision.row.fusion)))
    from ranker.features import extract

    for part in ("collect", "extract", "predict"):
        times[part] = []
    for text, vector, decision, legs, fused in prepared:
        times["candidates"].append(float(len(fused)))
        start = time.perf_counter()
        candidates = searcher.candidate_set(text, vector, decision, legs, fused)
        searcher.stage.order(ranker, candidates, fused, k=10)
        times["stage"].append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()  # the same again, part by part
        candidates = searcher.candidate_set(text, vector, decision, legs, fused)
        middle = time.perf_counter()
        features = extract(candidates, needed=ranker.spec.feature_names)
        end = time.perf_counter()
        ranker.score(features)
        times["collect"].append(1000 * (middle - start))
        times["extract"].append(1000 * (end - middle))
        times["predict"].append(1000 * (time.perf_counter() - end))
    for text, vector, decision, legs, fused in prepared[:100]:
        searcher.stage.products.clear()  # a searcher that has seen none of these products yet
        start = time.perf_counter()
        candidates = searcher.candidate_set(text, vector, decision, legs, fused)
        searcher.stage.order(ranker, candidates, fused, k=10)
        times["stage_cold"].append(1000 * (time.perf_counter() - start))

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else math.nan

    out: dict[str, Any] = {name: {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)} for name, v in times.items()}
    paired = [b - a for a, b in zip(times["search"], times["search+ranker"], strict=True)]
    out["added_p50"] = out["search+ranker"]["p50"] - out["search"]["p50"]
    out["paired_difference_p50"] = statistics.median(paired)
    out["trees"] = int(ranker.booster.num_trees()) if ranker is not None else 0
    out["warm"] = {"views": views, "seconds": round(warm_seconds, 1)}
    print(f"\nlatency over {len(texts)} queries (ms): search p50 {out['search']['p50']:.2f} / p99 {out['search']['p99']:.2f};"
          f" with ranker p50 {out['search+ranker']['p50']:.2f} / p99 {out['search+ranker']['p99']:.2f};"
          f" added p50 {out['added_p50']:.2f} (paired median {out['paired_difference_p50']:.2f});"
          f" stage alone p50 {out['stage']['p50']:.2f} (collect {out['collect']['p50']:.2f}, features"
          f" {out['extract']['p50']:.2f}, LightGBM {out['predict']['p50']:.2f}; empty product table"
          f" {out['stage_cold']['p50']:.2f}) for"
          f" {statistics.median(times['candidates']):.0f} candidates, {out['trees']} trees;"
          f" {views} products read into the table in {warm_seconds:.1f}s", flush=True)
    return out


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    path.write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return path


@click.group()
def main() -> None:
    """Learned ranking stage benchmarks (see the module docstring)."""


# -- Home Depot ------------------------------------------------------------------------------------------------
@main.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="feature cache, simulated clicks and trained models (outside the repository).")
@click.option("--sessions", type=int, default=20, show_default=True, help="simulated sessions per query.")
@click.option("--latency-queries", type=int, default=400, show_default=True)
@click.option("--grid/--no-grid", default=True, show_default=True, help="hyper-parameter grid on validation.")
@click.option("--threads", type=int, default=0, show_default=True, help="LightGBM training threads (0: all).")
@click.option("--limit", type=int, default=None, help="smoke test: only the first N queries of each part.")
@click.option("--rounds", type=int, default=1500, show_default=True, help="most trees per model.")
def homedepot(index_dir: Path, work: Path, sessions: int, latency_queries: int, grid: bool, threads: int,
              limit: int | None, rounds: int) -> None:
    """Learned ranker vs static fusion, intent policy and RRF on held-out Home Depot queries."""
    from ranker.fusion import FusionConfig
    from trainer.clicks import (
        click_labels,
        debiased_relevance,
        estimate_propensities,
        simulate,
        write_click_log,
    )
    from trainer.ranker_trainer import RankerParams, extract_features, judgment_gains, save_ranker

    started = time.time()
    queries, qrels = load_homedepot()
    parts = split(list(queries))
    if limit:
        parts = {name: ids[:limit] for name, ids in parts.items()}
        queries = {qid: queries[qid] for ids in parts.values() for qid in ids}
    q = {name: {qid: queries[qid] for qid in ids} for name, ids in parts.items()}
    print(f"Home Depot: {len(queries)} judged queries; fit {len(parts['fit'])}, validation"
          f" {len(parts['validation'])}, test {len(parts['test'])} ({RULE})", flush=True)
    searcher = open_index(index_dir)
    table = extract_features(searcher, list(queries.values()), cache_dir=work / "cache", progress=True)
    print(f"features: {table.x.shape[0]} candidates x {table.x.shape[1]} features, {len(table)} queries,"
          f" {table.x.shape[0] / len(table):.0f} candidates per query ({time.time() - started:.0f}s)", flush=True)
    gains = judgment_gains(qrels)
    valid_qrels = {qid: qrels[qid] for qid in parts["validation"]}
    test_qrels = {qid: qrels[qid] for qid in parts["test"]}

    # static baselines, chosen on validation
    sweep = {}
    for alpha in ALPHAS:
        sweep[alpha] = mean_ndcg(fusion_run(table, q["validation"], FusionConfig("linear", alpha)), valid_qrels, None)
    best_alpha = max(sweep, key=lambda a: (sweep[a], -abs(a - 0.5)))
    print("validation nDCG@10 by alpha: " + ", ".join(f"{a}: {v:.4f}" for a, v in sweep.items())
          + f" -> best {best_alpha}", flush=True)
    rrf, static = FusionConfig("rrf"), FusionConfig("linear", best_alpha)
    vectors = searcher.encoder.encode(list(q["test"].values()), batch_size=64)
    policy_rows = {qid: searcher.policy.decide(text, v) for (qid, text), v in zip(q["test"].items(), vectors, strict=True)}
    policy_config = {qid: d.row.fusion for qid, d in policy_rows.items()}
    policy_keys: dict[str, int] = {}
    for d in policy_rows.values():
        key = (d.intent.policy.get("key") if d.intent else None) or "static"
        policy_keys[key] = policy_keys.get(key, 0) + 1

    # LambdaMART from judgments
    base = RankerParams(threads=threads, rounds=rounds, early_stopping=100)
    print("\nLambdaMART from judgments (fit -> validation):", flush=True)
    if grid:
        judged, strongest, tried = grid_search(table, q["fit"], gains, q["validation"], gains, valid_qrels, base)
    else:
        judged = strongest = fit(table, q["fit"], gains, q["validation"], gains, base)
        tried = []
    judged_dir = save_ranker(judged, work / "models" / "hd-judgments", searcher=searcher,
                             method="lambdarank from graded judgments", data=["Home Depot fit queries (benchmark only)"])
    from dataclasses import replace

    monotone = fit(table, q["fit"], gains, q["validation"], gains, replace(judged.params, monotone=True))

    # LambdaMART from simulated clicks: the logging policy is the best static fusion
    train_q = {**q["fit"], **q["validation"]}
    logging_run = fusion_run(table, train_q, static)
    rankings = {qid: sorted(docs, key=lambda p: -docs[p]) for qid, docs in logging_run.items()}
    click_runs: dict[str, Any] = {}
    click_info: dict[str, Any] = {}
    clicked = None
    for per_query in dict.fromkeys((sessions, 5 * sessions)):
        click_sessions = simulate(rankings, qrels, train_q, sessions_per_query=per_query, seed=0)
        if per_query == sessions:
            write_click_log(click_sessions, work / "clicks" / "homedepot-train.jsonl")
        theta = estimate_propensities(click_sessions)
        ipw = click_labels(debiased_relevance(click_sessions, theta))
        clicks_total = sum(len(s.clicked) for s in click_sessions)
        print(f"\nclicks: {len(click_sessions)} simulated sessions ({per_query} per query), {clicks_total} clicks;"
              f" EM propensities {np.round(theta, 3).tolist()}", flush=True)
        click_info[str(per_query)] = {"sessions": len(click_sessions), "clicks": clicks_total,
                                      "propensities": theta.tolist()}
        model = fit(table, q["fit"], ipw, q["validation"], ipw, judged.params)
        click_runs[f"LambdaMART, clicks IPW ({per_query}/query)"] = model_run(model.score, table, q["test"])
        if per_query == sessions:
            clicked = model
            naive = click_labels(debiased_relevance(click_sessions, [1.0] * len(theta)))
            model = fit(table, q["fit"], naive, q["validation"], naive, judged.params)
            click_runs[f"LambdaMART, clicks uncorrected ({per_query}/query)"] = model_run(model.score, table, q["test"])
            model = fit(table, q["fit"], ipw, q["validation"], ipw, judged.params, only_labelled=True)
            click_runs[f"LambdaMART, clicks IPW, shown only ({per_query}/query)"] = model_run(model.score, table, q["test"])
    assert clicked is not None
    clicks_dir = save_ranker(clicked, work / "models" / "hd-clicks", searcher=searcher,
                             method="lambdarank from simulated clicks (IPW)", data=["Home Depot fit queries (benchmark only)"])

    runs = {
        f"static linear alpha {best_alpha}": fusion_run(table, q["test"], static),
        "RRF k 60": fusion_run(table, q["test"], rrf),
        "intent policy (shipped)": fusion_run(table, q["test"], policy_config),
        "LambdaMART, judgments (served)": model_run(judged.score, table, q["test"]),
    }
    if strongest is not judged:
        runs["LambdaMART, judgments (best, no latency budget)"] = model_run(strongest.score, table, q["test"])
    runs["LambdaMART, judgments, monotone"] = model_run(monotone.score, table, q["test"])
    runs.update(click_runs)
    result = report(runs, test_qrels, f"static linear alpha {best_alpha}", title="Home Depot test, corpus mode")
    importance = dict(zip(judged.booster.feature_name(), judged.booster.feature_importance("gain").tolist(), strict=True))
    top_features = sorted(importance.items(), key=lambda kv: -kv[1])[:15]
    print("top features by gain: " + ", ".join(f"{k} {v:.0f}" for k, v in top_features))

    timing = latency(searcher, list(q["test"].values())[:latency_queries], judged_dir)
    save("ranker_homedepot" + ("-smoke" if limit else ""), {
        "command": " ".join(sys.argv), "split": RULE, "sizes": {k: len(v) for k, v in parts.items()},
        "candidates": {"rows": int(table.x.shape[0]), "per_query": table.x.shape[0] / len(table), "depth": 200},
        "alpha_sweep_validation": sweep, "best_alpha": best_alpha, "policy_keys": policy_keys,
        "grid": tried, "predict_budget_ms": PREDICT_BUDGET_MS,
        "params": {"judgments": judged.metrics, "clicks": clicked.metrics},
        "clicks": {"per_query": click_info, "model": "PBM eta 1, epsilon 0.1, y_max 4; logging: best static"
                   " fusion top 20, Plackett-Luce 1/rank, 10 shown; labels: IPW click rate x 10"},
        "test": result, "top_features": top_features, "latency_ms": timing,
        "models": {"judgments": str(judged_dir), "clicks": str(clicks_dir)}, "seconds": round(time.time() - started),
    })


@main.command("latency")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--ranker", "ranker_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--queries", "count", type=int, default=400, show_default=True, help="test queries timed.")
def latency_command(index_dir: Path, ranker_dir: Path, count: int) -> None:
    """Only the latency measurement, for a trained ranker (e.g. under another OMP_WAIT_POLICY)."""
    queries, _ = load_homedepot()
    test = [queries[qid] for qid in split(list(queries))["test"]][:count]
    timing = latency(open_index(index_dir), test, ranker_dir)
    name = "ranker_latency-" + (os.environ.get("OMP_WAIT_POLICY") or "default").lower()
    save(name, {"command": " ".join(sys.argv), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "latency_ms": timing})


# -- transfer ---------------------------------------------------------------------------------------------------
def constant_features(table: Any) -> list[str]:
    """Features that do not vary over a catalog's candidates (fields it lacks): computed without labels."""
    from ranker.features import FEATURE_NAMES

    spread = table.x.std(axis=0)
    return [name for name, s in zip(FEATURE_NAMES, spread, strict=True) if s < 1e-9]


PORTABLE = "portable (no title-only, scaled or catalog-specific features)"
TRANSFER_VARIANTS: dict[str, dict[str, Any]] = {
    "as trained": {},
    "per-query normalised": {"normalization": "query"},
    PORTABLE: {"portable": True},
    f"{PORTABLE}, monotone": {"portable": True, "monotone": True},
}
FEW_SHOT_SOURCE = PORTABLE


@main.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the Home Depot index.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--threads", type=int, default=0, show_default=True)
@click.option("--targets", default="BigBasket,Flipkart", show_default=True, help="target catalogs (comma separated).")
@click.option("--limit", type=int, default=None, help="smoke test: only the first N queries of each part.")
def transfer(index_dir: Path, work: Path, threads: int, targets: str, limit: int | None) -> None:
    """Home Depot rankers on BigBasket and Flipkart (category-name queries), and the reverse."""
    from dataclasses import replace

    from ranker.fusion import FusionConfig
    from trainer.ranker_trainer import RankerParams, extract_features, judgment_gains, split_validation

    started = time.time()
    hd_queries, hd_qrels = load_homedepot()
    parts = split(list(hd_queries))
    if limit:
        parts = {name: ids[:limit] for name, ids in parts.items()}
        hd_queries = {qid: hd_queries[qid] for ids in parts.values() for qid in ids}
    hd = open_index(index_dir)
    hd_table = extract_features(hd, list(hd_queries.values()), cache_dir=work / "cache", progress=True)
    hd_gains = judgment_gains(hd_qrels)
    fit_q = {qid: hd_queries[qid] for qid in parts["fit"]}
    valid_q = {qid: hd_queries[qid] for qid in parts["validation"]}
    test_q = {qid: hd_queries[qid] for qid in parts["test"]}
    hd_valid_qrels = {qid: hd_qrels[qid] for qid in parts["validation"]}
    sweep = {a: mean_ndcg(fusion_run(hd_table, valid_q, FusionConfig("linear", a)), hd_valid_qrels, None) for a in ALPHAS}
    hd_alpha = max(sweep, key=lambda a: (sweep[a], -abs(a - 0.5)))
    prior = json.loads((RESULTS / "ranker_homedepot.json").read_text()) if (RESULTS / "ranker_homedepot.json").is_file() else {}
    grid_best = max(prior.get("grid") or [{"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 100}],
                    key=lambda g: g.get("validation_ndcg@10", 0))
    base = RankerParams(threads=threads, rounds=1500, early_stopping=100, num_leaves=grid_best["num_leaves"],
                        learning_rate=grid_best["learning_rate"], min_data_in_leaf=grid_best["min_data_in_leaf"])
    print(f"Home Depot rankers: {base.num_leaves} leaves, rate {base.learning_rate}; static alpha {hd_alpha}", flush=True)
    hd_models = {name: fit(hd_table, fit_q, hd_gains, valid_q, hd_gains, replace(base, **change))
                 for name, change in TRANSFER_VARIANTS.items()}
    test_qrels = {qid: hd_qrels[qid] for qid in parts["test"]}
    runs = {f"static linear alpha {hd_alpha}": fusion_run(hd_table, test_q, FusionConfig("linear", hd_alpha))}
    for variant, model in hd_models.items():
        runs[f"HD LambdaMART, {variant}"] = model_run(model.score, hd_table, test_q)
    in_domain = report(runs, test_qrels, f"static linear alpha {hd_alpha}",
                       title="Home Depot test: the transfer variants in their own domain")

    chosen = {t.strip() for t in targets.split(",") if t.strip()}
    targets_: dict[str, Any] = {}
    for name, folder, prefix in (("BigBasket", "bigbasket", "bb"), ("Flipkart", "flipkart1050", "fk")):
        if name not in chosen:
            continue
        catalog = DATA / folder / "products.jsonl"
        searcher = open_index(work / f"idx-{folder}", catalog)
        queries, qrels = category_queries(catalog, prefix)
        table = extract_features(searcher, list(queries.values()), cache_dir=work / "cache", progress=True)
        targets_[name] = (searcher, queries, qrels, table)
        print(f"{name}: {len(queries)} category-name queries, {sum(len(v) for v in qrels.values())} judgments"
              f" ({table.x.shape[0] / max(len(table), 1):.0f} candidates per query)", flush=True)

    results: dict[str, Any] = {"hd_alpha": hd_alpha, "homedepot_in_domain": in_domain, "params": {"num_leaves": base.num_leaves,
                               "learning_rate": base.learning_rate, "min_data_in_leaf": base.min_data_in_leaf}}
    for name, (_, queries, qrels, table) in targets_.items():
        target_sweep = {a: mean_ndcg(fusion_run(table, queries, FusionConfig("linear", a)), qrels, 0.0) for a in ALPHAS}
        oracle = max(target_sweep, key=lambda a: target_sweep[a])
        runs = {f"static linear alpha {hd_alpha} (HD choice)": fusion_run(table, queries, FusionConfig("linear", hd_alpha)),
                "static linear alpha 0.5": fusion_run(table, queries, FusionConfig("linear", 0.5)),
                "RRF k 60": fusion_run(table, queries, FusionConfig("rrf")),
                f"static alpha {oracle} (best on target: oracle)": fusion_run(table, queries, FusionConfig("linear", oracle))}
        for variant, model in hd_models.items():
            runs[f"HD LambdaMART, {variant}"] = model_run(model.score, table, queries)
        # unsupervised adaptation: also leave out what does not vary on the target's (unlabelled) candidates
        flat = constant_features(table)
        change = TRANSFER_VARIANTS[FEW_SHOT_SOURCE]
        adapted = fit(hd_table, fit_q, hd_gains, valid_q, hd_gains, replace(base, **change, exclude=tuple(flat)))
        runs[f"HD LambdaMART, {FEW_SHOT_SOURCE}, only features varying on {name}"] = model_run(adapted.score, table, queries)
        results[name] = {"zero_shot": report(runs, qrels, f"static linear alpha {hd_alpha} (HD choice)", min_grade=0.0,
                                             title=f"{name}: Home Depot rankers, zero-shot"),
                         "alpha_sweep": target_sweep, "queries": len(queries),
                         "judgments": sum(len(v) for v in qrels.values())}
        # few-shot: warm start from the HD model on half of the target's queries, tested on the other half
        half_fit, half_test = split_validation(list(queries), 0.5)
        inner_fit, inner_valid = split_validation(half_fit, 0.25)
        target_gains = judgment_gains(qrels, min_grade=0.0)
        fq, vq, tq = ({qid: queries[qid] for qid in ids} for ids in (inner_fit, inner_valid, half_test))
        tq_qrels = {qid: qrels[qid] for qid in half_test}
        source = hd_models[FEW_SHOT_SOURCE]
        warm = fit(table, fq, target_gains, vq, target_gains, replace(source.params, rounds=300, early_stopping=30,
                                                                     learning_rate=0.05),
                   init_model=source.booster)
        scratch = fit(table, fq, target_gains, vq, target_gains, replace(base, rounds=300, early_stopping=30,
                                                                         min_data_in_leaf=20))
        few = {f"static linear alpha {hd_alpha} (HD choice)": fusion_run(table, tq, FusionConfig("linear", hd_alpha)),
               f"HD LambdaMART, {FEW_SHOT_SOURCE}": model_run(source.score, table, tq),
               "warm start on target half": model_run(warm.score, table, tq),
               "trained on target half only": model_run(scratch.score, table, tq)}
        results[name]["few_shot"] = report(few, tq_qrels, f"static linear alpha {hd_alpha} (HD choice)", min_grade=0.0,
                                           title=f"{name}: warm start on {len(fq) + len(vq)} target queries, tested on"
                                                 f" {len(tq)}")

    # reverse: trained on BigBasket (or the first target), applied to Home Depot (test split) and Flipkart
    source_name = "BigBasket" if "BigBasket" in targets_ else next(iter(targets_))
    searcher, queries, qrels, table = targets_[source_name]
    bb_gains = judgment_gains(qrels, min_grade=0.0)
    bb_fit, bb_valid = split_validation(list(queries), 0.2)
    reverse = {}
    for variant in TRANSFER_VARIANTS:
        params = replace(base, min_data_in_leaf=20, **TRANSFER_VARIANTS[variant])
        reverse[variant] = fit(table, {q: queries[q] for q in bb_fit}, bb_gains, {q: queries[q] for q in bb_valid},
                               bb_gains, params)
    flat = constant_features(hd_table)  # category, brand, description... : Home Depot has titles only
    change = TRANSFER_VARIANTS[FEW_SHOT_SOURCE]
    reverse[f"{FEW_SHOT_SOURCE}, only features varying on Home Depot"] = fit(
        table, {q: queries[q] for q in bb_fit}, bb_gains, {q: queries[q] for q in bb_valid}, bb_gains,
        replace(base, min_data_in_leaf=20, **change, exclude=tuple(flat)))
    runs = {f"static linear alpha {hd_alpha}": fusion_run(hd_table, test_q, FusionConfig("linear", hd_alpha)),
            "RRF k 60": fusion_run(hd_table, test_q, FusionConfig("rrf"))}
    for variant, model in reverse.items():
        runs[f"{source_name} LambdaMART, {variant}"] = model_run(model.score, hd_table, test_q)
    results["reverse_homedepot"] = report(runs, test_qrels, f"static linear alpha {hd_alpha}",
                                          title=f"Home Depot test: {source_name} rankers (reverse direction)")
    if source_name != "Flipkart" and "Flipkart" in targets_:
        _, fk_queries, fk_qrels, fk_table = targets_["Flipkart"]
        runs = {f"static linear alpha {hd_alpha}": fusion_run(fk_table, fk_queries, FusionConfig("linear", hd_alpha))}
        for variant, model in reverse.items():
            runs[f"{source_name} LambdaMART, {variant}"] = model_run(model.score, fk_table, fk_queries)
        results["reverse_flipkart"] = report(runs, fk_qrels, f"static linear alpha {hd_alpha}", min_grade=0.0,
                                             title=f"Flipkart: {source_name} rankers")
    save("ranker_transfer" + ("-smoke" if limit else ""), {"command": " ".join(sys.argv), "variants": {k: {kk: list(vv) if isinstance(vv, tuple) else vv
                                                                             for kk, vv in v.items()}
                                                                         for k, v in TRANSFER_VARIANTS.items()},
                             **results, "seconds": round(time.time() - started)})


if __name__ == "__main__":
    main()
