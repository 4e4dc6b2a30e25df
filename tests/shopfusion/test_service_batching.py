"""Micro-batched query encodes: concurrent queries share a pass and get the vectors they would alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shopfusion.encoders import HashingEncoder
from shopfusion.service.batching import QueryBatcher


class GatedEncoder(HashingEncoder):
    """The hashing encoder, whose first pass waits for a gate: the queries sent meanwhile must queue."""

    def __init__(self) -> None:
        super().__init__(16)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def encode_query(self, text: str) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(1)
        return super().encode_query(text)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.batches.append(len(texts))
        return super().encode(texts, batch_size)


def test_waiting_queries_form_one_batch_with_the_same_vectors() -> None:
    encoder = GatedEncoder()
    sizes: list[int] = []
    batcher = QueryBatcher(encoder, max_batch=32, on_batch=sizes.append)
    texts = [f"cordless drill {i}" for i in range(9)]
    try:
        with ThreadPoolExecutor(max_workers=9) as pool:
            first = pool.submit(batcher.encode_query, texts[0])
            assert encoder.entered.wait(10)
            rest = [pool.submit(batcher.encode_query, t) for t in texts[1:]]
            while batcher.waiting < 8:  # all eight queued behind the gated first pass
                threading.Event().wait(0.01)
            encoder.gate.set()
            vectors = [first.result(), *(f.result() for f in rest)]
    finally:
        batcher.close()
    assert sizes == [1, 8] and encoder.batches[-1] == 8  # one lone pass, then one pass for the eight
    reference = HashingEncoder(16)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, reference.encode_query(text))


def test_errors_reach_every_waiting_caller_and_the_batcher_survives() -> None:
    class Broken(HashingEncoder):
        def encode_query(self, text: str) -> np.ndarray:
            if text == "boom":
                raise ValueError("model failed")
            return super().encode_query(text)

    batcher = QueryBatcher(Broken(8))
    try:
        with pytest.raises(ValueError, match="model failed"):
            batcher.encode_query("boom")
        assert batcher.encode_query("drill").shape == (8,)
    finally:
        batcher.close()


@pytest.mark.slow
def test_minilm_batched_vectors_equal_single_ones(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = ["cordless drill", "white kitchen faucet with sprayer", "2x4 lumber"]
    batched = minilm.encode(texts, batch_size=len(texts))
    for text, vector in zip(texts, batched, strict=True):
        np.testing.assert_allclose(vector, minilm.encode_query(text), atol=1e-5)


def test_a_lone_query_is_encoded_on_the_callers_thread() -> None:
    class Recording(HashingEncoder):
        thread: threading.Thread | None = None

        def encode_query(self, text: str) -> np.ndarray:
            self.thread = threading.current_thread()
            return super().encode_query(text)

    encoder = Recording(8)
    batcher = QueryBatcher(encoder)
    batcher.encode_query("drill")
    assert encoder.thread is threading.current_thread()  # no hand-off to another thread
    batcher.close()


def test_many_concurrent_queries_get_their_own_vectors_and_one_pass_runs_at_a_time() -> None:
    class Counting(HashingEncoder):
        def __init__(self) -> None:
            super().__init__(16)
            self.running = 0
            self.most = 0
            self.lock = threading.Lock()

        def _enter(self) -> None:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            threading.Event().wait(0.001)
            with self.lock:
                self.running -= 1

        def encode_query(self, text: str) -> np.ndarray:
            self._enter()
            return super().encode_query(text)

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            self._enter()
            return super().encode(texts, batch_size)

    encoder = Counting()
    batcher = QueryBatcher(encoder, max_batch=4)
    texts = [f"query {i}" for i in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        vectors = list(pool.map(batcher.encode_query, texts))
    reference = HashingEncoder(16)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, reference.encode_query(text))
    assert encoder.most == 1 and batcher.waiting == 0
