"""The request thread pool: the thread that went idle last takes the next request.

`concurrent.futures.ThreadPoolExecutor` hands work to its idle threads in turn (they all wait on one
FIFO queue), so consecutive requests of a quiet service run on a different thread each time, with cold
caches and another malloc arena; measured on loopback it cost about 0.3 ms per `/search` (README, "HTTP
service"). This pool keeps a stack of idle threads: a lone client is always served by the same, warm
thread, the others sleep, and a burst still spreads over up to `max_workers` threads.

>>> pool = LifoThreadPool(2)
>>> pool.submit(sum, [1, 2]).result()
3
>>> pool.shutdown()
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    __slots__ = ("item", "wake")

    def __init__(self) -> None:
        self.item: _Item | None = None
        self.wake = threading.Event()


class LifoThreadPool(Executor):
    """An `Executor` (usable with `loop.run_in_executor`) whose most recently idle thread runs next."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "shopfusion-pool") -> None:
        self.max_workers = max(1, max_workers)
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last one to go idle is woken first
        self._pending: deque[_Item] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        item: _Item = (future, fn, args, kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.item = item
                worker.wake.set()
                return future
            self._pending.append(item)
            if len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._work, args=(_Worker(),), daemon=True,
                                          name=f"{self._prefix}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self, worker: _Worker) -> None:
        while True:
            with self._lock:
                item = self._pending.popleft() if self._pending else None
                if item is None:
                    if self._closed:
                        return
                    worker.wake.clear()
                    self._idle.append(worker)
            if item is None:
                worker.wake.wait()
                item, worker.item = worker.item, None
                if item is None:  # woken by shutdown
                    continue
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the caller gets it from the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft()[0].cancel()
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for worker in idle:
            worker.wake.set()
        if wait:
            for thread in threads:
                thread.join()
