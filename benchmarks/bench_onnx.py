"""ONNX Runtime encoder: which int8 recipe, and what it costs in quality and buys in speed, on Home Depot.

`recipes`: the quantisation study. Every recipe (`shopfusion.onnx_quantize.QuantRecipe`) is made from the
same fp32 export of the packaged MiniLM and measured in one run against torch fp32 on:

- a corpus of Home Depot products: every product judged for the `validation` queries of
  `benchmarks/splits.py` plus a seeded random fill up to `--corpus` products (settings are chosen on
  validation queries; the test queries are kept for `homedepot`);
- quality: cosine to torch fp32 per product (mean, 1st percentile, min) and per query, mean top-10
  overlap of dense retrieval over that corpus, and dense nDCG@10 of the validation queries on it;
- batch invariance: the vector of a query encoded alone against the same query inside a catalog batch
  of 64 (dynamic quantisation scales activations by the whole batch);
- speed: catalog throughput (texts/s, length-bucketed batches of `--batch-size`, every core) and single
  query encode p50/p99 (one thread), with torch measured the same way in the same run.

    python benchmarks/bench_onnx.py recipes                     # writes benchmarks/results/onnx_recipes.json

`homedepot`: the shipped backends on the whole catalog and the test queries; see its --help.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULTS = ROOT / "benchmarks" / "results"


def _recipes() -> dict[str, Any]:
    from shopfusion.onnx_quantize import QuantRecipe

    last = ("layer.5/", "Attention_5")
    ffn_out = tuple(f"layer.{i}/output/dense" for i in range(6))
    return {
        "naive (plain graph, per-tensor)": QuantRecipe(graph="plain"),
        "fused graph, per-tensor": QuantRecipe(),
        "fused, per-channel": QuantRecipe(per_channel=True),
        "fused, per-channel, reduce-range": QuantRecipe(per_channel=True, reduce_range=True),
        "fused, per-channel, fp32 last layer": QuantRecipe(per_channel=True, keep_fp32=last),
        "fused, per-channel, fp32 attention output": QuantRecipe(per_channel=True, keep_fp32=("attention/output/dense",)),
        "fused, per-channel, fp32 FFN output": QuantRecipe(per_channel=True, keep_fp32=ffn_out),
        "fused, per-channel, fp32 attention (MatMul only)": QuantRecipe(per_channel=True, op_types=("MatMul",)),
        "static QDQ, per-channel, minmax (plain graph)": QuantRecipe(method="static", per_channel=True, graph="plain"),
        "static QDQ, per-channel, percentile (plain graph)": QuantRecipe(method="static", per_channel=True, graph="plain",
                                                                         calibration="percentile"),
        "fused, per-channel, fp32 FFN output + last layer": QuantRecipe(per_channel=True, keep_fp32=ffn_out + last),
        "static QDQ, per-channel, minmax (fused graph, MatMul)": QuantRecipe(method="static", per_channel=True),
        "static QDQ, per-channel, entropy (plain graph)": QuantRecipe(method="static", per_channel=True, graph="plain",
                                                                      calibration="entropy"),
        "fused, per-channel, SmoothQuant 0.5": QuantRecipe(per_channel=True, smooth=0.5),
        "fused, per-channel, SmoothQuant 0.75": QuantRecipe(per_channel=True, smooth=0.75),
        "fused, per-channel, SmoothQuant 0.9": QuantRecipe(per_channel=True, smooth=0.9),
        "fused, per-channel, SmoothQuant 0.7 (shipped)": QuantRecipe(per_channel=True, smooth=0.7),
        "fused, per-channel, SmoothQuant 0.8": QuantRecipe(per_channel=True, smooth=0.8),
        "fused, per-channel, SmoothQuant 0.75, fp32 last FFN output":
            QuantRecipe(per_channel=True, smooth=0.75, keep_fp32=("layer.5/output/dense",)),
        "fused, per-channel, SmoothQuant 0.75, fp32 FFN output": QuantRecipe(per_channel=True, smooth=0.75,
                                                                             keep_fp32=ffn_out),
        "weight-only int8, block 32": QuantRecipe(method="weight-only", bits=8, block_size=32),
        "weight-only int8, block 128": QuantRecipe(method="weight-only", bits=8, block_size=128),
        "weight-only int4, block 32": QuantRecipe(method="weight-only", bits=4, block_size=32),
    }


def _environment() -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg()[0],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def load_homedepot() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, float]]]:
    """(product id -> embedding text, query id -> text, qrels)."""
    from indexer.readers import read_catalog
    from indexer.validation import validate
    from shopfusion.evaluation import load_qrels, load_queries
    from shopfusion.types import Product

    texts: dict[str, str] = {}
    for record in read_catalog(DATA / "products.jsonl"):
        product = validate(record)
        if isinstance(product, Product):
            texts[product.id] = product.embedding_text()
    return texts, load_queries(DATA / "queries.jsonl"), load_qrels(DATA / "qrels.tsv")


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3)}


def _query_latency(encode_query: Any, queries: list[str]) -> dict[str, float]:
    for text in queries[:20]:
        encode_query(text)
    times = []
    for text in queries:
        started = time.perf_counter()
        encode_query(text)
        times.append((time.perf_counter() - started) * 1000)
    return _percentiles(times)


def _throughput(encode: Any, texts: list[str], batch_size: int) -> float:
    encode(texts[:64], batch_size=batch_size)
    started = time.perf_counter()
    encode(texts, batch_size=batch_size)
    return round(len(texts) / (time.perf_counter() - started), 1)


def _dense_run(queries: np.ndarray, corpus: np.ndarray, ids: list[str], qids: list[str], k: int = 100
               ) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    scores = queries @ corpus.T
    top = np.argsort(-scores, axis=1)[:, :k]
    run = {qid: {ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
    return run, top[:, :10]


@click.group()
def cli() -> None:
    """ONNX Runtime encoder benchmarks."""


@cli.command()
@click.option("--corpus", "corpus_size", type=int, default=8000, show_default=True,
              help="Products in the study corpus (all judged for the validation queries, then random).")
@click.option("--speed-texts", type=int, default=3000, show_default=True, help="Texts timed for throughput.")
@click.option("--latency-queries", type=int, default=300, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--only", multiple=True, help="Only the recipes whose name contains this (repeatable).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where the recipe graphs are written (default: a temporary directory).")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS / "onnx_recipes.json"), show_default=True)
def recipes(corpus_size: int, speed_texts: int, latency_queries: int, batch_size: int, only: tuple[str, ...],
            workdir: str | None, out: str) -> None:
    """Speed and drift of every int8 recipe against torch fp32 (and ONNX fp32), same run."""
    from benchmarks.splits import split
    from shopfusion.encoders import DEFAULT_MODEL_NAME, default_model_path, load_encoder
    from shopfusion.evaluation import evaluate
    from shopfusion.onnx_encoder import OnnxEncoder
    from shopfusion.onnx_export import ExportedModel, _sha256, ensure_export, load_sentence_transformer
    from shopfusion.onnx_quantize import quantize

    texts, queries, qrels = load_homedepot()
    validation = [q for q in split(qrels)["validation"] if q in queries]
    judged = sorted({pid for q in validation for pid in qrels[q] if pid in texts})
    rng = np.random.default_rng(0)
    rest = sorted(set(texts) - set(judged))
    fill = rng.choice(len(rest), size=max(0, corpus_size - len(judged)), replace=False)
    ids = judged + [rest[i] for i in sorted(fill)]
    corpus_texts = [texts[pid] for pid in ids]
    query_texts = [queries[q] for q in validation]
    speed_sample = [corpus_texts[i] for i in rng.choice(len(ids), size=min(speed_texts, len(ids)), replace=False)]
    latency_sample = query_texts[:latency_queries]
    val_qrels = {q: qrels[q] for q in validation}
    click.echo(f"corpus {len(ids)} products ({len(judged)} judged), {len(validation)} validation queries", err=True)

    report: dict[str, Any] = {"environment": _environment(), "corpus": len(ids), "queries": len(validation),
                              "batch_size": batch_size, "speed_texts": len(speed_sample), "rows": {}}
    torch_encoder = load_encoder("default", "cpu")
    click.echo("torch fp32 reference", err=True)
    cache = Path(workdir) / f"torch-reference-{len(ids)}.npz" if workdir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            ref_corpus, ref_queries = saved["corpus"], saved["queries"]
    else:
        ref_corpus = torch_encoder.encode(corpus_texts, batch_size=batch_size)
        ref_queries = torch_encoder.encode(query_texts, batch_size=batch_size)
        if cache is not None:
            np.savez(cache, corpus=ref_corpus, queries=ref_queries)
    ref_run, ref_top = _dense_run(ref_queries, ref_corpus, ids, validation)
    torch_row = {"throughput": _throughput(torch_encoder.encode, speed_sample, batch_size),
                 **_query_latency(torch_encoder.encode_query, latency_sample),
                 "ndcg@10": round(evaluate(ref_run, val_qrels)["ndcg@10"], 4)}
    report["rows"]["torch fp32"] = torch_row
    click.echo(f"  {torch_row}", err=True)

    fp32 = ensure_export(default_model_path(), "fp32", packaged=True)
    model = load_sentence_transformer(default_model_path())
    candidates: dict[str, Any] = {"onnx fp32 (fused graph)": None, **_recipes()}
    with tempfile.TemporaryDirectory(prefix="sf-onnx-", dir=workdir) as tmp:
        for name, recipe in candidates.items():
            if only and not any(o in name for o in only):
                continue
            click.echo(name, err=True)
            if recipe is None:
                export, built = fp32, 0.0
            else:
                path = Path(tmp) / f"{len(report['rows'])}.onnx"
                started = time.perf_counter()
                try:
                    quantize(fp32.path.parent, path, recipe, model)
                except Exception as exc:  # a recipe ONNX Runtime cannot build is a result too
                    report["rows"][name] = {"recipe": recipe.to_dict(), "error": f"{type(exc).__name__}: {exc}"}
                    click.echo(f"  failed: {exc}", err=True)
                    continue
                built = time.perf_counter() - started
                export = ExportedModel("int8", path, _sha256(path), fp32.tokenizer, fp32.source_sha256, fp32.dim,
                                       fp32.max_seq_length, fp32.lower_case)
            encoder = OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME, packaged=True, export=export,
                                  variant="int8" if recipe is not None else "fp32")
            row = _measure(encoder, corpus_texts, query_texts, ids, validation, val_qrels, ref_corpus,
                           ref_queries, ref_top, speed_sample, latency_sample, batch_size)
            row.update({"recipe": None if recipe is None else recipe.to_dict(), "build_seconds": round(built, 1),
                        "size_mb": round(export.path.stat().st_size / 1e6, 1),
                        "speedup_vs_torch": round(row["throughput"] / torch_row["throughput"], 2)})
            report["rows"][name] = row
            click.echo(f"  {row}", err=True)
            del encoder
    report["torch_again"] = {"throughput": _throughput(torch_encoder.encode, speed_sample, batch_size)}
    report["environment"]["load_average_end"] = os.getloadavg()[0]
    _print_recipes(report)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"saved {out}")


@cli.command()
@click.option("--only", multiple=True, help="Recipes whose name contains this (repeatable; default: a short list).")
@click.option("--texts", "n_texts", type=int, default=2000, show_default=True, help="Texts timed per round.")
@click.option("--source", type=click.Choice(["homedepot", "scale"]), default="homedepot", show_default=True,
              help="Home Depot titles, or a sample of the scale benchmark's mixed catalog (--catalog).")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), help="Catalog for --source scale.")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--latency-queries", type=int, default=300, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None)
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS / "onnx_speed.json"), show_default=True)
def speed(only: tuple[str, ...], n_texts: int, source: str, catalog: str | None, rounds: int, batch_size: int,
          latency_queries: int, workdir: str | None, out: str) -> None:
    """Throughput and query latency of torch and the chosen recipes, in interleaved rounds (a shared
    machine's load drifts; each backend's median over the rounds is reported)."""
    from shopfusion.encoders import DEFAULT_MODEL_NAME, default_model_path, load_encoder
    from shopfusion.onnx_encoder import OnnxEncoder
    from shopfusion.onnx_export import ExportedModel, _sha256, ensure_export, load_sentence_transformer
    from shopfusion.onnx_quantize import quantize

    environment = _environment()
    texts, queries, _ = load_homedepot()
    rng = np.random.default_rng(0)
    if source == "scale":
        if catalog is None:
            raise click.UsageError("--source scale needs --catalog")
        from indexer.readers import read_catalog
        from indexer.validation import validate
        from shopfusion.types import Product

        pool = [p.embedding_text() for r in read_catalog(Path(catalog))
                if isinstance(p := validate(r), Product)]
    else:
        pool = list(texts.values())
    sample = [pool[i] for i in rng.choice(len(pool), size=min(n_texts, len(pool)), replace=False)]
    query_texts = [queries[q] for q in sorted(queries)][:latency_queries]
    wanted = only or ("fused, per-channel", "fused, per-channel, SmoothQuant 0.7 (shipped)", "weight-only int8, block 32")
    fp32 = ensure_export(default_model_path(), "fp32", packaged=True)
    model = load_sentence_transformer(default_model_path())
    encoders: dict[str, Any] = {"torch fp32": load_encoder("default", "cpu"),
                                "onnx fp32": OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME,
                                                         variant="fp32", packaged=True)}
    with tempfile.TemporaryDirectory(prefix="sf-onnx-speed-", dir=workdir) as tmp:
        for name, recipe in _recipes().items():
            if name not in wanted and not (only and any(w in name for w in wanted if w not in _recipes())):
                continue  # an exact recipe name, or (with --only) a part of one
            path = Path(tmp) / f"{len(encoders)}.onnx"
            quantize(fp32.path.parent, path, recipe, model)
            export = ExportedModel("int8", path, _sha256(path), fp32.tokenizer, fp32.source_sha256, fp32.dim,
                                   fp32.max_seq_length, fp32.lower_case)
            encoders[name] = OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME, variant="int8",
                                         packaged=True, export=export)
        throughput: dict[str, list[float]] = {name: [] for name in encoders}
        latency: dict[str, list[dict[str, float]]] = {name: [] for name in encoders}
        for round_number in range(rounds):
            for name, encoder in encoders.items():
                throughput[name].append(_throughput(encoder.encode, sample, batch_size))
                latency[name].append(_query_latency(encoder.encode_query, query_texts))
                click.echo(f"round {round_number}: {name}: {throughput[name][-1]} texts/s,"
                           f" query p50 {latency[name][-1]['p50_ms']} ms", err=True)
    torch_rate = statistics.median(throughput["torch fp32"])
    rows = {name: {"throughput": statistics.median(values), "rounds": values,
                   "speedup_vs_torch": round(statistics.median(values) / torch_rate, 2),
                   "query_p50_ms": statistics.median(r["p50_ms"] for r in latency[name]),
                   "query_p99_ms": statistics.median(r["p99_ms"] for r in latency[name])}
            for name, values in throughput.items()}
    report = {"environment": environment, "source": source, "texts": len(sample), "batch_size": batch_size,
              "rounds": rounds, "rows": rows}
    report["environment"]["load_average_end"] = os.getloadavg()[0]
    click.echo(f"\n{'backend':<52} {'texts/s':>8} {'x torch':>7} {'query p50':>9} {'p99':>7}")
    for name, row in rows.items():
        click.echo(f"{name:<52} {row['throughput']:8.1f} {row['speedup_vs_torch']:7.2f} {row['query_p50_ms']:9.2f}"
                   f" {row['query_p99_ms']:7.2f}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"saved {out}")


@cli.command()
@click.option("--torch-index", type=click.Path(file_okay=False), required=True,
              help="Full Home Depot index built with the torch backend (built here when missing).")
@click.option("--int8-index", type=click.Path(file_okay=False), required=True,
              help="Full Home Depot index built with onnx-int8 (built here when missing).")
@click.option("--speed-products", type=int, default=8000, show_default=True,
              help="Products indexed by each backend for the throughput ratio (same texts, same run).")
@click.option("--latency-queries", type=int, default=500, show_default=True)
@click.option("--split", "split_name", type=click.Choice(["test", "validation", "train"]), default="test",
              show_default=True, help="Judged queries evaluated (benchmarks/splits.py).")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS / "onnx_homedepot.json"), show_default=True)
def homedepot(torch_index: str, int8_index: str, speed_products: int, latency_queries: int, split_name: str,
              out: str) -> None:
    """The shipped int8 backend on Home Depot: indexing throughput against torch (same texts, same run),
    query encoding and hybrid latency with the shipped defaults on the full index, and nDCG@10 of torch,
    int8 and mixed (queries of one backend against vectors of the other) on the judged queries."""
    from benchmarks.splits import split
    from indexer.pipeline import run_index
    from ranker.searcher import HybridSearcher
    from shopfusion.client import Client
    from shopfusion.config import Settings

    defaults = Settings()
    report: dict[str, Any] = {"environment": _environment(), "defaults": defaults.to_dict()["search"]}
    for backend, directory in (("torch", torch_index), ("onnx-int8", int8_index)):
        if not (Path(directory) / "manifest.json").is_file():
            click.echo(f"building {directory} with {backend}", err=True)
            summary = run_index(DATA / "products.jsonl", directory,
                                settings=defaults.replace("index", backend=backend, device="cpu"))
            report[f"full_index_{backend}"] = {"seconds": summary.seconds, "phases": summary.phases,
                                               "products_per_second": round(summary.total / summary.seconds, 1)}

    click.echo("indexing throughput, same texts, same run", err=True)
    with tempfile.TemporaryDirectory(prefix="sf-hd-speed-") as tmp:
        catalog = Path(tmp) / "catalog.jsonl"
        with catalog.open("w") as handle, (DATA / "products.jsonl").open() as source:
            for n, line in enumerate(source):
                if n >= speed_products:
                    break
                handle.write(line)
        rows = {}
        for backend in ("torch", "onnx-int8", "torch", "onnx-int8"):  # twice each, interleaved
            target = Path(tmp) / f"idx-{backend}-{len(rows)}"
            summary = run_index(catalog, target, settings=defaults.replace("index", backend=backend, device="cpu"))
            rate = summary.total / summary.seconds
            rows.setdefault(backend, []).append(round(rate, 1))
            click.echo(f"  {backend}: {rate:.1f} products/s (embed {summary.phases.get('embed')} s)", err=True)
            shutil.rmtree(target, ignore_errors=True)
    best = {backend: max(rates) for backend, rates in rows.items()}
    report["indexing"] = {"products": speed_products, "products_per_second": rows,
                          "ratio": round(best["onnx-int8"] / best["torch"], 2)}

    texts, queries, qrels = load_homedepot()
    rng = np.random.default_rng(0)
    pool = sorted(queries)
    sample = [queries[pool[i]] for i in rng.choice(len(pool), size=min(latency_queries, len(pool)), replace=False)]
    report["latency"] = {}
    for backend, directory in (("torch", torch_index), ("onnx-int8", int8_index)):
        searcher = HybridSearcher(directory, defaults)
        for text in sample[:20]:
            searcher.search(text)
        encode, hybrid = [], []
        for text in sample:
            started = time.perf_counter()
            searcher.encoder.encode_query(text)
            encode.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            searcher.search(text)
            hybrid.append((time.perf_counter() - started) * 1000)
        report["latency"][backend] = {"encode": _percentiles(encode), "hybrid": _percentiles(hybrid),
                                      "index_backend": searcher.manifest.backend}
        click.echo(f"  {backend}: {report['latency'][backend]}", err=True)
        searcher.close()

    judged = [q for q in split(qrels)[split_name] if q in queries]
    query_map = {q: queries[q] for q in judged}
    report["quality"] = {"split": split_name, "queries": len(judged), "runs": {}}
    for name, directory, backend in (("torch", torch_index, "auto"), ("onnx-int8", int8_index, "auto"),
                                     ("torch queries on the int8 index", int8_index, "torch"),
                                     ("int8 queries on the torch index", torch_index, "onnx-int8")):
        client = Client(directory, settings=defaults.replace("index", backend=backend, device="cpu"))
        metrics = client.evaluate(query_map, {q: qrels[q] for q in judged}, runs=("hybrid", "dense"))["runs"]
        report["quality"]["runs"][name] = metrics
        click.echo(f"  {name}: hybrid nDCG@10 {metrics['hybrid']['ndcg@10']:.4f},"
                   f" dense {metrics['dense']['ndcg@10']:.4f}", err=True)
        client.close()
    runs = report["quality"]["runs"]
    report["quality"]["hybrid_delta_points"] = round(100 * (runs["onnx-int8"]["hybrid"]["ndcg@10"]
                                                            - runs["torch"]["hybrid"]["ndcg@10"]), 2)
    report["quality"]["dense_delta_points"] = round(100 * (runs["onnx-int8"]["dense"]["ndcg@10"]
                                                           - runs["torch"]["dense"]["ndcg@10"]), 2)
    report["environment"]["load_average_end"] = os.getloadavg()[0]
    click.echo(json.dumps({k: report[k] for k in ("indexing", "latency", "quality")}, indent=2))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"saved {out}")


@cli.command()
@click.option("--recipes", "recipes_file", type=click.Path(dir_okay=False), default=str(RESULTS / "onnx_recipes.json"))
def report(recipes_file: str) -> None:
    """The study as a Markdown table (quality columns: load-independent)."""
    data = json.loads(Path(recipes_file).read_text())
    click.echo("| recipe | cosine mean | cosine p01 | query cosine | top-10 overlap | nDCG@10 | batch |")
    click.echo("|---|---|---|---|---|---|---|")
    for name, row in data["rows"].items():
        if "error" in row:
            click.echo(f"| {name} | failed: {row['error'][:60]} | | | | | |")
            continue
        click.echo(f"| {name} | {row.get('product_cosine_mean', 1.0):.4f} | {row.get('product_cosine_p01', 1.0):.4f} |"
                   f" {row.get('query_cosine_mean', 1.0):.4f} | {row.get('top10_overlap', 1.0):.3f} |"
                   f" {row['ndcg@10']:.4f} | {row.get('batch_cosine_min', 1.0):.4f} |")


def _measure(encoder: Any, corpus_texts: list[str], query_texts: list[str], ids: list[str], qids: list[str],
             qrels: dict[str, dict[str, float]], ref_corpus: np.ndarray, ref_queries: np.ndarray,
             ref_top: np.ndarray, speed_sample: list[str], latency_sample: list[str], batch_size: int
             ) -> dict[str, Any]:
    from shopfusion.evaluation import evaluate

    corpus = encoder.encode(corpus_texts, batch_size=batch_size)
    query_vectors = np.stack([encoder.encode_query(q) for q in query_texts])
    run, top = _dense_run(query_vectors, corpus, ids, qids)
    cos = np.sum(corpus * ref_corpus, axis=1)
    qcos = np.sum(query_vectors * ref_queries, axis=1)
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top, strict=True)]))
    batch = corpus_texts[:63]
    alone = query_vectors[:100]
    inside = np.stack([encoder.encode([q] + batch, batch_size=64)[0] for q in query_texts[:100]])
    return {
        "throughput": _throughput(encoder.encode, speed_sample, batch_size),
        **_query_latency(encoder.encode_query, latency_sample),
        "product_cosine_mean": round(float(cos.mean()), 5), "product_cosine_p01": round(float(np.quantile(cos, 0.01)), 5),
        "product_cosine_min": round(float(cos.min()), 5), "query_cosine_mean": round(float(qcos.mean()), 5),
        "top10_overlap": round(overlap, 4), "ndcg@10": round(evaluate(run, qrels)["ndcg@10"], 4),
        "batch_cosine_min": round(float(np.min(np.sum(alone * inside, axis=1))), 6),
    }


def _print_recipes(report: dict[str, Any]) -> None:
    click.echo(f"\n{'recipe':<52} {'texts/s':>8} {'x torch':>7} {'q p50':>6} {'cos':>7} {'cos p01':>7} "
               f"{'q cos':>7} {'top10':>6} {'nDCG':>6} {'batch':>7}")
    for name, row in report["rows"].items():
        if "error" in row:
            click.echo(f"{name:<52} failed: {row['error'][:60]}")
            continue
        click.echo(f"{name:<52} {row['throughput']:8.1f} {row.get('speedup_vs_torch', 1.0):7.2f} "
                   f"{row['p50_ms']:6.2f} {row.get('product_cosine_mean', 1):7.4f} "
                   f"{row.get('product_cosine_p01', 1):7.4f} {row.get('query_cosine_mean', 1):7.4f} "
                   f"{row.get('top10_overlap', 1):6.3f} {row['ndcg@10']:6.4f} {row.get('batch_cosine_min', 1):7.4f}")


if __name__ == "__main__":
    cli()
