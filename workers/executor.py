"""The embedding executor Protocol and its in-process implementation.

The ingest pipeline hands an executor batches of texts keyed by their text hash and gets vectors back,
batch by batch, in any order. The pipeline journals each result, so a killed run resumes from the batches
already done; executors never write the index themselves.

>>> from shopfusion.encoders import HashingEncoder
>>> ex = LocalExecutor()
>>> [r.vectors.shape for r in ex.map("hash:8", [EmbedBatch("b0", ("k1",), ("a drill",))])]
[(1, 8)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from shopfusion.encoders import load_encoder


@dataclass(frozen=True)
class EmbedBatch:
    batch_id: str
    keys: tuple[str, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors for one batch, row i for keys[i]; or `error` (with `vectors` None) when it failed for good."""

    batch_id: str
    keys: tuple[str, ...]
    vectors: np.ndarray | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Executor(Protocol):
    name: str

    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        """Embed every batch with `model` (a model spec, see `load_encoder`) run by `backend` (`torch`,
        `onnx`, `onnx-int8`: the concrete backend the index asks for); yield results as they finish."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Encodes in this process, one batch at a time, with the model loaded once."""

    name = "local"

    def __init__(self, device: str = "auto", encode_batch_size: int = 64) -> None:
        self.device = device
        self.encode_batch_size = encode_batch_size

    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        encoder = load_encoder(model, self.device, backend)
        for batch in batches:
            try:
                vectors = encoder.encode(list(batch.texts), batch_size=self.encode_batch_size)
            except Exception as exc:  # one bad batch is reported, the run goes on
                yield EmbedResult(batch.batch_id, batch.keys, None, error=f"{type(exc).__name__}: {exc}")
                continue
            yield EmbedResult(batch.batch_id, batch.keys, vectors)

    def close(self) -> None:
        pass
