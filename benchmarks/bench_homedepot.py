"""Home Depot benchmark for the embedded default: retrieval quality and speed, on ../shared/data/homedepot.

Quality (`quality`): nDCG@10, Recall@100 and MRR of BM25 only, dense only, RRF and normalized linear fusion
(min-max and z-score) in corpus mode (whole 54,667-product catalog, top `--depth` per leg) and pool mode
(re-rank each query's judged products), plus the shipped default hybrid exactly as `shopfusion search`
runs it. Legs are retrieved once per query and fused offline with `ranker.fusion.fuse`, the function the
searcher uses.

Speed (`speed`): indexing throughput against raw `SentenceTransformer.encode` on the same texts, measured
in the same run, and search latency p50/p99 of lexical, dense and hybrid queries (query encoding included).

    python benchmarks/bench_homedepot.py quality --index var/hd
    python benchmarks/bench_homedepot.py speed --limit 20000

Results are printed and saved as JSON under benchmarks/results/.
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

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _settings(policy: str = "none"):
    from shopfusion.config import Settings

    return Settings().replace("index", device="cpu").replace("search", policy=policy)


def _ensure_index(index_dir: Path) -> None:
    from indexer.manifest import IndexDirectory
    from indexer.pipeline import run_index

    if IndexDirectory(index_dir).exists():
        return
    click.echo(f"building {index_dir} from {DATA / 'products.jsonl'} (one-off)", err=True)
    run_index(DATA / "products.jsonl", index_dir, settings=_settings(), progress=True)


def _environment() -> dict:
    import torch

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@click.group()
def cli() -> None:
    """Home Depot benchmarks (quality and speed) for the embedded default."""


@cli.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=str(ROOT / "var" / "hd"),
              show_default=True, help="Index of the Home Depot catalog (built here when missing).")
@click.option("--depth", type=int, default=1000, show_default=True, help="Candidates per leg (corpus mode).")
@click.option("--limit", type=int, help="Only the first N judged queries.")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS / "homedepot_quality.json"),
              show_default=True)
def quality(index_dir: str, depth: int, limit: int | None, out: str) -> None:
    """BM25, dense, RRF and linear fusion in corpus and pool modes, and the default hybrid."""
    from ranker.fusion import FusionConfig, fuse
    from ranker.searcher import HybridSearcher
    from shopfusion.client import Client
    from shopfusion.evaluation import evaluate, load_qrels, load_queries
    from shopfusion.types import LegHit

    _ensure_index(Path(index_dir))
    queries = load_queries(DATA / "queries.jsonl")
    qrels = load_qrels(DATA / "qrels.tsv")
    judged = [q for q in queries if q in qrels][: limit or None]
    qrels = {q: qrels[q] for q in judged}
    searcher = HybridSearcher(index_dir, _settings())
    click.echo(f"{len(judged)} judged queries; encoding them", err=True)
    vectors = searcher.encoder.encode([queries[q] for q in judged], batch_size=256)

    configs = {
        "bm25": FusionConfig(alpha=0.0),
        "dense": FusionConfig(alpha=1.0),
        "rrf": FusionConfig(method="rrf"),
        "linear_minmax_0.3": FusionConfig(alpha=0.3),
        "linear_minmax_0.5": FusionConfig(alpha=0.5),
        "linear_minmax_0.7": FusionConfig(alpha=0.7),
        "linear_zscore_0.5": FusionConfig(alpha=0.5, normalization="zscore"),
    }
    report: dict = {"queries": len(judged), "depth": depth, "environment": _environment(), "modes": {}}
    for mode in ("corpus", "pool"):
        runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in configs}
        started = time.perf_counter()
        for qid, vector in zip(judged, vectors, strict=True):
            text = queries[qid]
            if mode == "corpus":
                legs = {"lexical": searcher.lexical.search(text, depth), "dense": searcher.vectors.search(vector, depth)}
            else:
                ids = list(qrels[qid])
                legs = {"lexical": _ranked(searcher.lexical.score(text, ids), LegHit),
                        "dense": _ranked(searcher.vectors.score(vector, ids), LegHit)}
            for name, config in configs.items():
                fused = fuse(legs, config, order={pid: i for i, pid in enumerate(qrels[qid])} if mode == "pool" else None)
                if name == "bm25":
                    fused = [f for f in fused if f.legs["lexical"].normalized is not None] if mode == "corpus" else fused
                if name == "dense":
                    fused = [f for f in fused if f.legs["dense"].normalized is not None] if mode == "corpus" else fused
                runs[name][qid] = {f.product_id: float(len(fused) - r) for r, f in enumerate(fused[:100])}
        metrics = {name: evaluate(run, qrels) for name, run in runs.items()}
        report["modes"][mode] = {"metrics": metrics, "seconds": round(time.perf_counter() - started, 1)}
        _table(f"{mode} mode, top {depth} per leg" if mode == "corpus" else "pool mode (judged products)", metrics)

    click.echo("default hybrid through Client.search / Client.rerank (shipped settings)", err=True)
    client = Client(index_dir, settings=_settings(policy="default"))
    default = {}
    for mode in ("corpus", "pool"):
        default[mode] = client.evaluate({q: queries[q] for q in judged}, qrels, mode=mode,
                                        runs=("hybrid",))["runs"]
        _table(f"default settings, {mode} mode", default[mode])
    report["default"] = default
    report["default_settings"] = _settings(policy="default").to_dict()["search"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"saved {out}")


def _ranked(scores: dict[str, float], leg_hit) -> list:
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [leg_hit(pid, s, r) for r, (pid, s) in enumerate(ordered, start=1)]


def _table(title: str, metrics: dict[str, dict[str, float]]) -> None:
    click.echo(f"\n{title}")
    click.echo(f"  {'run':<20} {'nDCG@10':>8} {'R@100':>8} {'MRR':>8}")
    for name, m in metrics.items():
        click.echo(f"  {name:<20} {m['ndcg@10']:8.4f} {m['recall@100']:8.4f} {m['mrr']:8.4f}")


@cli.command()
@click.option("--limit", type=int, default=None, help="Index only the first N products (default: all 54,667).")
@click.option("--queries", "n_queries", type=int, default=500, show_default=True, help="Queries to time.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=str(ROOT / "var" / "hd"),
              show_default=True, help="Full-catalog index for the latency part (built when missing).")
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS / "homedepot_speed.json"),
              show_default=True)
def speed(limit: int | None, n_queries: int, index_dir: str, out: str) -> None:
    """Indexing throughput vs raw encode (same texts, same run) and search latency p50/p99."""
    from indexer.pipeline import run_index
    from indexer.readers import read_catalog
    from indexer.validation import validate
    from ranker.searcher import HybridSearcher
    from shopfusion.encoders import load_encoder
    from shopfusion.evaluation import load_queries
    from shopfusion.types import Product

    report: dict = {"environment": _environment()}
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        catalog = Path(tmp) / "catalog.jsonl"
        texts = []
        with catalog.open("w") as handle, (DATA / "products.jsonl").open() as source:
            for n, line in enumerate(source):
                if limit is not None and n >= limit:
                    break
                handle.write(line)
        for record in read_catalog(catalog):
            product = validate(record)
            if isinstance(product, Product):
                texts.append(product.embedding_text())
        encoder = load_encoder("default", "cpu")
        encoder.encode(["warm up"] * 8)
        click.echo(f"raw SentenceTransformer.encode of {len(texts)} texts", err=True)
        started = time.perf_counter()
        encoder.model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        raw_seconds = time.perf_counter() - started
        click.echo("shopfusion index of the same catalog", err=True)
        started = time.perf_counter()
        summary = run_index(catalog, Path(tmp) / "idx", settings=_settings())
        index_seconds = time.perf_counter() - started
        shutil.rmtree(Path(tmp) / "idx", ignore_errors=True)
    report["indexing"] = {
        "products": len(texts), "raw_encode_seconds": round(raw_seconds, 2),
        "raw_encode_per_second": round(len(texts) / raw_seconds, 1),
        "index_seconds": round(index_seconds, 2), "index_per_second": round(summary.total / index_seconds, 1),
        "throughput_ratio": round(raw_seconds / index_seconds, 3),
    }
    click.echo(json.dumps(report["indexing"], indent=2))

    _ensure_index(Path(index_dir))
    searcher = HybridSearcher(index_dir, _settings())
    queries = list(load_queries(DATA / "queries.jsonl").values())
    rng = np.random.default_rng(0)
    sample = [queries[i] for i in rng.choice(len(queries), size=min(n_queries, len(queries)), replace=False)]
    latency = {}
    for mode in ("lexical", "dense", "hybrid"):
        for query in sample[:20]:
            searcher.search(query, k=10, mode=mode)  # warm up
        times = []
        for query in sample:
            started = time.perf_counter()
            searcher.search(query, k=10, mode=mode)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        latency[mode] = {"p50_ms": round(statistics.median(times), 2),
                         "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
                         "mean_ms": round(statistics.fmean(times), 2)}
    report["latency"] = {"queries": len(sample), "k": 10, "depth": searcher.settings.search.depth,
                         "catalog": searcher.manifest.counts["products"], **latency}
    click.echo(json.dumps(report["latency"], indent=2))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"saved {out}")


if __name__ == "__main__":
    cli()
