"""Embedding throughput: raw `SentenceTransformer.encode` against the executors, and the shard merge.

    .venv/bin/python benchmarks/bench_workers.py --limit 5000
    .venv/bin/python benchmarks/bench_workers.py --limit 5000 --workers 1,2,4 --redis-url redis://127.0.0.1:6379

On the Home Depot titles (`../shared/data/homedepot/products.jsonl`, 54k products), measured in one run:

- `raw encode`: `SentenceTransformer.encode` over all titles at once (the ceiling for this process),
  measured first and again last (the load of a shared machine drifts); `vs raw` divides by the faster;
- `local`: `LocalExecutor` over the same executor batches the ingest pipeline cuts;
- `celery-N`: `CeleryExecutor` with one `celery worker` subprocess of N pool processes (each pool process
  gets cores/N torch threads), timed from the first dispatch to the last result, models already loaded;
- `merge`: reading every shard back and assembling the (n, dim) matrix in product order, then adding it to a
  flat FAISS index.

Redis: `--redis-url`, `$SHOPFUSION_TEST_REDIS_URL`, else a private server started with scripts/redis.sh and
stopped at the end. Prints a table and writes `benchmarks/results/bench_workers-<time>.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shopfusion.config import CelerySettings  # noqa: E402
from shopfusion.encoders import load_encoder  # noqa: E402
from workers.celery_executor import CeleryExecutor  # noqa: E402
from workers.executor import EmbedBatch, LocalExecutor  # noqa: E402
from workers.tasks import read_shard  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "homedepot" / "products.jsonl"


def read_titles(path: Path, limit: int | None) -> tuple[list[str], list[str]]:
    ids, titles = [], []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if not record.get("title"):
                continue
            ids.append(str(record["id"]))
            titles.append(str(record["title"]))
            if limit and len(ids) >= limit:
                break
    return ids, titles


def cut(ids: list[str], titles: list[str], size: int) -> list[EmbedBatch]:
    return [
        EmbedBatch(
            f"{start // size:06d}", tuple(ids[start : start + size]), tuple(titles[start : start + size])
        )
        for start in range(0, len(ids), size)
    ]


class Redis:
    def __init__(self, url: str | None) -> None:
        self.url = url or os.environ.get("SHOPFUSION_TEST_REDIS_URL")
        self.run_dir: Path | None = None

    def __enter__(self) -> str:
        if not self.url:
            self.run_dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
            out = self._script("start")
            self.url = next(
                line.split("=", 1)[1]
                for line in out.splitlines()
                if line.startswith("SHOPFUSION_TEST_REDIS_URL=")
            )
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.run_dir is not None:
            self._script("stop")
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _script(self, command: str) -> str:
        env = os.environ | {"SHOPFUSION_RUN": str(self.run_dir)}
        return subprocess.run(
            ["bash", str(REPO / "scripts" / "redis.sh"), command],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def start_worker(settings: CelerySettings, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPFUSION_CELERY_")}
    env |= {
        f"SHOPFUSION_CELERY_{k.upper()}": str(v)
        for k, v in dataclasses.asdict(settings).items()
        if v is not None
    }
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.worker_main",
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={settings.queue}",
        f"--hostname=bench-{uuid.uuid4().hex[:6]}@%h",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
    ]
    with log.open("wb") as handle:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench_celery(
    url: str, concurrency: int, model: str, batches: list[EmbedBatch], encode_batch_size: int, work: Path
) -> dict[str, Any]:
    settings = CelerySettings(
        broker_url=f"{url}/0",
        result_backend=f"{url}/1",
        queue=f"bench-{uuid.uuid4().hex[:8]}",
        concurrency=concurrency,
    )
    shard_dir = work / f"shards-{concurrency}"
    proc = start_worker(settings, concurrency, work / f"worker-{concurrency}.log")
    try:
        executor = CeleryExecutor(
            settings, shard_dir, device="cpu", encode_batch_size=encode_batch_size, keep_shards=True
        )
        # Warm-up: every pool process loads the model on its first batch; slow enough that all get one.
        warm = [EmbedBatch(f"warm{i}", ("w",), ("warm up " * 50,)) for i in range(4 * concurrency)]
        list(executor.map(model, warm))
        start = time.perf_counter()
        results = list(executor.map(model, batches))
        seconds = time.perf_counter() - start
        executor.close()
    finally:
        stop_worker(proc)
    failed = [r.batch_id for r in results if not r.ok]
    if failed:
        raise SystemExit(f"celery-{concurrency}: batches failed: {failed[:5]}")
    merge = bench_merge(shard_dir, batches)
    return {"seconds": seconds, "merge": merge}


def bench_merge(shard_dir: Path, batches: list[EmbedBatch]) -> dict[str, float]:
    import faiss
    import numpy as np

    start = time.perf_counter()
    parts = [read_shard(shard_dir, batch.batch_id)[1] for batch in batches]
    matrix = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    add_s = time.perf_counter() - start
    return {"read_and_order_s": read_s, "faiss_add_s": add_s, "rows": float(index.ntotal)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N products (default: all)")
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--batch-size", type=int, default=512, help="texts per executor batch (pipeline: 512)"
    )
    parser.add_argument("--encode-batch-size", type=int, default=64)
    parser.add_argument("--workers", default="1,2", help="pool sizes of the Celery runs, comma-separated")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--no-raw-again", action="store_true", help="skip the second raw baseline after the executor runs"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    import torch

    ids, titles = read_titles(args.data, args.limit)
    batches = cut(ids, titles, args.batch_size)
    n = len(titles)
    print(
        f"{n} titles, {len(batches)} batches of {args.batch_size}, model {args.model}, "
        f"{os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows: dict[str, dict[str, Any]] = {}

    encoder = load_encoder(args.model, "cpu")
    encoder.encode(titles[:64])  # load the model and warm up before timing

    def raw_encode() -> float:
        model = getattr(encoder, "model", None)
        start = time.perf_counter()
        if model is not None:
            model.encode(
                titles,
                batch_size=args.encode_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        else:
            encoder.encode(titles, batch_size=args.encode_batch_size)
        return time.perf_counter() - start

    rows["raw encode"] = {"seconds": raw_encode()}
    print(f"raw encode: {rows['raw encode']['seconds']:.1f} s", flush=True)

    start = time.perf_counter()
    local = list(
        LocalExecutor(device="cpu", encode_batch_size=args.encode_batch_size).map(args.model, batches)
    )
    rows["local executor"] = {"seconds": time.perf_counter() - start}
    assert all(r.ok for r in local)
    print(f"local executor: {rows['local executor']['seconds']:.1f} s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        with Redis(args.redis_url) as url:
            for concurrency in [int(c) for c in args.workers.split(",") if c.strip()]:
                result = bench_celery(url, concurrency, args.model, batches, args.encode_batch_size, work)
                rows[f"celery x{concurrency}"] = result
                print(
                    f"celery x{concurrency}: {result['seconds']:.1f} s, merge {result['merge']}", flush=True
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_raw_again:  # on a shared machine the load drifts: bracket the runs with two baselines
        rows["raw encode again"] = {"seconds": raw_encode()}

    base = min(row["seconds"] for name, row in rows.items() if name.startswith("raw encode"))
    print(f"\n{'run':<18}{'seconds':>10}{'texts/s':>10}{'vs raw':>9}")
    for name, row in rows.items():
        row["texts_per_s"] = n / row["seconds"]
        row["vs_raw"] = base / row["seconds"]
        print(f"{name:<18}{row['seconds']:>10.1f}{row['texts_per_s']:>10.0f}{row['vs_raw']:>9.2f}")
    for name, row in rows.items():
        if "merge" in row:
            m = row["merge"]
            print(
                f"merge after {name}: read+order {m['read_and_order_s'] * 1000:.0f} ms, "
                f"faiss add {m['faiss_add_s'] * 1000:.0f} ms ({int(m['rows'])} rows)"
            )

    report = {
        "benchmark": "bench_workers",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "texts": n,
        "batch_size": args.batch_size,
        "encode_batch_size": args.encode_batch_size,
        "model": args.model,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg": os.getloadavg(),
            "gpu": torch.cuda.is_available(),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_workers-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
