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


def cached_encoder(encoder: Any) -> Any:
    """`encoder.encode` with the result kept under the cache folder (training texts are the same each run)."""
    def encode(texts: list[str]) -> np.ndarray:
        key = hashlib.sha1(("\n".join(texts) + encoder.model_id).encode()).hexdigest()[:16]
        path = CACHE / f"intent-texts-{key}.npy"
        if path.is_file():
            return np.load(path, allow_pickle=False)
        vectors = encoder.encode(texts, batch_size=128)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
        return vectors

    return encode


def explore_per_query_choice(cache: Any, qrels: Any, grid: list[Any], rules: Any, train_ids: list[str],
                             test_ids: list[str]) -> dict[str, Any]:
    """What a finer policy could gain: ridge regression from query features to each grid point's nDCG@10
    gain over the global best, choosing per query the best predicted point (test-half gain, corpus mode).
    Features: the query embedding plus surface features (what a query-time policy sees), or post-retrieval
    features of the two legs (score levels and gaps, overlap), which a policy deciding after retrieval could use."""
    from ranker.intent import head_features
    from ranker.policy_training import grid_scores

    tr, kept_tr = grid_scores(cache, qrels, grid, mode="corpus", ids=train_ids)
    te, kept_te = grid_scores(cache, qrels, grid, mode="corpus", ids=test_ids)
    best = int(np.argmax(tr.mean(axis=1)))

    def post(q: str) -> list[float]:
        lex, dense = cache.corpus[q]["lexical"], cache.corpus[q]["dense"]
        ls, ds = [x for _, x in lex] or [0.0], [x for _, x in dense] or [0.0]
        lt, dt = [p for p, _ in lex], [p for p, _ in dense]

        def at(a: list[float], i: int) -> float:
            return a[min(i, len(a) - 1)]

        def overlap(k: int) -> float:
            return len(set(lt[:k]) & set(dt[:k])) / k

        return [ls[0], ls[0] - at(ls, 1), ls[0] - at(ls, 9), len(lex), ds[0], ds[0] - at(ds, 1), ds[0] - at(ds, 9),
                ds[0] - at(ds, 99), overlap(1), overlap(10), overlap(50)]

    def features(ids: list[str], kind: str) -> np.ndarray:
        if kind == "query":
            vectors = np.stack([cache.vector(q) for q in ids])
            x = head_features(rules, [cache.queries[q] for q in ids], vectors, ("embedding", "surface"))
        else:
            x = np.array([post(q) for q in ids])
        return x.astype(np.float64)

    out: dict[str, Any] = {"global_best": best}
    for kind in ("query", "post_retrieval"):
        xtr, xte = features(kept_tr, kind), features(kept_te, kind)
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-9
        xtr = np.hstack([(xtr - mu) / sd, np.ones((len(xtr), 1))])
        xte = np.hstack([(xte - mu) / sd, np.ones((len(xte), 1))])
        y = (tr - tr[best]).T
        gains = {}
        for lam in (10.0, 100.0, 1000.0):
            w = np.linalg.solve(xtr.T @ xtr + lam * np.eye(xtr.shape[1]), xtr.T @ y)
            pred = xte @ w
            choice = np.where(pred.max(axis=1) > 0, pred.argmax(axis=1), best)
            gains[f"lambda={lam:g}"] = round(100 * float(te[choice, np.arange(len(kept_te))].mean() - te[best].mean()), 3)
        out[kind] = gains
    return out


def bootstrap_ci(delta: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [float(delta[rng.integers(0, len(delta), len(delta))].mean()) for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


@click.command()
@click.option("--index", "index_dir", default=str(ROOT / "var" / "hd"), show_default=True)
@click.option("--depth", default=200, show_default=True)
@click.option("--mode", "train_mode", type=click.Choice(["corpus", "pool"]), default="corpus", show_default=True,
              help="which of the two learned policies (one per evaluation mode) is saved, shipped and timed.")
@click.option("--min-queries", default=50, show_default=True)
@click.option("--min-gain", default=0.002, show_default=True)
@click.option("--folds", default=5, show_default=True, help="cross-validation blocks for a row's gain test.")
@click.option("--latency-queries", default=300, show_default=True)
@click.option("--live-queries", default=100, show_default=True)
@click.option("--out-policy", default=str(CACHE / "policy-hd"), show_default=True,
              help="where the trained intent model and policy are written.")
@click.option("--explore", is_flag=True, help="also try per-query fusion choice by ridge regression (see the report).")
@click.option("--ship", is_flag=True, help="also copy them to shopfusion/data/policy (the packaged default).")
def main(index_dir: str, depth: int, train_mode: str, min_queries: int, min_gain: float, folds: int, latency_queries: int,
         live_queries: int, out_policy: str, explore: bool, ship: bool) -> None:
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
        IntentTrainingArguments(DATA), cached_encoder(searcher.encoder),
        encoder_id=searcher.encoder.model_id, product_queries=[cache.queries[q] for q in train_ids],
        product_vectors=cache.vectors[[row[q] for q in train_ids]],
        leg_labels={i: legs_train[q] for i, q in enumerate(train_ids) if q in legs_train}, brands=brands,
        heldout_queries=[cache.queries[q] for q in test_ids], heldout_vectors=cache.vectors[[row[q] for q in test_ids]],
        heldout_legs={i: legs_test[q] for i, q in enumerate(test_ids) if q in legs_test})
    model = output.model
    report["intent_model"] = {"heldout": output.metrics, "counts": output.counts,
                              "train_seconds": round(time.perf_counter() - t, 1)}
    grid = default_grid()
    oof = {train_ids[i]: leg for i, leg in output.oof_legs.items()}
    policies = {m: learn_policy(cache, qrels, model, grid=grid, mode=m, ids=train_ids, min_queries=min_queries,
                                min_gain=min_gain, folds=folds, depth=depth, legs=oof, progress=True)
                for m in ("corpus", "pool")}
    for learned in policies.values():
        learned.training.update({"data": "Home Depot (Kaggle 2016) training half of the development split",
                                 "split": report["split"], "queries_file": "homedepot/queries.jsonl",
                                 "qrels_file": "homedepot/qrels.tsv"})
    learned = policies[train_mode]

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
    rows_by_mode: dict[str, dict[str, int]] = {}
    for m, policy_m in policies.items():
        rows_by_mode[m] = {"": next(i for i, c in enumerate(grid) if c == policy_m.default.fusion)}
        for key, policy_row in policy_m.rows.items():
            if policy_row.search:
                rows_by_mode[m][key] = next(i for i, c in enumerate(grid) if c == policy_row.fusion)
    results: dict[str, Any] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for m in ("corpus", "pool"):
        rows_index = rows_by_mode[m]
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
        # headroom: the best grid point per query (an oracle no query-time policy can reach)
        all_points, _ = grid_scores(cache, qrels, grid, mode=m, ids=kept, depth=depth)
        results[m]["oracle_per_query"] = round(float(all_points.max(axis=0).mean()), 5)
        results[m]["policy_rows"] = {k: config_name(grid[i]) for k, i in sorted(rows_index.items())}
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
        key = next((k for k in test_keys[q].keys if k in rows_by_mode[train_mode]), "default")
        used[key] = used.get(key, 0) + 1
    report["policy_keys_used"] = dict(sorted(used.items()))
    report["test_queries_withheld_as_service"] = [cache.queries[q] for q in test_ids if test_keys[q].intent == "service"]

    # save the learned policy (and optionally ship it)
    learned.metrics.update({f"test_{train_mode}_{k}": v for k, v in results[train_mode].items()
                            if k in ("rrf", "best_alpha", "intent", "gain_points")})
    learned.metrics["intent_model_heldout_accuracy"] = round(
        output.metrics["heldout_utterances"]["intent"]["accuracy"], 4)
    out_dir = Path(out_policy)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save(out_dir)
    learned.save(out_dir)
    report["policy"] = learned.to_dict()
    report["policy_other_mode"] = {m: p.to_dict() for m, p in policies.items() if m != train_mode}
    if ship:
        target = default_policy_dir()
        target.mkdir(parents=True, exist_ok=True)
        for file in out_dir.iterdir():
            shutil.copy2(file, target / file.name)
        report["shipped_to"] = str(target)

    if explore:
        report["explore_per_query_gain_points"] = explore_per_query_choice(cache, qrels, grid, model.rules, train_ids,
                                                                           test_ids)

    # live check: the searcher with the learned policy, as users run it
    from shopfusion.client import Client

    sample = test_ids[:live_queries]
    client = Client(index_dir, settings=settings.replace("search", policy=str(out_dir)))
    live = client.evaluate({q: cache.queries[q] for q in sample}, {q: qrels[q] for q in sample}, mode=train_mode,  # type: ignore[arg-type]
                           runs=("hybrid",), k=100)
    cached = statistics.fmean(per_query[train_mode]["intent"][q] for q in sample if q in per_query[train_mode]["intent"])
    report["live_check"] = {"queries": len(sample), "mode": train_mode, "client_evaluate_ndcg@10": round(live["runs"]["hybrid"]["ndcg@10"], 5),
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
    for m, r in results.items():
        click.echo(f"\n{m} policy rows (learned on the training half): {r['policy_rows']}; per-query oracle "
                   f"{r['oracle_per_query']:.4f}")
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
    if explore:
        click.echo(f"per-query choice by ridge regression, test gain in points (corpus): "
                   f"{report['explore_per_query_gain_points']}")
    click.echo(f"service threshold sweep: {output.metrics.get('service_threshold_sweep')}")
    click.echo(f"test queries withheld as service: {report['test_queries_withheld_as_service']}")
    click.echo(f"latency: static p50 {speed['static']['p50_ms']} ms p99 {speed['static']['p99_ms']} ms; intent p50 "
               f"{speed['intent']['p50_ms']} ms p99 {speed['intent']['p99_ms']} ms; added at p50 "
               f"{speed['added_p50_percent']}%; decide() p50 {speed['decide_p50_ms']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_intent_fusion-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    click.echo(f"saved {path}")


if __name__ == "__main__":
    main()
