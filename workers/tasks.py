"""Thin Celery tasks: one batch of texts in, one shard file of vectors out.

`embed_batch` is idempotent: its output is named by the batch (`{shard_dir}/{batch_id}.npy` plus
`{batch_id}.keys.json`), written to a temporary file and moved into place with `os.replace`, so a
redelivered or retried batch overwrites its shard instead of adding a second copy, and a reader never sees
half a file. Arguments and the return value are plain JSON. The model is loaded once per worker process
(`load_encoder` caches it), on the first batch that process receives.

Retries, backoff, acknowledgement and time limits are declared where the task is registered
(`register_tasks`, called by `workers.celery_app.create_app`), from `CelerySettings`: every exception but a
configuration error is retried up to `max_retries` times with capped exponential backoff, after which the
task fails and the executor reports the batch, with its keys, as failed.

Test hook (inert unless its environment variable is set in the worker's environment): a batch holding a
text that contains `$SHOPFUSION_WORKER_TEST_SLOW_MARKER` sleeps `$SHOPFUSION_WORKER_TEST_SLOW_SECONDS`
(default 30) before encoding, the first time any worker runs it; it first writes its process id to
`{shard_dir}/{batch_id}.slow`, which is how the fault-injection tests know which process to kill mid-batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from shopfusion.config import CelerySettings
from shopfusion.encoders import load_encoder
from shopfusion.errors import ConfigError, MissingDependencyError
from workers.celery_app import EMBED_TASK, RETRY_BACKOFF_MAX, soft_time_limit_for

NOT_RETRIED = (ConfigError, MissingDependencyError)
"""Failures a retry cannot fix: a bad model spec or a missing package on the worker."""

SLOW_MARKER_ENV = "SHOPFUSION_WORKER_TEST_SLOW_MARKER"
SLOW_SECONDS_ENV = "SHOPFUSION_WORKER_TEST_SLOW_SECONDS"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def shard_stem(batch_id: str) -> str:
    """File name stem of a batch's shard: the batch id itself when it is a safe file name, else its hash."""
    if _SAFE_NAME.match(batch_id):
        return batch_id
    return "batch-" + hashlib.sha256(batch_id.encode("utf-8")).hexdigest()[:32]


def shard_paths(shard_dir: str | os.PathLike[str], batch_id: str) -> tuple[Path, Path]:
    """(vectors `.npy`, keys `.keys.json`) of a batch's shard."""
    stem = shard_stem(batch_id)
    root = Path(shard_dir)
    return root / f"{stem}.npy", root / f"{stem}.keys.json"


def write_shard(
    shard_dir: str | os.PathLike[str], batch_id: str, keys: Sequence[str], vectors: np.ndarray,
    model_id: str | None = None, backend_id: str = "torch",
) -> Path:
    """Write a batch's vectors and keys atomically (temp file + `os.replace`); returns the vectors path.
    The keys file names the model and encoder backend too, so a shard can be trusted even when its task's
    result was lost."""
    vectors_path, keys_path = shard_paths(shard_dir, batch_id)
    vectors_path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"batch_id": batch_id, "keys": list(keys), "model_id": model_id,
                          "backend_id": backend_id}).encode("utf-8")
    _atomic_write(keys_path, lambda handle: handle.write(payload))
    _atomic_write(
        vectors_path, lambda handle: np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))
    )
    return vectors_path


def read_shard(shard_dir: str | os.PathLike[str], batch_id: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The (keys, vectors) a task wrote for `batch_id`; raises OSError or ValueError when absent or torn."""
    vectors_path, keys_path = shard_paths(shard_dir, batch_id)
    meta = json.loads(keys_path.read_text(encoding="utf-8"))
    vectors = np.load(vectors_path, allow_pickle=False)
    keys = tuple(meta["keys"])
    if meta.get("batch_id") != batch_id or vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise ValueError(f"shard {vectors_path} does not match batch {batch_id!r} ({len(keys)} keys)")
    return keys, vectors


def shard_model(shard_dir: str | os.PathLike[str], batch_id: str) -> tuple[str, str] | None:
    """The (model id, backend id) a shard was written with (None when unknown or unreadable)."""
    try:
        meta = json.loads(shard_paths(shard_dir, batch_id)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = meta.get("model_id") if isinstance(meta, dict) else None
    backend = meta.get("backend_id", "torch") if isinstance(meta, dict) else None
    return (model, backend) if isinstance(model, str) and isinstance(backend, str) else None


def remove_shard(shard_dir: str | os.PathLike[str], batch_id: str) -> None:
    for path in shard_paths(shard_dir, batch_id):
        path.unlink(missing_ok=True)


def embed_batch(
    task: Any,
    model: str,
    batch_id: str,
    shard_dir: str,
    keys: list[str],
    texts: list[str],
    device: str = "auto",
    encode_batch_size: int = 64,
    backend: str = "torch",
) -> dict[str, Any]:
    """Encode `texts` with `model` run by `backend` (the one the index asks for) and write the shard of
    `batch_id`; returns a small JSON summary naming the model and backend that encoded it.

    Registered as a bound task by `register_tasks`; call it through the app::

        app.send_task(EMBED_TASK, kwargs={"model": "hash:32", "batch_id": "b0", "shard_dir": "/shared/shards",
                                          "keys": ["k1"], "texts": ["cordless drill"]})
    """
    if len(keys) != len(texts):
        raise ConfigError(f"batch {batch_id!r} has {len(keys)} keys but {len(texts)} texts")
    _maybe_slow_down(shard_dir, batch_id, texts)
    encoder = load_encoder(model, device, backend)
    vectors = encoder.encode(list(texts), batch_size=encode_batch_size)
    if vectors.shape[0] != len(keys):
        raise RuntimeError(f"encoder returned {vectors.shape[0]} vectors for {len(keys)} texts")
    path = write_shard(shard_dir, batch_id, keys, vectors, model_id=encoder.model_id,
                       backend_id=encoder.backend_id)
    return {
        "batch_id": batch_id,
        "count": len(keys),
        "dim": int(vectors.shape[1]),
        "shard": str(path),
        "model_id": encoder.model_id,
        "backend_id": encoder.backend_id,
    }


def register_tasks(app: Any, settings: CelerySettings) -> Any:
    """Register `embed_batch` on `app` with its delivery, retry and time-limit options; returns the task."""
    return app.task(
        name=EMBED_TASK,
        bind=True,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(Exception,),
        dont_autoretry_for=NOT_RETRIED,
        retry_backoff=True,
        retry_backoff_max=RETRY_BACKOFF_MAX,
        retry_jitter=True,
        max_retries=settings.max_retries,
        time_limit=settings.task_time_limit,
        soft_time_limit=soft_time_limit_for(settings),
    )(embed_batch)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _maybe_slow_down(shard_dir: str, batch_id: str, texts: Sequence[str]) -> None:
    """Test hook, see the module docstring; does nothing unless SHOPFUSION_WORKER_TEST_SLOW_MARKER is set."""
    marker = os.environ.get(SLOW_MARKER_ENV)
    if not marker or not any(isinstance(text, str) and marker in text for text in texts):
        return
    flag = Path(shard_dir) / f"{shard_stem(batch_id)}.slow"
    if flag.exists():
        return
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(float(os.environ.get(SLOW_SECONDS_ENV, "30")))
