"""Micro-batching of query encodes: requests that arrive together share one forward pass.

One thread per encoder owns the model. It takes the first waiting query, then everything else already
queued (up to `max_batch`), and encodes them in one call; it never waits for more to arrive, so a lone
request pays only a thread hand-off (tens of microseconds) and a burst pays one batched pass instead of
N passes competing for the same cores. A single query uses the encoder's own one-query path
(`encode_query`), so an idle service answers exactly as the in-process client does; a batch goes through
`encode` (same model, padded batch: equal to within float rounding).

>>> from shopfusion.encoders import HashingEncoder
>>> batcher = QueryBatcher(HashingEncoder(8))
>>> batcher.encode_query("drill").shape
(8,)
>>> batcher.close()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from shopfusion.encoders import Encoder

_STOP = object()


class QueryBatcher:
    """An `Encoder` whose `encode_query` is batched across threads; everything else is delegated."""

    def __init__(self, encoder: Encoder, *, max_batch: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.inner = encoder
        self.max_batch = max(1, max_batch)
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="shopfusion-query-batcher", daemon=True)
        self._thread.start()

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

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.inner.encode(texts, batch_size)

    def encode_query(self, text: str) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        self._queue.put((text, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _run(self, batch: list[tuple[str, Future[np.ndarray]]]) -> None:
        texts = [text for text, _ in batch]
        try:
            if len(texts) == 1:
                vectors = [self.inner.encode_query(texts[0])]
            else:
                vectors = list(self.inner.encode(texts, batch_size=len(texts)))
        except BaseException as exc:  # hand the error to every waiting request, keep serving
            for _, future in batch:
                future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(texts))
        for (_, future), vector in zip(batch, vectors, strict=True):
            future.set_result(vector)
