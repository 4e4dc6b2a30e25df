"""Tail latency and Python's garbage collector: in-process hybrid search with the loaded index left to
the cyclic collector, then frozen out of its reach (`gc.freeze()`, what `shopfusion serve` does after
loading a version; `shopfusion.service.served`).

    python benchmarks/bench_gc_tail.py --index /path/to/index --queries 600

A full (generation 2) collection walks every live object; with a model and an index loaded that is tens
of thousands of objects, and the query that triggers it waits. Reported per arm: p50, p90, p99, max and
the number of full collections during the arm. Arms alternate (as is, frozen, as is, frozen) on the same
Home Depot queries.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUERIES = ROOT.parent / "shared" / "data" / "homedepot" / "queries.jsonl"


@click.command()
@click.option("--index", "index_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--queries", "n", type=int, default=600, show_default=True)
def main(index_dir: str, n: int) -> None:
    from shopfusion.client import Client
    from shopfusion.evaluation import load_queries

    queries = list(load_queries(QUERIES).values())
    random.Random(5).shuffle(queries)
    queries = queries[:n]
    client = Client(index_dir)
    for query in queries[:20]:
        client.search(query, k=10)
    full: list[int] = []
    gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
    report = {}
    for arm in ("as is", "frozen", "as is", "frozen"):
        if arm == "frozen":
            gc.collect()
            gc.freeze()
        else:
            gc.unfreeze()
        full.clear()
        latencies = []
        for query in queries:
            started = time.perf_counter()
            client.search(query, k=10)
            latencies.append((time.perf_counter() - started) * 1000)
        ordered = sorted(latencies)
        row = {"p50_ms": round(ordered[len(ordered) // 2], 2), "p90_ms": round(ordered[int(0.9 * len(ordered))], 2),
               "p99_ms": round(ordered[int(0.99 * len(ordered))], 2), "max_ms": round(ordered[-1], 2),
               "full_collections": len(full), "frozen_objects": gc.get_freeze_count()}
        report.setdefault(arm, []).append(row)
        click.echo(f"{arm:<7} {json.dumps(row)}")
    client.close()


if __name__ == "__main__":
    main()
