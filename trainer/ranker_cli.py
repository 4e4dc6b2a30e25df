"""`shopfusion train ranker`: learn the learned ranking stage of an index from judgments or clicks.

    shopfusion train ranker --index var/shop --queries queries.jsonl --qrels qrels.tsv --output models/ranker
    shopfusion train ranker --index var/shop --clicks clicks.jsonl --output models/ranker-clicks

Then `search.ranker = "models/ranker"` (or `SHOPFUSION_SEARCH_RANKER`, or `--ranker` per command) turns it
on. Mounted on the `train` group (trainer/cli.py); heavy modules load inside the command, so `--help`
stays instant. The trainer API is `trainer.ranker_trainer`; click logs are `trainer.clicks`.
"""

from __future__ import annotations

import json
from typing import Any

import click


@click.command("ranker")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="the index whose candidates the ranker orders (features come from it).")
@click.option("--queries", "queries_path", type=click.Path(dir_okay=False, exists=True),
              help="training queries: JSONL `id`, `text` or TSV (with --qrels).")
@click.option("--qrels", "qrels_path", type=click.Path(dir_okay=False, exists=True),
              help="graded judgments: TSV `query_id product_id grade` or TREC qrels.")
@click.option("--clicks", "clicks_path", type=click.Path(dir_okay=False, exists=True),
              help="a click log instead of judgments (JSONL `query`, `shown`, `clicked`; see trainer.clicks).")
@click.option("--propensities", help="examination probability per rank for --clicks, comma separated from rank 1"
              " (default: estimated from the log by EM under the position-based model).")
@click.option("--valid-queries", type=click.Path(dir_okay=False, exists=True),
              help="validation queries for early stopping (default: a stable share of the training queries).")
@click.option("--valid-qrels", type=click.Path(dir_okay=False, exists=True), help="their judgments.")
@click.option("--validation-share", type=click.FloatRange(0, 0.9), default=0.2, show_default=True)
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="directory for ranker.txt, shopfusion_card.json and README.md.")
@click.option("--depth", type=click.IntRange(min=1), help="candidates per leg (default: the policy's, 200).")
@click.option("--num-leaves", type=click.IntRange(min=2), default=31, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=1000, show_default=True,
              help="most trees (early stopping on the validation nDCG@10 keeps the best).")
@click.option("--early-stopping", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--min-data-in-leaf", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--normalization", type=click.Choice(["none", "query"]), default="none", show_default=True,
              help="query: scale-dependent features normalised within each query (for other catalogs).")
@click.option("--exclude", multiple=True, help="a feature to leave out (repeatable; see ranker.features).")
@click.option("--portable", is_flag=True, help="leave out the features whose meaning depends on the catalog (scaled,"
              " title-only, field presence): for a ranker meant to serve other catalogs.")
@click.option("--monotone", is_flag=True, help="constrain the model to be monotone in each feature with a direction"
              " (coverage, leg ranks, ...): less room for one catalog's quirks.")
@click.option("--init-model", type=click.Path(file_okay=False, exists=True),
              help="warm start: continue from this ranker (its features and normalisation).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="feature cache (default ~/.cache/shopfusion/ranker-features).")
@click.option("--no-cache", is_flag=True, help="extract features without caching them.")
@click.option("--intent-model", help="intent model whose probabilities the ranker reads: `default`, `none` or a"
              " directory (search.intent_model; the ranker then needs the same one when it serves).")
@click.option("--policy", help="fusion policy that orders the candidates: `default`, `none` or a directory.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="shopfusion TOML config.")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
def ranker(as_json: bool, progress: bool | None, **opts: Any) -> None:
    """LambdaMART over the index's candidates, from graded judgments or a click log."""
    import sys

    from shopfusion.errors import ShopfusionError

    root = click.get_current_context().find_root().obj or {}
    opts["config"] = opts["config"] or root.get("config")
    try:
        result = _train(show=sys.stderr.isatty() if progress is None else progress, **opts)
    except ShopfusionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(f"ranker written to {result['output']} ({result['method']})")
    for key in ("queries", "validation_queries", "candidates", "trees"):
        if key in result:
            click.echo(f"  {key}: {result[key]}")
    for key, value in result["metrics"].items():
        click.echo(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    click.echo(f"use it: search.ranker = \"{result['output']}\" (or --ranker {result['output']})")


def _train(*, index_dir: str, queries_path: str | None, qrels_path: str | None, clicks_path: str | None,
           propensities: str | None, valid_queries: str | None, valid_qrels: str | None, validation_share: float,
           output_dir: str, depth: int | None, num_leaves: int, learning_rate: float, rounds: int,
           early_stopping: int, min_data_in_leaf: int, normalization: str, exclude: tuple[str, ...], portable: bool,
           monotone: bool,
           init_model: str | None, seed: int, cache_dir: str | None, no_cache: bool, intent_model: str | None,
           policy: str | None, config: str | None, show: bool) -> dict[str, Any]:
    from ranker.learned import RANKER_FILE
    from ranker.searcher import HybridSearcher
    from shopfusion.config import load_settings
    from shopfusion.errors import TrainingError
    from shopfusion.evaluation import load_qrels, load_queries
    from trainer.ranker_trainer import (
        DEFAULT_CACHE_DIR,
        RankerParams,
        judgment_gains,
        save_ranker,
        train_ranker,
    )

    if clicks_path is None and (queries_path is None or qrels_path is None):
        raise TrainingError("give --queries and --qrels (graded judgments), or --clicks (a click log)")
    if clicks_path is not None and qrels_path is not None:
        raise TrainingError("give either --qrels or --clicks, not both")
    params = RankerParams(num_leaves=num_leaves, learning_rate=learning_rate, rounds=rounds,
                          early_stopping=early_stopping, min_data_in_leaf=min_data_in_leaf, seed=seed,
                          normalization=normalization, exclude=tuple(exclude),  # type: ignore[arg-type]
                          portable=portable, monotone=monotone)
    init = None
    if init_model is not None:
        from ranker.learned import LearnedRanker

        source = LearnedRanker.load(init_model)
        params = RankerParams(**{**params.__dict__, "normalization": source.spec.normalization,
                                 "exclude": tuple(n for n in params.feature_names if n not in source.spec.feature_names)})
        init = str(source.path / RANKER_FILE) if source.path else None
    settings = load_settings(config)
    settings = settings.replace("search", intent_model=intent_model, policy=policy)
    searcher = HybridSearcher(index_dir, settings)
    extra: dict[str, Any] = {}
    try:
        if clicks_path is not None:
            from trainer.clicks import click_labels, debiased_relevance, estimate_propensities, read_click_log

            sessions = read_click_log(clicks_path)
            if propensities:
                try:
                    theta = [float(p) for p in propensities.split(",") if p.strip()]
                except ValueError as exc:
                    raise TrainingError(f"--propensities {propensities!r}: give numbers like 1,0.5,0.33") from exc
            else:
                theta = [float(t) for t in estimate_propensities(sessions)]
            labels: dict[str, Any] = click_labels(debiased_relevance(sessions, theta, by_id=False))
            queries = {text: text for text in labels}
            method = "lambdarank from clicks (IPW, position-based model)"
            data = [f"click log {clicks_path}: {len(sessions)} sessions, {len(queries)} queries"]
            extra["propensities"] = [round(t, 4) for t in theta]
            valid = valid_labels = None
        else:
            assert queries_path is not None and qrels_path is not None
            queries = load_queries(queries_path)
            labels = judgment_gains(load_qrels(qrels_path))
            method = "lambdarank from graded judgments"
            data = [f"queries {queries_path}", f"judgments {qrels_path}"]
            valid = load_queries(valid_queries) if valid_queries else None
            valid_labels = judgment_gains(load_qrels(valid_qrels)) if valid_qrels else None
            if valid is not None and valid_labels is None:
                raise TrainingError("--valid-queries needs --valid-qrels")
        fitted, summary = train_ranker(
            searcher, queries, labels, valid_queries=valid, valid_labels=valid_labels,
            validation_share=validation_share, params=params, depth=depth,
            cache_dir=None if no_cache else (cache_dir or DEFAULT_CACHE_DIR), init_model=init, progress=show)
        path = save_ranker(fitted, output_dir, searcher=searcher, method=method, data=data, depth=depth,
                           metrics=extra)
    finally:
        searcher.close()
    return {"output": str(path), "method": method, **summary, "trees": fitted.best_iteration,
            "metrics": fitted.metrics, **extra}
