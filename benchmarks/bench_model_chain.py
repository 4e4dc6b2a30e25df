"""The model chain on Home Depot, in the product itself: does fine-tuning the encoder pay off on the FULL
catalog, does the per-intent policy add anything over one static fusion, and what does a query cost with
the shipped defaults?

Phases (each reuses what an earlier run left in `--work`):

1. split: the fixed query split of `benchmarks/splits.py` (fit / validation / test), written as files;
2. encoder: `shopfusion train encoder` on the `fit` queries only (the CLI, as a user runs it);
3. indexes: the full 54,667-product catalog with the packaged MiniLM (`--base-index`, built if missing) and
   with the fine-tuned encoder (`shopfusion index --model`);
4. legs: both retrieval legs (depth 200, the shipped default) for every validation and test query of each
   index, through the product's own searcher;
5. fusion: the best static fusion per index (RRF or linear, 11 alphas x min-max / z-score) chosen on
   `validation`; runs on `test`: BM25, dense, RRF, the best static fusion, and the per-intent policy
   (`shopfusion train policy`'s learner on the train queries, with the shipped intent model);
6. statistics: nDCG@10, Recall@100, MRR on `test`; paired differences per query with a bootstrap 95% CI,
   a paired t-test and a randomization test;
7. latency: `Client.search` with the shipped defaults (intent model + policy) on the base index, against
   `policy = none, intent_model = none` in the same run.

    python benchmarks/bench_model_chain.py --work /work/scratch/chain --base-index /work/scratch/hd-minilm

Reads ../shared/data/homedepot (evaluation only: nothing is copied into the repository; models trained here
are never shipped). Results: benchmarks/results/model_chain.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from splits import RULE, split  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shopfusion(*args: str) -> dict[str, Any]:
    """Run the CLI as a user would (`--json`), return its document."""
    command = [sys.executable, "-m", "shopfusion.cli", *args, "--json"]
    log("$ shopfusion " + " ".join(args))
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"shopfusion {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


# -- 1. split ---------------------------------------------------------------------------------------
def write_split(work: Path) -> dict[str, int]:
    out = work / "split"
    out.mkdir(parents=True, exist_ok=True)
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").read_text().splitlines() if line.strip()]
    parts = split([q["id"] for q in queries])
    with (DATA / "qrels.tsv").open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    for name, ids in parts.items():
        wanted = set(ids)
        with (out / f"{name}.queries.jsonl").open("w") as handle:
            for q in queries:
                if q["id"] in wanted:
                    handle.write(json.dumps({"id": q["id"], "text": q["text"]}) + "\n")
        with (out / f"{name}.qrels.tsv").open("w") as handle:
            handle.write("\t".join(rows[0]) + "\n")
            handle.writelines("\t".join(r) + "\n" for r in rows[1:] if r[0] in wanted)
    return {name: len(ids) for name, ids in parts.items()}


# -- 4./5. legs and fusion ----------------------------------------------------------------------------
def legs_for(index: Path, work: Path, name: str, queries: dict[str, str], qrels: dict[str, dict[str, float]],
             depth: int) -> Any:
    from ranker.searcher import HybridSearcher
    from shopfusion.config import load_settings
    from trainer.policy_trainer import LegCache, collect_legs

    path = work / f"legs-{name}"
    if LegCache.exists(path):
        return LegCache.load(path)
    log(f"legs of {len(queries)} queries on {index}")
    searcher = HybridSearcher(index, load_settings(env={}).replace("search", policy="none", intent_model="none"))
    try:
        cache = collect_legs(searcher, queries, qrels, depth=depth)
    finally:
        searcher.close()
    cache.save(path)
    return cache


def fused_run(cache: Any, ids: list[str], config: Any, k: int = 100) -> dict[str, dict[str, float]]:
    from ranker.fusion import fuse

    run = {}
    for qid in ids:
        top = fuse(cache.corpus_legs(qid), config)[:k]
        run[qid] = {f.product_id: float(len(top) - i) for i, f in enumerate(top)}
    return run


def leg_run(cache: Any, ids: list[str], leg: str, k: int = 100) -> dict[str, dict[str, float]]:
    out = {}
    for qid in ids:
        hits = cache.corpus[qid][leg][:k]
        out[qid] = {pid: float(len(hits) - i) for i, (pid, _) in enumerate(hits)}
    return out


def best_static(cache: Any, qrels: dict[str, dict[str, float]], ids: list[str]) -> tuple[Any, dict[str, float]]:
    """The grid point with the best mean validation nDCG@10, and every point's mean (for the report)."""
    from trainer.policy_trainer import config_name, default_grid, grid_scores

    grid = default_grid()
    scores, _ = grid_scores(cache, qrels, grid, mode="corpus", ids=ids)
    means = scores.mean(axis=1)
    return grid[int(np.argmax(means))], {config_name(c): round(float(m), 5) for c, m in zip(grid, means, strict=True)}


def paired(a: dict[str, float], b: dict[str, float], rounds: int = 10_000, seed: int = 0) -> dict[str, float]:
    """b - a per query: mean, bootstrap 95% CI, paired t-test p, two-sided randomization (sign-flip) p."""
    from scipy import stats

    ids = sorted(a.keys() & b.keys())
    delta = np.array([b[q] - a[q] for q in ids])
    rng = np.random.default_rng(seed)
    boots = delta[rng.integers(0, len(delta), (rounds, len(delta)))].mean(axis=1)
    flips = (rng.choice([-1.0, 1.0], (rounds, len(delta))) * delta).mean(axis=1)
    t_p = float(stats.ttest_rel([b[q] for q in ids], [a[q] for q in ids]).pvalue) if delta.any() else 1.0
    return {"queries": len(ids), "mean_diff": round(float(delta.mean()), 5),
            "ci95": [round(float(np.percentile(boots, 2.5)), 5), round(float(np.percentile(boots, 97.5)), 5)],
            "t_test_p": t_p, "randomization_p": float((np.abs(flips) >= abs(delta.mean()) - 1e-12).mean())}


def scores_of(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict]:
    from shopfusion.evaluation import DEFAULT_METRICS, evaluate_per_query

    per_query = evaluate_per_query(run, qrels, DEFAULT_METRICS)
    means = {m: round(float(np.mean(list(v.values()))), 5) for m, v in per_query.items()}
    return per_query["ndcg@10"], means


# -- 7. latency -------------------------------------------------------------------------------------
def latency(index: Path, texts: list[str], **search: str) -> dict[str, float]:
    from shopfusion.client import Client
    from shopfusion.config import load_settings

    settings = load_settings(env={})
    if search:
        settings = settings.replace("search", **search)
    client = Client(index, settings=settings)
    for text in texts[:20]:  # warm-up: model load, caches
        client.search(text)
    times = []
    for text in texts:
        start = time.perf_counter()
        client.search(text)
        times.append(1000 * (time.perf_counter() - start))
    client.close()
    return {"queries": len(texts), "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--base-index", type=Path, default=None, help="a MiniLM index of the full catalog")
    parser.add_argument("--steps", type=int, default=400, help="encoder fine-tuning steps (batch 32)")
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--latency-queries", type=int, default=500)
    args = parser.parse_args()
    from ranker.fusion import FusionConfig
    from shopfusion.evaluation import load_qrels, load_queries

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"split": {"rule": RULE, "sizes": write_split(work)}, "depth": args.depth}
    sp = work / "split"
    catalog = str(DATA / "products.jsonl")

    encoder = work / "encoder"
    if not (encoder / "shopfusion_card.json").is_file():
        start = time.time()
        report["encoder_training"] = shopfusion(
            "train", "encoder", "--catalog", catalog, "--queries", str(sp / "fit.queries.jsonl"),
            "--qrels", str(sp / "fit.qrels.tsv"), "--steps", str(args.steps), "--output", str(encoder))
        report["encoder_training"]["seconds"] = round(time.time() - start, 1)
    indexes = {"minilm": args.base_index or work / "index-minilm", "finetuned": work / "index-finetuned"}
    for name, index in indexes.items():
        if not (index / "manifest.json").is_file():
            extra = ["--model", str(encoder)] if name == "finetuned" else []
            report[f"index_{name}"] = shopfusion("index", catalog, "--index", str(index), "--no-progress", *extra)

    val_q, val_j = load_queries(sp / "validation.queries.jsonl"), load_qrels(sp / "validation.qrels.tsv")
    test_q, test_j = load_queries(sp / "test.queries.jsonl"), load_qrels(sp / "test.qrels.tsv")
    train_q, train_j = load_queries(sp / "train.queries.jsonl"), load_qrels(sp / "train.qrels.tsv")
    test_ids = [q for q in test_q if q in test_j]
    results: dict[str, Any] = {}
    per_query: dict[str, dict[str, float]] = {}
    for name, index in indexes.items():
        cache = legs_for(index, work, name, {**val_q, **test_q}, {**val_j, **test_j}, args.depth)
        chosen, grid = best_static(cache, val_j, [q for q in val_q if q in val_j])
        runs = {"bm25": leg_run(cache, test_ids, "lexical"), "dense": leg_run(cache, test_ids, "dense"),
                "rrf": fused_run(cache, test_ids, FusionConfig(method="rrf")),
                "best_static": fused_run(cache, test_ids, chosen)}
        results[name] = {"best_static_on_validation": chosen.to_dict(), "validation_grid": grid, "test": {}}
        for run_name, run in runs.items():
            ndcg, means = scores_of(run, test_j)
            results[name]["test"][run_name] = means
            per_query[f"{name}/{run_name}"] = ndcg
        log(f"{name}: {results[name]['test']}")
    report["results"] = results
    report["finetuned_vs_minilm"] = paired(per_query["minilm/best_static"], per_query["finetuned/best_static"])
    report["minilm_static_vs_rrf"] = paired(per_query["minilm/rrf"], per_query["minilm/best_static"])

    # the per-intent policy (shipped intent model) learned on the train queries, against static fusion
    from ranker.policy import PolicyFile, load_policy
    from ranker.searcher import HybridSearcher
    from shopfusion.artifacts import EncoderRef
    from shopfusion.config import load_settings
    from trainer.policy_trainer import learn_policy

    base = indexes["minilm"]
    train_cache = legs_for(base, work, "minilm-train", train_q, train_j, args.depth)
    searcher = HybridSearcher(base, load_settings(env={}).replace("search", policy="none"))
    manifest = searcher.manifest
    searcher.close()
    policy = load_policy(load_settings(env={}).replace("search", policy="none"), EncoderRef(manifest.model_id, manifest.dim))
    learned = learn_policy(train_cache, train_j, policy, depth=args.depth)
    test_cache = legs_for(base, work, "minilm", {**val_q, **test_q}, {**val_j, **test_j}, args.depth)
    rows: PolicyFile = learned.policy
    policy_run = {}
    from ranker.fusion import fuse

    for qid in test_ids:
        _, row = rows.row_for(policy.predict(test_q[qid], test_cache.vector(qid)))  # type: ignore[attr-defined]
        top = fuse(test_cache.corpus_legs(qid), row.fusion)[:100]
        policy_run[qid] = {f.product_id: float(len(top) - i) for i, f in enumerate(top)}
    ndcg, means = scores_of(policy_run, test_j)
    train_static = learned.policy.default.fusion
    static_run = fused_run(test_cache, test_ids, train_static)
    static_ndcg, static_means = scores_of(static_run, test_j)
    report["intent_policy"] = {"rows": {k: r.fusion.to_dict() for k, r in rows.rows.items()},
                               "default_on_train": train_static.to_dict(), "metrics_train": learned.metrics,
                               "test_policy": means, "test_static_train_best": static_means,
                               "policy_vs_static": paired(static_ndcg, ndcg)}
    texts = [test_q[q] for q in test_ids[: args.latency_queries]]
    report["latency"] = {"shipped_defaults": latency(base, texts),
                         "no_intent_no_policy": latency(base, texts, policy="none", intent_model="none"),
                         "shipped_defaults_again": latency(base, texts)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model_chain.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("finetuned_vs_minilm", "intent_policy", "latency")}, indent=1,
                     default=str))
    for name in results:
        print(name, results[name]["best_static_on_validation"], results[name]["test"])


if __name__ == "__main__":
    main()
