"""Start a Celery worker in this process, configured from shopfusion's settings (`shopfusion worker`).

>>> from shopfusion.config import load_settings
>>> run_worker(load_settings().celery, concurrency=2)  # doctest: +SKIP

It consumes the settings' queue with a prefork pool (one model per pool process, the cores shared between
them) and blocks until the worker is stopped (SIGTERM or Ctrl-C: warm shutdown, running batches finish).
The equivalent shell command is `celery -A workers.worker_main worker --concurrency=N`.
"""

from __future__ import annotations

from typing import Literal

from shopfusion.config import CelerySettings
from shopfusion.errors import ConfigError
from workers.celery_app import create_app

Pool = Literal["prefork", "solo", "threads"]


def worker_argv(
    settings: CelerySettings,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    *,
    pool: Pool = "prefork",
    hostname: str | None = None,
) -> list[str]:
    """The `celery worker` arguments `run_worker` uses (also handy to start one as a subprocess)."""
    workers = settings.concurrency if concurrency is None else concurrency
    if workers < 1:
        raise ConfigError(f"worker concurrency must be at least 1, got {workers}")
    argv = [
        "worker",
        f"--concurrency={workers}",
        f"--loglevel={loglevel.upper()}",
        f"--pool={pool}",
        f"--queues={settings.queue}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def run_worker(
    settings: CelerySettings,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    *,
    pool: Pool = "prefork",
    hostname: str | None = None,
) -> None:
    """Run a worker for `settings.queue` until it is stopped.

    `concurrency` defaults to `settings.concurrency`; `hostname` (Celery's node name, `name@host`) defaults
    to Celery's `celery@<host>`: give each worker on one machine its own.
    """
    app = create_app(settings)
    app.worker_main(argv=worker_argv(settings, concurrency, loglevel, pool=pool, hostname=hostname))
