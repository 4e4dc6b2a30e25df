"""The request pool: the last idle thread runs next, bursts spread over threads, shutdown is clean."""

from __future__ import annotations

import threading

import pytest

from shopfusion.errors import ConfigError
from shopfusion.service.app import request_threads
from shopfusion.service.pool import LifoThreadPool


def test_a_lone_client_is_served_by_the_same_thread() -> None:
    pool = LifoThreadPool(4)
    try:
        names = {pool.submit(lambda: threading.current_thread().name).result() for _ in range(20)}
    finally:
        pool.shutdown()
    assert len(names) == 1


def test_a_burst_runs_on_several_threads_up_to_the_limit() -> None:
    pool = LifoThreadPool(3)
    barrier = threading.Barrier(3, timeout=10)
    running = threading.Lock()
    seen: set[str] = set()

    def task() -> None:
        barrier.wait()  # only passes when three tasks run at the same time
        with running:
            seen.add(threading.current_thread().name)

    try:
        for future in [pool.submit(task) for _ in range(9)]:
            future.result(timeout=10)
    finally:
        pool.shutdown()
    assert len(seen) == 3


def test_errors_reach_the_caller_and_the_pool_keeps_serving() -> None:
    pool = LifoThreadPool(2)
    try:
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result()
        assert pool.submit(lambda: 2 + 2).result() == 4
    finally:
        pool.shutdown()


def test_shutdown_finishes_queued_work_and_refuses_new() -> None:
    pool = LifoThreadPool(1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = pool.submit(lambda: "ran")
    gate.set()
    pool.shutdown(wait=True)
    assert first.result() is True and queued.result() == "ran"
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_shutdown_can_cancel_queued_work() -> None:
    pool = LifoThreadPool(1)
    gate = threading.Event()
    started = threading.Event()
    running = pool.submit(lambda: started.set() or gate.wait(10))
    assert started.wait(10)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(timeout=10) is True  # work already running finishes
    assert queued.cancelled()


def test_request_threads_auto_follows_the_cores_and_the_lexical_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    assert request_threads(0, "tantivy") == (3, "auto: one per CPU core (3), the work is CPU-bound")
    assert request_threads(0, "elasticsearch")[0] == 12  # requests wait on the network
    assert request_threads(6, "tantivy") == (6, "service.threads")  # a setting given is applied
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0}, raising=False)
    assert request_threads(0, "tantivy")[0] == 2
    with pytest.raises(ConfigError, match="0 for one per CPU core"):
        request_threads(-1, "tantivy")
