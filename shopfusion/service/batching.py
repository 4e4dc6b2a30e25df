"""Micro-batching of query encodes: requests that arrive together share one forward pass.

The batcher combines: a request thread that finds the model idle encodes its own query on its own
thread (no hand-off, so a lone request costs what the in-process client does); requests that arrive
while the model is busy queue, and when the pass ends one of them takes everything queued (up to
`max_batch`) and encodes it in one call for all of them. It never waits for more to arrive, so a burst
pays one batched pass instead of N passes competing for the same cores, and the model only ever runs
one pass at a time (no thread-count races between concurrent encodes). A single query uses the
encoder's one-query path (`encode_query`), so an idle service answers exactly as the in-process client
does; a batch goes through `encode` (same model, padded batch: equal to within float rounding).

(An earlier version had one thread own the model; each lone request then paid two thread wake-ups,
measurable on loopback: README, "HTTP service".)

>>> from shopfusion.encoders import HashingEncoder
>>> batcher = QueryBatcher(HashingEncoder(8))
>>> batcher.encode_query("drill").shape
(8,)
>>> batcher.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from shopfusion.encoders import Encoder


class QueryBatcher:
    """An `Encoder` whose `encode_query` is batched across threads; everything else is delegated."""

    def __init__(self, encoder: Encoder, *, max_batch: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.inner = encoder
        self.max_batch = max(1, max_batch)
        self._on_batch = on_batch
        self._turn = threading.Condition()  # guards `_waiting` and `_busy`
        self._waiting: list[tuple[str, Future[np.ndarray]]] = []
        self._busy = False

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def backend(self) -> str:
        return self.inner.backend

    @property
    def backend_id(self) -> str:
        return self.inner.backend_id

    @property
    def waiting(self) -> int:
        """Queries queued behind the pass that is running."""
        with self._turn:
            return len(self._waiting)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.inner.encode(texts, batch_size)

    def encode_query(self, text: str) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        with self._turn:
            self._waiting.append((text, future))
        while True:
            with self._turn:
                while self._busy and not future.done():
                    self._turn.wait()
                if future.done():  # encoded by another request's pass
                    return future.result()
                self._busy = True  # this thread runs the next pass: its own query and whatever queued
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            try:
                self._run(batch)
            finally:
                with self._turn:
                    self._busy = False
                    self._turn.notify_all()

    def close(self) -> None:
        """Nothing to stop (no thread of its own); kept so a served generation closes what it opened."""

    def _run(self, batch: list[tuple[str, Future[np.ndarray]]]) -> None:
        texts = [text for text, _ in batch]
        try:
            if len(texts) == 1:
                vectors = [self.inner.encode_query(texts[0])]
            else:
                vectors = list(self.inner.encode(texts, batch_size=len(texts)))
            if self._on_batch is not None:
                self._on_batch(len(texts))
        except BaseException as exc:  # hand the error to every request of the pass, keep serving
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            future.set_result(vector)
