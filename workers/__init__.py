"""Embedding executors: in-process by default (`LocalExecutor`), Celery workers to scale out.

`make_executor` picks one from settings (`index.executor`)."""

from __future__ import annotations

from pathlib import Path

from shopfusion.config import Settings
from workers.executor import EmbedBatch, EmbedResult, Executor, LocalExecutor


def make_executor(settings: Settings, index_dir: Path) -> Executor:
    if settings.index.executor == "celery":
        from shopfusion.errors import require

        require("celery", "celery")
        from workers.celery_executor import CeleryExecutor

        shard_dir = Path(settings.celery.shard_dir) if settings.celery.shard_dir else index_dir / "shards"
        return CeleryExecutor(settings.celery, shard_dir, device=settings.index.device,
                              encode_batch_size=settings.index.batch_size,
                              outage_timeout=settings.celery.outage_timeout)
    return LocalExecutor(device=settings.index.device, encode_batch_size=settings.index.batch_size)


__all__ = ["EmbedBatch", "EmbedResult", "Executor", "LocalExecutor", "make_executor"]
