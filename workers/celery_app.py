"""The Celery app factory: one configured `Celery` per call, built from shopfusion's settings.

The library owns no global app (STYLE 10). The CLI's `shopfusion worker`, `workers.worker_main` (the `-A`
target of a plain `celery worker` command) and `CeleryExecutor` each build their own app from the same
`CelerySettings`, so the client and the workers agree on broker, queue, serializer and task options.

Delivery guarantees, and why each setting is there:

- JSON only (`task_serializer`, `result_serializer`, `accept_content`): a worker never unpickles what a
  broker hands it.
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its task returned,
  and a pool process killed mid-task (SIGKILL, OOM killer) has its message requeued at once. Tasks are
  idempotent (one shard file per batch, replaced atomically), so a redelivered batch overwrites its shard.
- `worker_prefetch_multiplier = 1`: a worker holds no more messages than it has pool processes, so batches
  spread over workers and a dead worker strands as few messages as possible.
- `visibility_timeout`: with Redis, a message taken by a worker whose whole node vanished (machine lost,
  main process SIGKILLed) is handed out again after this many seconds. It must exceed the longest time a
  message may legitimately stay unacknowledged (a task's hard time limit plus a retry's backoff delay),
  or long tasks would run twice; it is derived from `task_time_limit` (`visibility_timeout_for`).
- Broker connection retries at startup and on publish: workers may start before Redis, and a short broker
  restart does not fail a dispatch.
- `worker_cancel_long_running_tasks_on_connection_loss = False` (Celery 6 will flip the default): a batch
  running when the broker connection drops finishes and stores its result, instead of being cancelled
  and left unacknowledged until the visibility timeout. Its message may run once more later; harmless.

>>> from shopfusion.config import CelerySettings
>>> app = create_app(CelerySettings(broker_url="redis://127.0.0.1:6379/0"))
>>> app.conf.task_serializer, app.conf.worker_prefetch_multiplier
('json', 1)
>>> EMBED_TASK in app.tasks
True
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shopfusion.config import CelerySettings
from shopfusion.errors import require

EMBED_TASK = "shopfusion.embed_batch"
"""Registered name of the embedding task (see `workers.tasks.embed_batch`)."""

RETRY_BACKOFF_MAX = 120
"""Cap, in seconds, of the exponential delay between a task's retries."""

RESULT_EXPIRES = 24 * 3600
"""Seconds a task's result stays in the result backend; the executor reads it long before that."""


def visibility_timeout_for(settings: CelerySettings) -> int:
    """Seconds before Redis hands an unacknowledged message to another worker.

    Longer than a task may run (hard time limit) plus a retry's backoff delay, with margin; at least an hour,
    Celery's own default."""
    return max(3600, 2 * settings.task_time_limit + RETRY_BACKOFF_MAX + 60)


def soft_time_limit_for(settings: CelerySettings) -> int:
    """The soft limit raises inside the task (then retried) shortly before the hard limit kills the process."""
    return max(1, settings.task_time_limit - max(1, min(30, settings.task_time_limit // 10)))


def create_app(settings: CelerySettings, *, main: str = "shopfusion") -> Any:
    """A Celery app configured from `settings`, with the embedding task registered.

    Cheap: nothing connects until a task is sent or a worker starts. Returns a `celery.Celery`.
    """
    celery = require("celery", "celery")
    app = celery.Celery(main, broker=settings.broker_url, backend=settings.result_backend)
    visibility = visibility_timeout_for(settings)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_track_started=True,
        task_default_queue=settings.queue,
        task_routes={EMBED_TASK: {"queue": settings.queue}},
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=soft_time_limit_for(settings),
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 5,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        result_expires=RESULT_EXPIRES,
        result_backend_transport_options={"retry_policy": {"timeout": 30.0}},
        redis_retry_on_timeout=True,
        redis_socket_connect_timeout=5,
        redis_backend_health_check_interval=10,
        worker_prefetch_multiplier=1,
        worker_concurrency=max(1, settings.concurrency),
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5.0,
        broker_transport_options={
            "visibility_timeout": visibility,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
    )
    from workers.tasks import register_tasks

    register_tasks(app, settings)
    require("celery.signals", "celery").worker_init.connect(
        _on_worker_init, weak=False, dispatch_uid="shopfusion.worker_init"
    )
    return app


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int):
        limit_threads_per_process(concurrency)


def redis_url_with_db(url: str, db: int) -> str:
    """`redis://host:port` with its database number replaced by `db` (helper for tests and scripts)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redacted(url: str) -> str:
    """A broker URL safe to show in messages: every secret masked (see `shopfusion.config.redact_url`)."""
    from shopfusion.config import redact_url

    return redact_url(url)


def limit_threads_per_process(concurrency: int) -> None:
    """Share the machine's cores between `concurrency` pool processes (torch reads OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, concurrency)))
