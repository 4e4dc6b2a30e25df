"""How the Celery executor rides out a broker outage (Redis stopped, restarted or hung).

- `Outage`: the clock of one run's outage. Every failing Redis call starts it (or keeps it running); a
  poll or a send that fails is retried with capped backoff until Redis has been away for
  `celery.outage_timeout` seconds, then the run fails with a `BackendError` naming that setting.
- `bound_client_calls`: every Redis call of the executor's own app gets a socket timeout and bounded
  reconnects, so a Redis that accepts connections but answers nothing (paused, a network partition)
  cannot block a call, and so the run, past the timeout.
- `transient`: a task that failed because Redis went away (a connection error) is not a failure of its
  products; the executor uses its shard or sends it again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shopfusion.errors import BackendError

logger = logging.getLogger("workers.celery_executor")

START_HINT = (
    "start Redis (`scripts/redis.sh start`, or `redis-server`) or point SHOPFUSION_CELERY_BROKER_URL "
    "(and SHOPFUSION_CELERY_RESULT_BACKEND; `[celery]` in shopfusion.toml) at a running one"
)

TRANSIENT_ERRORS = frozenset({"ConnectionError", "OperationalError", "TimeoutError", "ConnectionRefusedError",
                              "ConnectionResetError", "BrokenPipeError", "RecoverableConnectionError",
                              "ConnectionAbortedError", "BusyLoadingError", "ReadOnlyError"})
"""Exception type names (redis, kombu, builtins) of a batch that failed because Redis went away."""


class Outage:
    """Time since Redis last answered this run; past `timeout` the run fails with `BackendError` (the
    documented broker timeout), else the caller waits a little (capped backoff) and tries again."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.since: float | None = None
        self.warned = False
        self.delay = 0.2

    def ok(self) -> None:
        if self.warned and self.since is not None:
            logger.warning("Redis answers again after %.0f s", time.monotonic() - self.since)
        self.since = None
        self.warned = False
        self.delay = 0.2

    def noticed(self, started: float) -> None:
        """A side call (forget, ping, queue size) that began at `started` failed: the outage clock starts
        there, so the next failing poll or send is judged from then."""
        if self.since is None:
            self.since = started

    def failed(self, exc: BaseException, what: str, started: float) -> None:
        """Called after a Redis call that began at `started` failed."""
        now = time.monotonic()
        if self.since is None or not self.warned:
            self.since = min(self.since or started, started)
            self.warned = True
            logger.warning("lost %s (%s: %s); waiting up to %.0f s for it", what, type(exc).__name__, exc,
                           self.timeout)
        if now - self.since >= self.timeout:
            raise BackendError(
                f"{what} has been unreachable for {now - self.since:.0f} s (celery.outage_timeout ="
                f" {self.timeout:.0f}; {type(exc).__name__}: {exc}): {START_HINT}; the batches already embedded"
                " are journaled, so running the same command again resumes"
            ) from exc
        time.sleep(min(self.delay, max(0.0, self.since + self.timeout - now)))
        self.delay = min(2.0, self.delay * 2)


def transient(meta: dict[str, Any]) -> bool:
    """Whether a finished task failed because Redis went away (a connection error), not because of its
    texts: its batch deserves another try, not a failure of its products."""
    exc = meta.get("result")
    if not isinstance(exc, BaseException):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(kind.__name__ in TRANSIENT_ERRORS for kind in type(exc).__mro__)


def bound_client_calls(app: Any, timeout: float) -> None:
    """Give every Redis call of the executor's app a socket timeout and bounded reconnects, so a Redis
    that hangs instead of refusing connections cannot block a run past `outage_timeout` (the workers keep
    the defaults of `create_app`: they wait for their broker however long it takes)."""
    broker_options = dict(app.conf.broker_transport_options or {})
    broker_options.update(socket_timeout=timeout, socket_connect_timeout=min(timeout, 5.0))
    app.conf.update(
        broker_transport_options=broker_options,
        broker_connection_max_retries=3,
        broker_connection_timeout=min(timeout, 5.0),
        redis_socket_timeout=timeout,
        redis_socket_connect_timeout=min(timeout, 5.0),
        redis_retry_on_timeout=False,  # the executor's own loop retries, within outage_timeout
        result_backend_transport_options={"retry_policy": {"timeout": timeout}},
    )
