"""Encoding on CUDA gives the CPU's vectors: the worker task and the in-process executor.

Runs only where torch sees a GPU; skipped elsewhere (no GPU is normally available in this project's CI).
FAISS on GPU is the vector store's concern and is tested with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfusion.encoders import load_encoder, resolve_device
from workers.executor import EmbedBatch, LocalExecutor
from workers.tasks import embed_batch, read_shard

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())"),
]

TITLES = [
    "cordless drill 20v max lithium ion",
    "behr premium plus interior paint, eggshell white, 1 gal",
    "led a19 light bulb 60 watt equivalent daylight (4-pack)",
    "50 ft. x 5/8 in. heavy duty garden hose",
    "",
    "toilet flapper",
]
ATOL = 2e-3
"""GPU kernels (TF32, other reduction orders) move unit vectors by a few 1e-4 at most."""


def test_auto_device_picks_cuda() -> None:
    assert resolve_device("auto") == "cuda"


def test_encoder_on_cuda_equals_cpu() -> None:
    on_gpu = load_encoder("default", "cuda").encode(TITLES)
    on_cpu = load_encoder("default", "cpu").encode(TITLES)

    assert on_gpu.dtype == np.float32 and on_gpu.shape == on_cpu.shape
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=1e-4)


def test_worker_task_on_cuda_writes_cpu_equal_shard(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(len(TITLES))]
    summary = embed_batch(None, "default", "b0", str(tmp_path), keys, list(TITLES), device="cuda")

    stored_keys, vectors = read_shard(tmp_path, "b0")
    assert summary["count"] == len(TITLES) and stored_keys == tuple(keys)
    np.testing.assert_allclose(vectors, load_encoder("default", "cpu").encode(TITLES), rtol=0, atol=ATOL)


def test_local_executor_auto_device_equals_cpu() -> None:
    batch = EmbedBatch("b0", tuple(f"k{i}" for i in range(len(TITLES))), tuple(TITLES))
    [auto] = LocalExecutor(device="auto").map("default", [batch])
    [cpu] = LocalExecutor(device="cpu").map("default", [batch])

    assert auto.vectors is not None and cpu.vectors is not None
    np.testing.assert_allclose(auto.vectors, cpu.vectors, rtol=0, atol=ATOL)
