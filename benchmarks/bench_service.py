"""HTTP service benchmark: `shopfusion serve` against the in-process client, on the full Home Depot index.

For `/search` (k 10) and `/rerank` (50 candidates, sent as the Elasticsearch `_search` response body a
search engine would forward: `_id`, `_score`, `_source.title`), a bounded load generator on loopback
(keep-alive connections, one per client thread) runs at concurrency 1, 4 and 16; the in-process
`Client` answers the same requests in the same run, alternating request by request with the HTTP path at
concurrency 1 (so both see the same machine load; the overhead is the median paired difference). Reported: requests/s, p50 and p99 latency, errors. With `--compare-batching`
a second server with `service.micro_batch = false` is measured at the highest concurrency.

    python benchmarks/bench_service.py --index /path/to/hd-index --requests 300

Goals (issue 11): at concurrency 1 the HTTP path adds at most 2 ms at p50 over the in-process call; at
concurrency 16 no errors and throughput at least that of concurrency 1. The load generator shares the
machine's cores with the server (2 on the development machine): read the numbers with that in mind.
Results are printed and saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _summary(latencies: list[float], seconds: float, errors: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] if ordered else float("nan")
    return {"requests": len(latencies) + errors, "errors": errors, "seconds": round(seconds, 3),
            "rps": round(len(latencies) / seconds, 2) if seconds else 0.0,
            "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else None,
            "p99_ms": round(p99 * 1000, 3) if ordered else None}


def _workload(n: int, seed: int) -> list[str]:
    import random

    from shopfusion.evaluation import load_queries

    queries = list(load_queries(DATA / "queries.jsonl").values())
    random.Random(seed).shuffle(queries)
    return queries[:n]


def _es_bodies(client: Any, queries: list[str], depth: int) -> list[dict[str, Any]]:
    """What an Elasticsearch `_search` would return for each query: its BM25 top `depth` (from our lexical leg)."""
    bodies = []
    searcher = client.searcher
    for query in queries:
        hits = searcher.lexical.search(query, depth)
        products = searcher.store.get_many([h.product_id for h in hits])
        bodies.append({"took": 2, "timed_out": False, "hits": {"total": {"value": len(hits), "relation": "eq"},
                       "max_score": hits[0].score if hits else None, "hits": [
                           {"_index": "products", "_id": h.product_id, "_score": h.score,
                            "_source": {"title": products[h.product_id].title}} for h in hits]}})
    return bodies


class Server:
    def __init__(self, index_dir: str, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopfusion.cli", "serve", "--index", index_dir, "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise click.ClickException(f"server exited: see {log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise click.ClickException("server not ready after 300 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def _load(port: int, path: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Each of `concurrency` threads sends its share of `bodies` over one keep-alive connection."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine: list[float] = []
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            t0 = time.perf_counter()
            try:
                connection.request("POST", path, body=bodies[index], headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                response = None
                errors.append(repr(exc))
            elapsed = time.perf_counter() - t0
            if ok:
                mine.append(elapsed)
            elif response is not None:
                errors.append(f"HTTP {response.status}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = _summary(latencies, time.perf_counter() - start, len(errors))
    result["error_samples"] = errors[:3]
    return result


def _paired(client: Any, port: int, searches: list[str], reranks: list[tuple[str, dict]]) -> dict[str, Any]:
    """Concurrency 1, request by request: the in-process call and the same request over HTTP, alternating
    which goes first, so both see the same machine load; the overhead is the median paired difference."""
    out: dict[str, Any] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    work = {"search": [(lambda q=q: client.search(q, k=10), ("/search", json.dumps({"query": q, "k": 10})))
                       for q in searches],
            "rerank": [(lambda q=q, b=b: client.rerank(q, b), ("/rerank", json.dumps({"query": q, "candidates": b})))
                       for q, b in reranks]}
    for name, calls in work.items():
        local: list[float] = []
        remote: list[float] = []
        server: list[dict[str, float]] = []
        errors = 0
        for i, (call, (path, body)) in enumerate(calls):
            for first in ((0, 1) if i % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                if first == 0:
                    call()
                    local.append(time.perf_counter() - t0)
                else:
                    connection.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        errors += 1
                    remote.append(time.perf_counter() - t0)
                    server.append(_server_timing(response.getheader("server-timing", "")))
        out[name] = {"in_process": _summary(local[10:], sum(local[10:]), 0),
                     "http": _summary(remote[10:], sum(remote[10:]), errors),
                     "overhead_p50_ms": round(statistics.median(
                         r - lo for r, lo in zip(remote[10:], local[10:], strict=True)) * 1000, 3),
                     "server_timing_p50_ms": {part: round(statistics.median(t[part] for t in server[10:]), 3)
                                              for part in ("queue", "work", "total")
                                              if all(part in t for t in server[10:])}}
        click.echo(f"  paired {name}: {out[name]}", err=True)
    connection.close()
    return out


def _server_timing(header: str) -> dict[str, float]:
    """The service's `Server-Timing` header (`work;dur=7.1, total;dur=8.0`) as {name: milliseconds}."""
    out = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            out[name] = float(duration)
    return out


def _http_runs(port: int, searches: list[str], reranks: list[tuple[str, dict]], levels: tuple[int, ...]) -> dict:
    search_bodies = [json.dumps({"query": q, "k": 10}).encode() for q in searches]
    rerank_bodies = [json.dumps({"query": q, "candidates": b}).encode() for q, b in reranks]
    out: dict[str, dict[str, Any]] = {"search": {}, "rerank": {}}
    for name, path, bodies in (("search", "/search", search_bodies), ("rerank", "/rerank", rerank_bodies)):
        _load(port, path, bodies[:10], 1)  # warm-up
        for level in levels:
            out[name][str(level)] = _load(port, path, bodies, level)
            click.echo(f"  http {name} c={level}: {out[name][str(level)]}", err=True)
    return out


@click.command()
@click.option("--index", "index_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A Home Depot index built with the default model (e.g. by bench_homedepot.py).")
@click.option("--requests", "n_requests", type=int, default=300, show_default=True,
              help="Requests per endpoint and concurrency level (bounded load).")
@click.option("--candidates", type=int, default=50, show_default=True, help="Candidates per /rerank.")
@click.option("--levels", default="1,4,16", show_default=True, help="Concurrency levels.")
@click.option("--compare-batching/--no-compare-batching", default=True, show_default=True,
              help="Also measure a server with micro-batching off at the highest level.")
@click.option("--out", type=click.Path(dir_okay=False), help="JSON report (default benchmarks/results/...).")
def main(index_dir: str, n_requests: int, candidates: int, levels: str, compare_batching: bool,
         out: str | None) -> None:
    """Benchmark `shopfusion serve` against the in-process client on the same index."""
    import torch

    from shopfusion.client import Client
    from shopfusion.config import load_settings

    level_list = tuple(int(x) for x in levels.split(","))
    settings = load_settings()
    searches = _workload(n_requests, seed=11)
    client = Client(index_dir, settings=settings)
    rerank_queries = _workload(n_requests, seed=12)
    reranks = list(zip(rerank_queries, _es_bodies(client, rerank_queries, candidates), strict=True))
    report: dict[str, Any] = {
        "index": index_dir, "requests": n_requests, "candidates": candidates, "levels": list(level_list),
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "load_before": os.getloadavg(),
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    logs = Path(tempfile.mkdtemp(prefix="bench_service-"))
    click.echo(f"server logs in {logs}", err=True)
    server = Server(index_dir, {}, logs / "server.log")
    try:
        click.echo("concurrency 1, in-process and HTTP alternating", err=True)
        for call in [lambda q=q: client.search(q, k=10) for q in searches[:10]]:
            call()
        report["paired"] = _paired(client, server.port, searches, reranks)
        click.echo("HTTP, micro-batching on (default)", err=True)
        report["http"] = _http_runs(server.port, searches, reranks, level_list)
    finally:
        server.stop()
    if compare_batching:
        top = (max(level_list),)
        server = Server(index_dir, {"SHOPFUSION_SERVICE_MICRO_BATCH": "false"},
                        logs / "server-nobatch.log")
        try:
            click.echo("HTTP, micro-batching off", err=True)
            report["http_no_batching"] = _http_runs(server.port, searches, reranks, top)
        finally:
            server.stop()
    client.close()
    report["environment"]["load_after"] = os.getloadavg()
    _print(report, level_list)
    path = Path(out) if out else RESULTS / f"bench_service-{stamp}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    click.echo(f"wrote {path}", err=True)


def _print(report: dict[str, Any], levels: tuple[int, ...]) -> None:
    click.echo(f"\n{'endpoint':<8} {'run':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name in ("search", "rerank"):
        paired = report["paired"][name]
        rows = [("in-process, c=1 (paired)", paired["in_process"]), ("HTTP, c=1 (paired)", paired["http"])]
        rows += [(f"HTTP c={level}", report["http"][name][str(level)]) for level in levels]
        if "http_no_batching" in report:
            for level, row in report["http_no_batching"][name].items():
                rows.append((f"HTTP c={level}, no batching", row))
        for label, row in rows:
            click.echo(f"{name:<8} {label:<30} {row['rps']:>8.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
                       f" {row['errors']:>6}")
        first = report["http"][name][str(levels[0])]
        top = report["http"][name][str(levels[-1])]
        click.echo(f"{name:<8} HTTP overhead at c=1: {paired['overhead_p50_ms']:+.2f} ms (median paired difference;"
                   f" goal <= 2); c={levels[-1]} vs c={levels[0]} throughput x{top['rps'] / first['rps']:.2f},"
                   f" errors {top['errors']}")
        timing = paired.get("server_timing_p50_ms", {})
        if {"work", "total"} <= set(timing):
            click.echo(f"{name:<8} server side at c=1 (Server-Timing p50): waiting for a thread {timing.get('queue', 0):.2f}"
                       f" ms, work {timing['work']:.2f} ms (in-process {paired['in_process']['p50_ms']:.2f}),"
                       f" total {timing['total']:.2f} ms; round trip {paired['http']['p50_ms']:.2f} ms")


if __name__ == "__main__":
    main()
