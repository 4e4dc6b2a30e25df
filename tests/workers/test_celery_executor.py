"""The Celery executor against a real Redis server and real `celery worker` subprocesses.

Fault injection uses one documented test hook of `workers.tasks` (inert unless its variable is set in the
worker's environment): a batch holding a text with `$SHOPFUSION_WORKER_TEST_SLOW_MARKER` sleeps on its first
run after writing its process id to `{shard_dir}/{batch_id}.slow`, so a test knows which process is busy
with which batch. A poison record is a real encoding failure: a text that is not a string.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from shopfusion.errors import BackendError
from workers.celery_executor import CeleryExecutor
from workers.executor import EmbedBatch, EmbedResult, Executor, LocalExecutor
from workers.tasks import SLOW_MARKER_ENV, SLOW_SECONDS_ENV, shard_paths

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

MODEL = "hash:32"
SLOW = "slowpokemarker"
TITLES = [
    "cordless drill 20v",
    "hammer drill bit set",
    "led light bulb 60w",
    "garden hose 50 ft",
    "interior paint white",
    "circular saw blade",
    "toilet flapper",
    "ceiling fan with light",
    "vinyl plank flooring",
    "outdoor patio chair",
    "extension cord 25 ft",
    "smoke detector",
]


def make_batches(count: int, size: int = 5, slow: set[int] = frozenset()) -> list[EmbedBatch]:  # type: ignore[assignment]
    batches = []
    for b in range(count):
        keys = tuple(f"p{b:03d}-{i}" for i in range(size))
        texts = [f"{TITLES[(b * size + i) % len(TITLES)]} model {b}-{i}" for i in range(size)]
        if b in slow:
            texts[0] = f"{texts[0]} {SLOW}"
        batches.append(EmbedBatch(f"b{b:03d}", keys, tuple(texts)))
    return batches


def by_batch(results: Iterable[EmbedResult]) -> dict[str, EmbedResult]:
    out: dict[str, EmbedResult] = {}
    for result in results:
        assert result.batch_id not in out, f"batch {result.batch_id} yielded twice"
        out[result.batch_id] = result
    return out


def assert_same(celery: dict[str, EmbedResult], local: dict[str, EmbedResult], atol: float = 0.0) -> None:
    assert celery.keys() == local.keys()
    for batch_id, expected in local.items():
        got = celery[batch_id]
        assert got.ok, got.error
        assert got.keys == expected.keys
        assert got.vectors is not None and expected.vectors is not None
        assert got.vectors.dtype == np.float32
        np.testing.assert_allclose(got.vectors, expected.vectors, rtol=0, atol=atol)


class Background:
    """Runs `executor.map` in a thread so the test can inject a fault meanwhile."""

    def __init__(self, executor: Executor, model: str, batches: list[EmbedBatch]) -> None:
        self.results: list[EmbedResult] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(executor, model, batches), daemon=True)
        self.thread.start()

    def _run(self, executor: Executor, model: str, batches: list[EmbedBatch]) -> None:
        try:
            self.results.extend(executor.map(model, batches))
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float = 150) -> dict[str, EmbedResult]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the executor did not finish"
        if self.error is not None:
            raise self.error
        return by_batch(self.results)


def wait_for_slow_batch(shard_dir: Path, batch_id: str, timeout: float = 60) -> int:
    """Process id of the worker process now sleeping in `batch_id` (written by the test hook)."""
    flag = shard_paths(shard_dir, batch_id)[0].with_suffix(".slow")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flag.exists() and flag.read_text().strip():
            return int(flag.read_text())
        time.sleep(0.05)
    pytest.fail(f"batch {batch_id} never started")


def slow_env(seconds: float) -> dict[str, str]:
    return {SLOW_MARKER_ENV: SLOW, SLOW_SECONDS_ENV: str(seconds)}


@pytest.fixture
def settings(celery_settings, redis_url):  # type: ignore[no-untyped-def]
    return celery_settings(redis_url)


def test_results_equal_local_executor(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    celery_worker(settings, concurrency=2)
    batches = make_batches(24)
    batches.append(EmbedBatch("empty", (), ()))
    batches.append(EmbedBatch("odd/id with spaces", ("x1", "x2"), ("led bulb", "drill")))
    executor = CeleryExecutor(settings, tmp_path / "shards", max_in_flight=7)

    got = by_batch(executor.map(MODEL, iter_once(batches)))
    executor.close()

    assert_same(got, by_batch(LocalExecutor().map(MODEL, batches)))
    assert got["empty"].vectors is not None and got["empty"].vectors.shape == (0, 32)
    assert list((tmp_path / "shards").glob("*.npy")) == []  # shards are removed once read


def test_run_worker_serves_the_executor(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    celery_worker(settings, concurrency=1, pool="solo", via="run_worker")
    batches = make_batches(3)

    got = by_batch(CeleryExecutor(settings, tmp_path / "shards").map(MODEL, batches))

    assert_same(got, by_batch(LocalExecutor().map(MODEL, batches)))


def test_default_model_matches_local(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    celery_worker(settings, concurrency=1)
    batches = make_batches(3, size=8)
    executor = CeleryExecutor(settings, tmp_path / "shards", device="cpu", keep_shards=True)

    got = by_batch(executor.map("default", batches))

    assert_same(got, by_batch(LocalExecutor(device="cpu").map("default", batches)), atol=1e-5)
    assert len(list((tmp_path / "shards").glob("*.npy"))) == 3


def test_poison_batch_is_retried_then_reported_with_its_ids(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = celery_worker(settings, concurrency=2)
    batches = make_batches(6)
    poison = EmbedBatch("poison", ("bad-1", "bad-2"), ("a fine title", None))  # type: ignore[arg-type]
    batches.insert(3, poison)

    got = by_batch(CeleryExecutor(settings, tmp_path / "shards").map(MODEL, batches))

    failed = got.pop("poison")
    assert not failed.ok and failed.vectors is None
    assert failed.keys == ("bad-1", "bad-2")
    assert "AttributeError" in (failed.error or "")
    assert_same(got, by_batch(LocalExecutor().map(MODEL, [b for b in batches if b is not poison])))
    retries = worker.output().count("retry: Retry in")
    assert retries == settings.max_retries, worker.output()[-3000:]


def test_sigkilled_pool_process_has_its_batch_redelivered(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = celery_worker(settings, concurrency=1, env=slow_env(60))
    shard_dir = tmp_path / "shards"
    batches = make_batches(6, slow={2})
    run = Background(CeleryExecutor(settings, shard_dir), MODEL, batches)

    busy = wait_for_slow_batch(shard_dir, "b002")
    assert busy in worker.pool_pids()
    os.kill(busy, signal.SIGKILL)
    got = run.join()

    assert_same(got, by_batch(LocalExecutor().map(MODEL, batches)))
    log = worker.output()
    assert "signal 9 (SIGKILL)" in log, log[-3000:]
    assert busy not in worker.pool_pids()


def test_sigkilled_worker_has_its_started_batch_sent_again(  # type: ignore[no-untyped-def]
    settings, celery_worker, tmp_path: Path, caplog
) -> None:
    workers = [celery_worker(settings, concurrency=1, env=slow_env(60)) for _ in range(2)]
    shard_dir = tmp_path / "shards"
    batches = make_batches(6, slow={2})
    run = Background(CeleryExecutor(settings, shard_dir, lost_after=1.0), MODEL, batches)

    busy = wait_for_slow_batch(shard_dir, "b002")
    [victim] = [worker for worker in workers if busy in worker.pool_pids()]
    with caplog.at_level(logging.WARNING, logger="workers.celery_executor"):
        os.killpg(victim.pid, signal.SIGKILL)  # the main process and its pool: the whole worker
        got = run.join()

    assert_same(got, by_batch(LocalExecutor().map(MODEL, batches)))
    assert f"batch b002: its worker {victim.hostname.split('@')[0]}" in caplog.text, caplog.text


@pytest.mark.parametrize("lose_data", [False, True], ids=["persistent", "data-lost"])
def test_broker_restart_loses_no_batch(  # type: ignore[no-untyped-def]
    lose_data: bool, private_redis, celery_settings, celery_worker, tmp_path: Path, caplog
) -> None:
    settings = celery_settings(private_redis.url)
    celery_worker(settings, concurrency=1, env=slow_env(3))
    shard_dir = tmp_path / "shards"
    batches = make_batches(8, slow={1})
    run = Background(CeleryExecutor(settings, shard_dir, lost_after=1.0), MODEL, batches)

    wait_for_slow_batch(shard_dir, "b001")
    with caplog.at_level(logging.WARNING, logger="workers.celery_executor"):
        private_redis.restart(lose_data=lose_data)
        got = run.join()

    assert_same(got, by_batch(LocalExecutor().map(MODEL, batches)))
    resent = "sending it again" in caplog.text
    assert resent == lose_data, caplog.text


def test_unreachable_broker_raises_backend_error_with_the_fix(celery_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = celery_settings("redis://127.0.0.1:1")
    executor = CeleryExecutor(settings, tmp_path / "shards", connect_retries=1)

    with pytest.raises(BackendError) as caught:
        list(executor.map(MODEL, make_batches(1)))

    message = str(caught.value)
    assert "scripts/redis.sh start" in message and "SHOPFUSION_CELERY_BROKER_URL" in message


def iter_once(batches: list[EmbedBatch]) -> Iterator[EmbedBatch]:
    yield from batches


def test_workers_encode_with_the_backend_the_index_asks_for(settings, celery_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    cache = tmp_path / "onnx-cache"
    os.environ["SHOPFUSION_ONNX_CACHE"] = str(cache)  # this process and the worker share one export
    try:
        celery_worker(settings, concurrency=1, env={"SHOPFUSION_ONNX_CACHE": str(cache)})
        batches = make_batches(2, size=6)
        executor = CeleryExecutor(settings, tmp_path / "shards", device="cpu")
        got = by_batch(executor.map("default", batches, backend="onnx-int8"))
        local = by_batch(LocalExecutor(device="cpu").map("default", batches, backend="onnx-int8"))
        assert_same(got, local, atol=1e-5)
        torch = by_batch(LocalExecutor(device="cpu").map("default", batches))
        for batch_id, result in got.items():
            assert result.vectors is not None and torch[batch_id].vectors is not None
            cosine = np.sum(result.vectors * torch[batch_id].vectors, axis=1)
            assert cosine.min() > 0.98 and cosine.max() < 0.99999  # int8 vectors, not torch ones
    finally:
        os.environ.pop("SHOPFUSION_ONNX_CACHE", None)
