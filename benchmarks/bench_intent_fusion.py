"""Intent-aware fusion against the best static fusion on Home Depot, with the policy learned on one half of
the queries and evaluated on the other half it never saw.

Phases:
1. legs: both legs of every judged query, once (corpus: top `--depth` of the whole 54,667-product catalog;
   pool: scores of the judged products), cached under benchmarks/results/cache/;
2. split: a stable 50/50 split of the query ids (SHA-1 of the id);
3. train: the intent model (CLINC150, WANDS, seed templates, catalog brands, the training half with its
   winning legs) and the policy rows (grid over method x alpha x normalisation, per intent key, with a
   minimum query count and backoff), both on the training half only; the static baselines (RRF, and the
   best global alpha and normalisation) are chosen on the same half;
4. test: nDCG@10 on the held-out half in corpus and pool modes, fused with `ranker.fusion.fuse` (the
   searcher's function) from the cached legs, overall and per predicted intent, with a paired bootstrap
   confidence interval of the gain; a live check runs `Client.evaluate` with the learned policy on a
   sample and compares;
5. speed: search latency p50/p99 with the intent policy and with static fusion, interleaved in one run.

    python benchmarks/bench_intent_fusion.py --index var/hd
    python benchmarks/bench_intent_fusion.py --index var/hd --ship   # also install the policy as the default

Prints a table and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def split_ids(ids: list[str], test_share: float = 0.5) -> tuple[list[str], list[str]]:
    def bucket(qid: str) -> float:
        return int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = [q for q in ids if bucket(q) >= test_share]
    test = [q for q in ids if bucket(q) < test_share]
    return train, test


def top10_fuse(cache: Any, qid: str, config: Any, mode: str, depth: int | None = None) -> list[str]:
    from ranker.fusion import fuse

    if mode == "corpus":
        return [f.product_id for f in fuse(cache.corpus_legs(qid, depth), config)[:10]]
    legs, order = cache.pool_legs(qid)
    return [f.product_id for f in fuse(legs, config, order=order)[:10]]


def bootstrap_ci(delta: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [float(delta[rng.integers(0, len(delta), len(delta))].mean()) for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


@click.command()
@click.option("--index", "index_dir", default=str(ROOT / "var" / "hd"), show_default=True)
@click.option("--depth", default=200, show_default=True)
@click.option("--mode", "train_mode", type=click.Choice(["corpus", "pool", "both"]), default="corpus",
              show_default=True, help="what the policy rows maximise on the training half.")
@click.option("--min-queries", default=50, show_default=True)
@click.option("--min-gain", default=0.002, show_default=True)
@click.option("--latency-queries", default=300, show_default=True)
@click.option("--live-queries", default=100, show_default=True)
@click.option("--out-policy", default=str(CACHE / "policy-hd"), show_default=True,
              help="where the trained intent model and policy are written.")
@click.option("--ship", is_flag=True, help="also copy them to shopfusion/data/policy (the packaged default).")
def main(index_dir: str, depth: int, train_mode: str, min_queries: int, min_gain: float, latency_queries: int,
         live_queries: int, out_policy: str, ship: bool) -> None:
    from ranker.fusion import FusionConfig
    from ranker.intent_data import brands_from_products
    from ranker.intent_policy import IntentPolicy, default_policy_dir, load_intent_policy
    from ranker.intent_training import IntentTrainingArguments, train_intent_model
    from ranker.policy import StaticPolicy
    from ranker.policy_training import (
        LegCache,
        collect_legs,
        config_name,
        default_grid,
        grid_scores,
        learn_policy,
        leg_winners,
        ndcg_per_query,
        resolve,
    )
    from ranker.searcher import HybridSearcher
    from shopfusion.config import Settings
    from shopfusion.evaluation import load_qrels, load_queries

    started = time.time()
    settings = Settings().replace("index", device="cpu").replace("search", policy="none")
    queries = load_queries(DATA / "homedepot" / "queries.jsonl")
    qrels = load_qrels(DATA / "homedepot" / "qrels.tsv")
    searcher = HybridSearcher(index_dir, settings)
    report: dict[str, Any] = {"index": index_dir, "index_version": searcher.manifest.version,
                              "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                              "machine": platform.machine()}}

    # 1. legs
    cache_path = CACHE / f"hd-legs-{searcher.manifest.version}-d{depth}"
    t = time.perf_counter()
    if LegCache.exists(cache_path):
        cache = LegCache.load(cache_path)
    else:
        cache = collect_legs(searcher, queries, qrels, depth=depth, progress=True)
        cache.save(cache_path)
    report["legs_seconds"] = round(time.perf_counter() - t, 1)

    # 2. split
    train_ids, test_ids = split_ids(cache.ids)
    report["split"] = {"train": len(train_ids), "test": len(test_ids), "rule": "sha1(query id) < 0.5 -> test"}
    click.echo(f"queries: {len(cache.ids)} judged, train {len(train_ids)}, test {len(test_ids)}", err=True)

    # 3. train (training half only)
    t = time.perf_counter()
    legs_train = leg_winners(cache, qrels, train_ids)
    legs_test = leg_winners(cache, qrels, test_ids)
    brands = brands_from_products(s.product for s in searcher.store.iter_stored())
    row = {q: i for i, q in enumerate(cache.ids)}
    output = train_intent_model(
        IntentTrainingArguments(DATA), lambda texts: searcher.encoder.encode(texts, batch_size=128),
        encoder_id=searcher.encoder.model_id, product_queries=[cache.queries[q] for q in train_ids],
        product_vectors=cache.vectors[[row[q] for q in train_ids]],
        leg_labels={i: legs_train[q] for i, q in enumerate(train_ids) if q in legs_train}, brands=brands,
        heldout_queries=[cache.queries[q] for q in test_ids], heldout_vectors=cache.vectors[[row[q] for q in test_ids]],
        heldout_legs={i: legs_test[q] for i, q in enumerate(test_ids) if q in legs_test})
    model = output.model
    report["intent_model"] = {"heldout": output.metrics, "counts": output.counts,
                              "train_seconds": round(time.perf_counter() - t, 1)}
    grid = default_grid()
    learned = learn_policy(cache, qrels, model, grid=grid, mode=train_mode, ids=train_ids,
                           min_queries=min_queries, min_gain=min_gain, depth=depth, progress=True)
    learned.training.update({"data": "Home Depot (Kaggle 2016) training half of the development split",
                             "split": report["split"], "queries_file": "homedepot/queries.jsonl",
                             "qrels_file": "homedepot/qrels.tsv"})

    # static baselines, chosen on the training half in each mode
    train_scores = {m: grid_scores(cache, qrels, grid, mode=m, ids=train_ids) for m in ("corpus", "pool")}
    static: dict[str, dict[str, FusionConfig]] = {}
    for m, (scores, _) in train_scores.items():
        linear = [i for i, c in enumerate(grid) if c.method == "linear"]
        best_linear = max(linear, key=lambda i: float(scores[i].mean()))
        static[m] = {"rrf": grid[0], "best_alpha": grid[best_linear]}
    report["static_choice"] = {m: {k: config_name(c) for k, c in v.items()} for m, v in static.items()}

    # 4. test (held-out half), with the real fuse
    test_keys = {q: model.predict(cache.queries[q], cache.vector(q)) for q in test_ids}
    rows_index = {"": next(i for i, c in enumerate(grid) if c == learned.default.fusion)}
    for key, policy_row in learned.rows.items():
        if policy_row.search:
            rows_index[key] = next(i for i, c in enumerate(grid) if c == policy_row.fusion)
    results: dict[str, Any] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for m in ("corpus", "pool"):
        runs: dict[str, dict[str, list[str]]] = {"rrf": {}, "best_alpha": {}, "intent": {}}
        for q in test_ids:
            runs["rrf"][q] = top10_fuse(cache, q, static[m]["rrf"], m, depth)
            runs["best_alpha"][q] = top10_fuse(cache, q, static[m]["best_alpha"], m, depth)
            prediction = test_keys[q]
            if prediction.intent == "service":
                runs["intent"][q] = []  # the policy withholds products: scored as an empty ranking
            else:
                runs["intent"][q] = top10_fuse(cache, q, grid[resolve(rows_index, prediction.keys)], m, depth)
        per_query[m] = {name: ndcg_per_query(run, qrels) for name, run in runs.items()}
        kept = [q for q in test_ids if q in per_query[m]["rrf"]]
        values = {name: np.array([per_query[m][name][q] for q in kept]) for name in runs}
        best_static = max(("rrf", "best_alpha"), key=lambda n: float(values[n].mean()))
        delta = values["intent"] - values[best_static]
        low, high = bootstrap_ci(delta)
        results[m] = {"queries": len(kept), **{name: round(float(v.mean()), 5) for name, v in values.items()},
                      "best_static": best_static, "gain_points": round(100 * float(delta.mean()), 3),
                      "gain_ci95_points": [round(100 * low, 3), round(100 * high, 3)],
                      "wins": int((delta > 1e-9).sum()), "losses": int((delta < -1e-9).sum())}
        # fast path (grid_fuse) against the real fuse, for the record
        fast, fast_ids = grid_scores(cache, qrels, [static[m]["best_alpha"]], mode=m, ids=kept, depth=depth)
        results[m]["grid_fuse_matches_fuse"] = bool(np.allclose(fast[0], [per_query[m]["best_alpha"][q] for q in fast_ids]))
    report["test"] = results

    # per-intent breakdown (predicted label and the policy key used)
    breakdown: dict[str, Any] = {}
    for m in ("corpus", "pool"):
        groups: dict[str, list[str]] = {}
        for q in test_ids:
            if q in per_query[m]["rrf"]:
                groups.setdefault(test_keys[q].label, []).append(q)
        for label, members in sorted(groups.items()):
            entry = breakdown.setdefault(label, {"queries": len(members)})
            entry[m] = {name: round(statistics.fmean(per_query[m][name][q] for q in members), 5)
                        for name in ("rrf", "best_alpha", "intent")}
    report["per_intent"] = breakdown
    used: dict[str, int] = {}
    for q in test_ids:
        key = next((k for k in test_keys[q].keys if k in rows_index), "default")
        used[key] = used.get(key, 0) + 1
    report["policy_keys_used"] = dict(sorted(used.items()))

    # save the learned policy (and optionally ship it)
    learned.metrics.update({f"test_{m}_{k}": v for m, r in results.items() for k, v in r.items()
                            if k in ("rrf", "best_alpha", "intent", "gain_points")})
    learned.metrics["intent_model_heldout_accuracy"] = round(
        output.metrics["heldout_utterances"]["intent"]["accuracy"], 4)
    out_dir = Path(out_policy)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save(out_dir)
    learned.save(out_dir)
    report["policy"] = learned.to_dict()
    if ship:
        target = default_policy_dir()
        target.mkdir(parents=True, exist_ok=True)
        for file in out_dir.iterdir():
            shutil.copy2(file, target / file.name)
        report["shipped_to"] = str(target)

    # live check: the searcher with the learned policy, as users run it
    from shopfusion.client import Client

    sample = test_ids[:live_queries]
    client = Client(index_dir, settings=settings.replace("search", policy=str(out_dir)))
    live = client.evaluate({q: cache.queries[q] for q in sample}, {q: qrels[q] for q in sample}, mode="corpus",
                           runs=("hybrid",), k=100)
    cached = statistics.fmean(per_query["corpus"]["intent"][q] for q in sample if q in per_query["corpus"]["intent"])
    report["live_check"] = {"queries": len(sample), "client_evaluate_ndcg@10": round(live["runs"]["hybrid"]["ndcg@10"], 5),
                            "cached_legs_ndcg@10": round(cached, 5)}

    # 5. speed: the same searcher, intent policy against static, interleaved
    intent_policy = load_intent_policy(str(out_dir), settings.search)
    assert isinstance(intent_policy, IntentPolicy)
    static_policy = StaticPolicy.from_settings(settings.search)
    texts = [cache.queries[q] for q in test_ids[:latency_queries]]
    for text in texts[:20]:  # warm-up
        searcher.search(text, k=10)
    times: dict[str, list[float]] = {"static": [], "intent": []}
    decide_ms: list[float] = []
    for i, text in enumerate(texts):
        order = ("static", "intent") if i % 2 == 0 else ("intent", "static")
        for name in order:
            searcher.policy = static_policy if name == "static" else intent_policy
            start = time.perf_counter()
            searcher.search(text, k=10)
            times[name].append(1000 * (time.perf_counter() - start))
        vector = cache.vector(test_ids[i])
        start = time.perf_counter()
        intent_policy.decide(text, vector)
        decide_ms.append(1000 * (time.perf_counter() - start))
    speed: dict[str, Any] = {name: {"p50_ms": round(percentile(v, 50), 3), "p99_ms": round(percentile(v, 99), 3)}
             for name, v in times.items()}
    speed["added_p50_percent"] = round(100 * (speed["intent"]["p50_ms"] / speed["static"]["p50_ms"] - 1), 2)
    speed["decide_p50_ms"] = round(percentile(decide_ms, 50), 4)
    speed["decide_p99_ms"] = round(percentile(decide_ms, 99), 4)
    speed["queries"] = len(texts)
    report["speed"] = speed
    searcher.close()
    report["seconds"] = round(time.time() - started, 1)

    # print
    click.echo("\nIntent-aware fusion on Home Depot (policy learned on the training half, scored on the test half)")
    click.echo(f"static choices (training half): {report['static_choice']}")
    click.echo(f"{'mode':<8}{'queries':>8}{'RRF':>9}{'best α':>9}{'intent':>9}{'gain pts':>10}  95% CI     wins/losses")
    for m, r in results.items():
        click.echo(f"{m:<8}{r['queries']:>8}{r['rrf']:>9.4f}{r['best_alpha']:>9.4f}{r['intent']:>9.4f}"
                   f"{r['gain_points']:>10.2f}  [{r['gain_ci95_points'][0]:.2f}, {r['gain_ci95_points'][1]:.2f}]"
                   f"  {r['wins']}/{r['losses']}")
    click.echo(f"\n{'predicted intent':<30}{'queries':>8}  corpus RRF / best α / intent   pool RRF / best α / intent")
    for label, entry in breakdown.items():
        c, p = entry.get("corpus", {}), entry.get("pool", {})
        click.echo(f"{label:<30}{entry['queries']:>8}  {c.get('rrf', 0):.4f} / {c.get('best_alpha', 0):.4f} / "
                   f"{c.get('intent', 0):.4f}   {p.get('rrf', 0):.4f} / {p.get('best_alpha', 0):.4f} / {p.get('intent', 0):.4f}")
    click.echo(f"\npolicy rows: { {k: config_name(r.fusion) for k, r in learned.rows.items() if r.search} }")
    click.echo(f"policy keys used on the test half: {report['policy_keys_used']}")
    acc = output.metrics["heldout_utterances"]["intent"]
    click.echo(f"intent model, held-out utterances: accuracy {acc['accuracy']:.4f}, macro F1 {acc['macro_f1']:.4f}"
               f" (n={acc['n']})")
    if "heldout_product_queries" in output.metrics:
        held = output.metrics["heldout_product_queries"]
        click.echo(f"held-out HD queries: intent accuracy {held['intent']['accuracy']:.4f}; specificity accuracy "
                   f"{held.get('specificity', {}).get('accuracy', float('nan')):.4f}; leg accuracy "
                   f"{held.get('leg', {}).get('accuracy', float('nan')):.4f}")
    click.echo(f"live check ({len(sample)} queries): {report['live_check']}")
    click.echo(f"latency: static p50 {speed['static']['p50_ms']} ms p99 {speed['static']['p99_ms']} ms; intent p50 "
               f"{speed['intent']['p50_ms']} ms p99 {speed['intent']['p99_ms']} ms; added at p50 "
               f"{speed['added_p50_percent']}%; decide() p50 {speed['decide_p50_ms']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_intent_fusion-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    click.echo(f"saved {path}")


if __name__ == "__main__":
    main()
