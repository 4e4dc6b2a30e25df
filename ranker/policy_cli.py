"""`shopfusion train policy`: learn the intent model and the per-intent fusion policy of an index.

    shopfusion train policy --index var/hd --queries val/queries.jsonl --qrels val/qrels.tsv --out models/policy

Mounted on the `train` group (`train.add_command(policy)` in trainer/cli.py). Heavy modules load inside
the command, so `--help` stays instant. Use the result with `search.policy = "models/policy"` (or
`SHOPFUSION_SEARCH_POLICY=models/policy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _default_data_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@click.command("policy")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="index directory whose legs the policy fuses.")
@click.option("--queries", "queries_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="validation queries (JSONL `id`, `text`, or TSV).")
@click.option("--qrels", "qrels_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="validation judgments (TSV `query_id product_id grade`, or TREC qrels).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for policy.json and the intent model.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="shopfusion TOML config.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="shared data folder with clinc150/ and wands_queries/ (default ../shared/data).")
@click.option("--intent-model", "intent_model_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="reuse this intent model (its .json) instead of training one.")
@click.option("--mode", type=click.Choice(["corpus", "pool", "both"]), default="corpus", show_default=True,
              help="which evaluation the rows maximise: whole-catalog search, re-ranking of the judged pool, or both.")
@click.option("--min-queries", type=int, default=50, show_default=True,
              help="queries a policy key needs for a row of its own (else it backs off to its parent).")
@click.option("--min-gain", type=float, default=0.002, show_default=True,
              help="nDCG@10 gain over the inherited row a key needs for a row of its own.")
@click.option("--folds", type=int, default=5, show_default=True,
              help="cross-validation blocks for the gain test (1: in-sample).")
@click.option("--depth", type=int, default=200, show_default=True, help="candidates per leg.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), default=None,
              help="keep the legs of every query here (reused when present).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
def policy(index_dir: str, queries_path: str, qrels_path: str, out_dir: str, config: str | None,
           data_dir: str | None, intent_model_path: str | None, mode: str, min_queries: int, min_gain: float,
           folds: int, depth: int, cache_path: str | None, as_json: bool) -> None:
    """Learn per-intent fusion (method, alpha, normalisation) on validation judgments."""
    from ranker.intent import IntentModel
    from ranker.intent_data import brands_from_products
    from ranker.intent_training import IntentTrainingArguments, train_intent_model
    from ranker.policy_training import LegCache, collect_legs, learn_policy, leg_winners
    from ranker.searcher import HybridSearcher
    from shopfusion.config import load_settings
    from shopfusion.evaluation import load_qrels, load_queries

    settings = load_settings(config).replace("search", policy="none")
    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    searcher = HybridSearcher(index_dir, settings)
    try:
        if cache_path and LegCache.exists(cache_path):
            cache = LegCache.load(cache_path)
        else:
            cache = collect_legs(searcher, queries, qrels, depth=depth, progress=not as_json)
            if cache_path:
                cache.save(cache_path)
        ids = cache.ids
        report: dict[str, Any] = {"queries": len(ids), "index": str(index_dir)}
        oof: dict[str, str] = {}
        if intent_model_path:
            model = IntentModel.load(intent_model_path)
        else:
            args = IntentTrainingArguments(Path(data_dir) if data_dir else _default_data_dir())
            legs = leg_winners(cache, qrels, ids)
            brands = brands_from_products(s.product for s in searcher.store.iter_stored())
            output = train_intent_model(
                args, lambda texts: searcher.encoder.encode(texts, batch_size=128),
                encoder_id=searcher.encoder.model_id, product_queries=[cache.queries[q] for q in ids],
                product_vectors=cache.vectors, leg_labels={i: legs[q] for i, q in enumerate(ids) if q in legs},
                brands=brands)
            model = output.model
            oof = {ids[i]: leg for i, leg in output.oof_legs.items()}
            report["intent_model"] = {"heldout": output.metrics, "counts": output.counts}
        learned = learn_policy(cache, qrels, model, mode=mode, min_queries=min_queries, min_gain=min_gain,
                               folds=folds, depth=depth, legs=oof, progress=not as_json)
        learned.training.update({"queries_file": str(queries_path), "qrels_file": str(qrels_path)})
        out = Path(out_dir)
        model.save(out)
        path = learned.save(out)
        report.update({"policy": str(path), "metrics": learned.metrics,
                       "rows": {k: {**r.fusion.to_dict(), **learned.stats.get(k, {})} for k, r in learned.rows.items()}})
    finally:
        searcher.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"policy: {report['policy']} ({report['queries']} queries)")
    for key, value in report["metrics"].items():
        click.echo(f"  {key}: {value}")
    for key, row in sorted(report["rows"].items()):
        fusion = row["method"] + (f" alpha {row['alpha']} {row['normalization']}" if row["method"] == "linear" else "")
        click.echo(f"  {key:<40} {fusion:<28} queries {row.get('queries', '-')}")
