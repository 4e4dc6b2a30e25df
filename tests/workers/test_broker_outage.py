"""Issue 14, broker outages, end to end (`run_index` with `index.executor = "celery"`), against a real Redis
server that the test stops (or freezes with SIGSTOP) and starts again, and real worker processes.

- a transient loss mid-run is waited for: no valid product becomes a reject or an embedding failure, and
  the index equals the one the in-process executor builds;
- an outage longer than `celery.outage_timeout` fails the run with a `BackendError` that names the
  setting (the index unchanged), also when Redis hangs instead of refusing connections; running again
  once Redis is back resumes from the journal.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.pipeline import IndexSummary, run_index
from shopfusion.config import Settings
from shopfusion.errors import BackendError
from tests.plugins.catalogs import TINY, write_jsonl
from tests.workers.test_celery_index import assert_same_hits
from workers.tasks import SLOW_MARKER_ENV, SLOW_SECONDS_ENV

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

LOCAL = Settings().replace("index", model="hash:32")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 products (three executor batches of 512); the middle batch carries the slow marker."""
    records = []
    for n in range(100):
        for product in TINY:
            record = product.to_dict()
            record["id"] = f"{product.id}-{n:03d}"
            record["title"] = f"{product.title} variant {n}"
            records.append(record)
    records[700]["title"] += " slowpokemarker"
    return write_jsonl(tmp_path_factory.mktemp("outage") / "catalog.jsonl", records)


@pytest.fixture(scope="module")
def local_index(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outage-local") / "idx"
    run_index(catalog, path, settings=LOCAL)
    return path


class Run:
    """`run_index` in a thread, so the test can break Redis meanwhile."""

    def __init__(self, catalog: Path, index_dir: Path, settings: Settings) -> None:
        self.summary: IndexSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(catalog, index_dir, settings), daemon=True)
        self.thread.start()

    def _run(self, catalog: Path, index_dir: Path, settings: Settings) -> None:
        try:
            self.summary = run_index(catalog, index_dir, settings=settings)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 200) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the index run hangs"


def _settings(celery_settings, url: str, shard_dir: Path, **overrides: object) -> Settings:  # type: ignore[no-untyped-def]
    celery = celery_settings(url, shard_dir=str(shard_dir), **overrides)
    return dataclasses.replace(LOCAL, celery=celery).replace("index", executor="celery")


def _wait_for(condition: Callable[[], bool], failure: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(failure)


def _journaled(index_dir: Path) -> int:
    """Rows in the run's embedding journal (`indexer.vectorfile`: keys.bin holds 32 bytes a row)."""
    from indexer.vectorfile import KEY_BYTES, KEYS_FILE

    keys = index_dir / "staging" / "journal" / KEYS_FILE
    return keys.stat().st_size // KEY_BYTES if keys.is_file() else 0


def _wait_for_slow_batch(shard_dir: Path) -> None:
    _wait_for(lambda: any(flag.read_text().strip() for flag in shard_dir.glob("*.slow")),
              "the slow batch never started")


def test_a_transient_redis_loss_turns_no_product_into_a_failure(  # type: ignore[no-untyped-def]
    catalog: Path, local_index: Path, private_redis, celery_settings, celery_worker, tmp_path: Path
) -> None:
    shard_dir = tmp_path / "shards"
    settings = _settings(celery_settings, private_redis.url, shard_dir)
    celery_worker(settings.celery, concurrency=1, env={SLOW_MARKER_ENV: "slowpokemarker", SLOW_SECONDS_ENV: "3"})
    run = Run(catalog, tmp_path / "idx", settings)
    _wait_for_slow_batch(shard_dir)
    private_redis.stop()  # the worker finishes its batch while Redis is away
    time.sleep(8)
    private_redis.start()
    run.join()

    assert run.error is None, run.error
    summary = run.summary
    assert summary is not None and summary.balanced
    assert (summary.added, summary.rejected, summary.embedding_failed, summary.total) == (1200, 0, 0, 1200)
    assert summary.failures == {}
    assert_same_hits(local_index, LOCAL, tmp_path / "idx", settings)


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_an_outage_past_the_timeout_fails_and_the_next_run_resumes(  # type: ignore[no-untyped-def]
    how: str, catalog: Path, local_index: Path, private_redis, celery_settings, celery_worker, tmp_path: Path
) -> None:
    shard_dir = tmp_path / "shards"
    settings = _settings(celery_settings, private_redis.url, shard_dir, outage_timeout=5.0)
    celery_worker(settings.celery, concurrency=1, env={SLOW_MARKER_ENV: "slowpokemarker", SLOW_SECONDS_ENV: "3"})
    index_dir = tmp_path / "idx"
    run = Run(catalog, index_dir, settings)
    _wait_for_slow_batch(shard_dir)
    _wait_for(lambda: _journaled(index_dir) > 0, "no batch was journaled")
    pid = int((private_redis.run_dir / "redis" / "redis.pid").read_text())
    if how == "stopped":
        private_redis.stop()
    else:
        os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        run.join()
    finally:
        if how == "stopped":
            private_redis.start()
        else:
            os.kill(pid, signal.SIGCONT)

    assert isinstance(run.error, BackendError), run.error
    assert "celery.outage_timeout = 5" in str(run.error) and "resumes" in str(run.error)
    assert not (index_dir / "manifest.json").exists()

    summary = run_index(catalog, index_dir, settings=settings)
    assert (summary.added, summary.embedding_failed, summary.total) == (1200, 0, 1200)
    assert summary.resumed_vectors > 0  # the batches finished before the outage were journaled
    assert_same_hits(local_index, LOCAL, index_dir, settings)
