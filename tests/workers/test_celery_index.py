"""End to end: indexing a catalog with `index.executor = "celery"` and real workers gives the index the
in-process executor builds (same summary, same hits and scores), also when a worker process is SIGKILLed
mid-batch (the slow-batch test hook of `workers.tasks` marks which process to kill)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from indexer.pipeline import run_index
from shopfusion.client import Client
from shopfusion.config import Settings
from tests.plugins.catalogs import TINY, write_jsonl
from workers.tasks import SLOW_MARKER_ENV, SLOW_SECONDS_ENV

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

QUERIES = ["cordless drill", "garden hose", "led bulb", "hammer", "screwdriver set variant 7"]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """1,200 products: more than two executor batches of 512; one carries the slow-batch marker."""
    records = []
    for n in range(100):
        for product in TINY:
            record = product.to_dict()
            record["id"] = f"{product.id}-{n:03d}"
            record["title"] = f"{product.title} variant {n}"
            records.append(record)
    records[600]["title"] += " slowpokemarker"
    return write_jsonl(tmp_path / "catalog.jsonl", records)


def test_celery_index_equals_local_index(  # type: ignore[no-untyped-def]
    catalog: Path, redis_url, celery_settings, celery_worker, tmp_path: Path
) -> None:
    local_settings = Settings().replace("index", model="hash:32")
    celery = celery_settings(redis_url, shard_dir=str(tmp_path / "shards"))
    worker = celery_worker(celery, concurrency=2)
    remote_settings = dataclasses.replace(local_settings, celery=celery).replace("index", executor="celery")

    local = run_index(catalog, tmp_path / "local", settings=local_settings)
    remote = run_index(catalog, tmp_path / "celery", settings=remote_settings)

    assert remote.failures == {} and local.failures == {}
    assert (
        (remote.added, remote.embedded, remote.total)
        == (local.added, local.embedded, local.total)
        == (
            1200,
            1200,
            1200,
        )
    )
    assert_same_hits(tmp_path / "local", local_settings, tmp_path / "celery", remote_settings)
    assert list((tmp_path / "shards").glob("*.npy")) == []
    assert worker.output().count(" succeeded in ") == 3  # 1,200 texts in batches of 512, all on the worker


def test_index_is_complete_after_a_worker_process_is_sigkilled(  # type: ignore[no-untyped-def]
    catalog: Path, redis_url, celery_settings, celery_worker, tmp_path: Path
) -> None:
    local_settings = Settings().replace("index", model="hash:32")
    shard_dir = tmp_path / "shards"
    celery = celery_settings(redis_url, shard_dir=str(shard_dir))
    worker = celery_worker(
        celery, concurrency=2, env={SLOW_MARKER_ENV: "slowpokemarker", SLOW_SECONDS_ENV: "60"}
    )
    remote_settings = dataclasses.replace(local_settings, celery=celery).replace("index", executor="celery")
    local = run_index(catalog, tmp_path / "local", settings=local_settings)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_index, catalog, tmp_path / "celery", settings=remote_settings)
        busy = _slow_batch_pid(shard_dir)
        os.kill(busy, signal.SIGKILL)
        remote = future.result(timeout=150)

    assert "signal 9 (SIGKILL)" in worker.output()
    assert remote.failures == {}
    assert (remote.embedded, remote.total) == (local.embedded, local.total) == (1200, 1200)
    assert_same_hits(tmp_path / "local", local_settings, tmp_path / "celery", remote_settings)


def _slow_batch_pid(shard_dir: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for flag in shard_dir.glob("*.slow"):
            text = flag.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    pytest.fail("the slow batch never started")


def assert_same_hits(
    left_dir: Path, left_settings: Settings, right_dir: Path, right_settings: Settings
) -> None:
    left = Client(left_dir, settings=left_settings)
    right = Client(right_dir, settings=right_settings)
    try:
        for query in QUERIES:
            expected = [(h.product_id, round(h.score, 5)) for h in left.search(query, k=20).hits]
            got = [(h.product_id, round(h.score, 5)) for h in right.search(query, k=20).hits]
            assert got == expected and len(got) == 20, query
    finally:
        left.close()
        right.close()
