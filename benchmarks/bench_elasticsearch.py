"""Lexical engines on the Home Depot catalog: indexing speed (docs/s) and BM25 quality (nDCG@10).

Indexes the 54,667 Home Depot products into the local Elasticsearch node (scripts/elasticsearch.sh) and
into the embedded tantivy store, with the same `standard` analyzer (the test node has no `english`), then
runs every judged query through each and scores the runs with `shopfusion.evaluation`.

    eval "$(scripts/elasticsearch.sh start)"
    ~/.cache/shopfusion/venv/bin/python benchmarks/bench_elasticsearch.py            # all 54,667 products
    ~/.cache/shopfusion/venv/bin/python benchmarks/bench_elasticsearch.py --limit 5000 --queries 500

Hybrid search (`--hybrid N`): the dense leg needs the MiniLM embeddings of every product, which on a
shared 2-core CPU is far slower than the lexical legs, so the hybrid comparison runs on a sample: the
products judged for the first N queries plus every 40th product of the catalog (a corpus where lexical and
dense retrieval still compete with thousands of distractors). It indexes the sample with tantivy, then
re-indexes the same index directory with Elasticsearch as the lexical engine (the vectors are reused, the
texts being unchanged), and evaluates `lexical` and `hybrid` runs of `Client.evaluate` for both.

    ~/.cache/shopfusion/venv/bin/python benchmarks/bench_elasticsearch.py --engines none --hybrid 300

Without $SHOPFUSION_TEST_ES_URL (or --es-url) the script starts the node itself and leaves it running.
Results go to benchmarks/results/elasticsearch.json. Products are read and validated by the project's own
catalog reader, so the rejects count matches `shopfusion index`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.readers import read_catalog  # noqa: E402
from indexer.stores.base import LexicalIndex  # noqa: E402
from indexer.validation import validate  # noqa: E402
from shopfusion.config import ElasticsearchSettings  # noqa: E402
from shopfusion.types import Product  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULTS = Path(__file__).resolve().parent / "results"


def load_products(path: Path, limit: int | None) -> tuple[list[Product], int]:
    products: list[Product] = []
    rejected = 0
    for record in read_catalog(path):
        outcome = validate(record)
        if isinstance(outcome, Product):
            products.append(outcome)
        else:
            rejected += 1
        if limit is not None and len(products) >= limit:
            break
    return products, rejected


def es_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("SHOPFUSION_TEST_ES_URL"):
        return os.environ["SHOPFUSION_TEST_ES_URL"]
    out = subprocess.run(["bash", str(ROOT / "scripts" / "elasticsearch.sh"), "start"], check=True,
                         capture_output=True, text=True).stdout
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("SHOPFUSION_TEST_ES_URL="))


def timed_index(store, products: list[Product]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    report = store.upsert(products)
    store.commit()
    seconds = time.perf_counter() - started
    return {"docs": report.succeeded, "failed": len(report.failed), "seconds": round(seconds, 2),
            "docs_per_s": round(report.succeeded / seconds, 1)}


def run_queries(store, queries: dict[str, str], k: int) -> tuple[dict[str, dict[str, float]], float]:  # type: ignore[no-untyped-def]
    run: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for qid, text in queries.items():
        run[qid] = {hit.product_id: hit.score for hit in store.search(text, k=k)}
    return run, (time.perf_counter() - started) / max(1, len(queries)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--limit", type=int, default=None, help="index only the first N products")
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N judged queries")
    parser.add_argument("--k", type=int, default=100, help="run depth (recall@100 needs 100)")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--engines", default="elasticsearch,tantivy")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's ES index")
    parser.add_argument("--hybrid", type=int, default=0, metavar="N",
                        help="also compare hybrid search with each lexical engine on the N-query sample")
    parser.add_argument("--model", default="default", help="encoder of the hybrid runs (default: MiniLM)")
    parser.add_argument("--device", default="auto", help="device of the hybrid runs' encoder")
    args = parser.parse_args()

    from shopfusion.evaluation import evaluate, load_qrels, load_queries

    products, rejected = load_products(args.data / "products.jsonl", args.limit)
    qrels = load_qrels(args.data / "qrels.tsv")
    known = {p.id for p in products}
    queries = {qid: text for qid, text in load_queries(args.data / "queries.jsonl").items()
               if qid in qrels and (args.limit is None or any(d in known for d in qrels[qid]))}
    if args.queries:
        queries = dict(list(queries.items())[: args.queries])
    qrels = {qid: qrels[qid] for qid in queries}
    print(f"{len(products)} products ({rejected} rejected), {len(queries)} judged queries", flush=True)

    results: dict[str, object] = {"products": len(products), "rejected": rejected, "queries": len(queries),
                                  "analyzer": "standard", "engines": {}}
    engines = results["engines"]
    assert isinstance(engines, dict)
    for engine in args.engines.split(","):
        store: LexicalIndex
        if engine == "none":
            continue
        if engine == "elasticsearch":
            from indexer.stores.elasticsearch_store import ElasticsearchLexicalIndex

            url = es_url(args.es_url)
            settings = ElasticsearchSettings(hosts=(url,), analyzer="standard", chunk_size=args.chunk_size)
            store = ElasticsearchLexicalIndex(settings, namespace="bench-homedepot",
                                              version=f"v{int(time.time())}", create=True, replicas=0)
            store.drop()  # a clean index even if this second's version exists
            info = {"node": url, "chunk_size": args.chunk_size}
        elif engine == "tantivy":
            from indexer.stores.tantivy_store import TantivyLexicalIndex

            store = TantivyLexicalIndex(Path(tempfile.mkdtemp(prefix="bench-tantivy-")), analyzer="standard",
                                        create=True)
            info = {}
        else:
            raise SystemExit(f"unknown engine {engine!r}: use elasticsearch and/or tantivy")
        info |= timed_index(store, products)
        print(f"{engine}: indexed {info['docs']} docs in {info['seconds']} s = {info['docs_per_s']} docs/s "
              f"({info['failed']} failed)", flush=True)
        run, ms = run_queries(store, queries, args.k)
        metrics = evaluate(run, qrels)
        assert all(isinstance(v, float) for v in metrics.values())
        info |= {"ms_per_query": round(ms, 2), **{m: round(float(v), 4) for m, v in metrics.items()}}  # type: ignore[arg-type]
        print(f"{engine}: {ms:.1f} ms/query, " + ", ".join(f"{m} {v:.4f}" for m, v in metrics.items()),
              flush=True)
        engines[engine] = info
        if engine == "elasticsearch" and not args.keep or engine == "tantivy":
            store.drop()
        store.close()

    if args.hybrid:
        results["hybrid"] = hybrid(args, args.hybrid)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("elasticsearch.json" if not args.hybrid else "elasticsearch_hybrid.json")
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def hybrid(args: argparse.Namespace, n_queries: int) -> dict[str, object]:
    from shopfusion.client import Client
    from shopfusion.config import load_settings
    from shopfusion.evaluation import load_qrels, load_queries

    qrels_all = load_qrels(args.data / "qrels.tsv")
    queries = {qid: text for qid, text in load_queries(args.data / "queries.jsonl").items() if qid in qrels_all}
    queries = dict(list(queries.items())[:n_queries])
    qrels = {qid: qrels_all[qid] for qid in queries}
    judged = {doc for docs in qrels.values() for doc in docs}
    work = Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    sample = work / "sample.jsonl"
    kept = 0
    with (args.data / "products.jsonl").open(encoding="utf-8") as source, sample.open("w", encoding="utf-8") as out:
        for i, line in enumerate(source):
            if json.loads(line)["id"] in judged or i % 40 == 0:
                out.write(line)
                kept += 1
    print(f"hybrid sample: {kept} products, {len(queries)} queries", flush=True)
    url = es_url(args.es_url)
    report: dict[str, object] = {"products": kept, "queries": len(queries), "engines": {}}
    for engine in ("tantivy", "elasticsearch"):
        settings = load_settings(env={
            "SHOPFUSION_INDEX_LEXICAL": engine, "SHOPFUSION_INDEX_ANALYZER": "standard",
            "SHOPFUSION_INDEX_DEVICE": args.device, "SHOPFUSION_INDEX_MODEL": args.model, "SHOPFUSION_ELASTICSEARCH_ANALYZER": "standard",
            "SHOPFUSION_ELASTICSEARCH_HOSTS": url,
        })
        client = Client(work / "index", settings=settings)
        started = time.perf_counter()
        summary = client.index(sample, replace=True)
        seconds = time.perf_counter() - started
        evaluation = client.evaluate(queries, qrels, runs=("lexical", "hybrid"), k=100)
        client.close()
        runs = {name: {m: round(v, 4) for m, v in metrics.items()} for name, metrics in evaluation["runs"].items()}
        report["engines"][engine] = {"index_seconds": round(seconds, 1), "embedded": summary.embedded,  # type: ignore[index]
                                     "reused_vectors": summary.reused_vectors, **runs}
        print(f"hybrid with {engine}: indexed in {seconds:.1f} s (embedded {summary.embedded}, reused "
              f"{summary.reused_vectors}); " + "; ".join(
                  f"{name} ndcg@10 {m['ndcg@10']:.4f}" for name, m in runs.items()), flush=True)
    if not args.keep:
        from indexer.manifest import IndexDirectory
        from indexer.stores.elasticsearch_store import (
            ElasticsearchLexicalIndex,
            active_version,
            cleanup_versions,
        )

        es_settings = ElasticsearchSettings(hosts=(url,))
        namespace = IndexDirectory(work / "index").namespace
        cleanup_versions(es_settings, namespace, keep=[])
        current = active_version(es_settings, namespace)
        if current:
            ElasticsearchLexicalIndex(es_settings, namespace=namespace, version=current).drop()
    return report


if __name__ == "__main__":
    main()
