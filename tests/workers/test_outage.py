"""`workers.outage` without a broker: which failures are transient, and the outage clock's verdicts."""

from __future__ import annotations

import time

import pytest

from shopfusion.errors import BackendError
from workers.outage import Outage, transient


def test_connection_failures_are_transient_and_task_errors_are_not() -> None:
    class RedisConnectionError(Exception):  # what Celery rebuilds from redis.exceptions.ConnectionError
        pass

    RedisConnectionError.__name__ = "ConnectionError"
    assert transient({"status": "FAILURE", "result": RedisConnectionError("Error 111")})
    assert transient({"status": "FAILURE", "result": TimeoutError("read")})
    assert not transient({"status": "FAILURE", "result": AttributeError("'NoneType' has no attribute")})
    assert not transient({"status": "FAILURE", "result": "text"})


def test_the_outage_clock_fails_the_run_past_the_timeout_and_resets_when_redis_answers() -> None:
    outage = Outage(timeout=0.0)
    with pytest.raises(BackendError, match=r"celery.outage_timeout = 0.*resumes"):
        outage.failed(ConnectionError("refused"), "the broker", started=0.0)
    outage.ok()
    assert outage.since is None
    patient = Outage(timeout=3600.0)
    now = time.monotonic()
    patient.noticed(started=now - 5)  # a failed side call starts the clock
    patient.failed(ConnectionError("refused"), "the broker", started=now)  # within the timeout: no error
    assert patient.since == now - 5
