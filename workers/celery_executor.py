"""The Celery executor: the `Executor` Protocol over any number of Celery workers.

`map` sends one `embed_batch` task per batch (at most `max_in_flight` outstanding at a time, so a huge
catalog does not sit in the broker at once), then yields an `EmbedResult` as each task finishes, in
completion order, with the vectors read back from the shard the worker wrote. Workers and this process must
share `shard_dir` (one machine, or a shared volume).

Failure handling:

- a batch whose task failed for good (after its retries) is yielded with `error` set and its keys, and
  the run goes on;
- a pool process killed mid-batch has its message requeued by Celery (`acks_late` +
  `task_reject_on_worker_lost`); the batch runs again and overwrites its shard, and this executor yields
  each batch once. A whole worker killed mid-batch (its main process too) answers no ping: once another
  worker does, its started batches are sent again after two looks `lost_after` seconds apart, rather
  than after Redis's visibility timeout;
- an unreachable broker at the start raises `BackendError` after `connect_retries` attempts; a broker that
  goes away mid-run (stopped, or hung: every Redis call of this process has a `socket_timeout`) is waited
  for, polls and sends retried, for up to `outage_timeout` seconds in all, then `BackendError` (the
  pipeline journals the batches already done, so a new run resumes); a batch whose message the broker
  lost (a Redis restart without persistence) is noticed, its state unknown while the queue is empty, and
  sent again, so none is lost (tasks are idempotent);
- a batch that failed because of the outage, not because of its texts, is not a failure of its
  products: when its worker wrote the shard but could not store the result, the shard is used; when the
  failure is a connection error, the batch is sent again (`max_resends` times);
- when no worker consumes the queue for `no_worker_timeout` seconds, `BackendError` says how to start one.

>>> from shopfusion.config import load_settings
>>> ex = CeleryExecutor(load_settings().celery, Path("/shared/shards"))  # cheap: connects on first map()
>>> results = list(ex.map("default", batches))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shopfusion.config import CelerySettings
from shopfusion.encoders import load_encoder
from shopfusion.errors import BackendError, ConfigError
from workers.celery_app import EMBED_TASK, create_app, redacted
from workers.executor import EmbedBatch, EmbedResult
from workers.outage import START_HINT, Outage, bound_client_calls, transient
from workers.tasks import read_shard, remove_shard, shard_model

logger = logging.getLogger(__name__)

READY = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class CeleryExecutor:
    """Embeds batches on Celery workers; see the module docstring for delivery and failure semantics.

    Parameters (all but `settings` and `shard_dir` have working defaults):
        settings: broker, result backend, queue and task limits; workers must use the same.
        shard_dir: directory the workers write shards to and this process reads them from.
        device: passed to the workers' `load_encoder` (`auto` picks CUDA where a worker sees a GPU).
        encode_batch_size: the encoder's own mini-batch size inside a task.
        max_in_flight: tasks outstanding at once; more are sent as results come back.
        poll_interval: seconds between polls of the result backend while nothing finished.
        connect_retries: attempts to reach the broker at the start before `BackendError`.
        outage_timeout: seconds a run waits for a broker that went away mid-run before `BackendError`
            (`celery.outage_timeout`).
        socket_timeout: seconds a single Redis read of this process may take (a hung Redis); a run fails
            at most about `outage_timeout` + 2 x `socket_timeout` after Redis stopped answering.
        max_resends: times a batch that failed with a connection error is sent again.
        no_worker_timeout: seconds without any worker consuming the queue before `BackendError`;
            None waits forever.
        lost_after: seconds between two looks for batches to send again (see `_RedeliveryWatch`).
        keep_shards: keep shard files after their vectors were yielded (default: remove them).
    """

    name = "celery"

    def __init__(
        self,
        settings: CelerySettings,
        shard_dir: Path,
        *,
        device: str = "auto",
        encode_batch_size: int = 64,
        max_in_flight: int = 512,
        poll_interval: float = 0.1,
        connect_retries: int = 3,
        outage_timeout: float = 120.0,
        no_worker_timeout: float | None = 300.0,
        lost_after: float = 10.0,
        keep_shards: bool = False,
        socket_timeout: float = 5.0,
        max_resends: int = 3,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if not settings.result_backend:
            raise ConfigError(
                "the Celery executor reads task outcomes from a result backend: set "
                "SHOPFUSION_CELERY_RESULT_BACKEND (celery.result_backend), e.g. redis://127.0.0.1:6379/1"
            )
        self.settings = settings
        self.shard_dir = Path(shard_dir).absolute()  # sent to workers, whose working directory differs
        self.device = device
        self.encode_batch_size = encode_batch_size
        self.max_in_flight = max_in_flight
        self.poll_interval = poll_interval
        self.connect_retries = connect_retries
        self.outage_timeout = outage_timeout
        self.no_worker_timeout = no_worker_timeout
        self.lost_after = lost_after
        self.keep_shards = keep_shards
        self.socket_timeout = socket_timeout
        self.max_resends = max_resends
        self._app: Any = None
        self._outage = Outage(outage_timeout)

    @property
    def app(self) -> Any:
        """The executor's own Celery app, built on first use."""
        if self._app is None:
            app = create_app(self.settings)
            _use_polling_backend(app)
            bound_client_calls(app, self.socket_timeout)
            self._app = app
        return self._app

    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        """Embed every batch with `model` run by `backend` on the workers; yield results as they finish."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._check_connections()
        expected_model = _local_identity(model, self.device, backend)
        in_flight: dict[str, EmbedBatch] = {}  # task id -> batch
        resends: dict[str, int] = {}
        self._outage = Outage(self.outage_timeout)
        seen: set[str] = set()
        source = iter(batches)
        exhausted = False
        watch = _WorkerWatch(self)
        redelivery = _RedeliveryWatch(self.lost_after)
        try:
            while True:
                while not exhausted and len(in_flight) < self.max_in_flight:
                    batch = next(source, None)
                    if batch is None:
                        exhausted = True
                        break
                    if batch.batch_id in seen:
                        raise ConfigError(
                            f"batch id {batch.batch_id!r} appears twice: batch ids must be unique"
                        )
                    seen.add(batch.batch_id)
                    in_flight[self._send(model, batch, backend)] = batch
                if not in_flight:
                    return
                states = self._poll(list(in_flight))
                finished = [
                    (tid, meta) for tid, meta in states.items() if meta and meta.get("status") in READY
                ]
                for task_id, meta in finished:
                    batch = in_flight.pop(task_id)
                    result = self._result(batch, meta, expected_model)
                    self._forget(task_id)
                    if not result.ok and transient(meta) and resends.get(batch.batch_id, 0) < self.max_resends:
                        resends[batch.batch_id] = resends.get(batch.batch_id, 0) + 1
                        logger.warning("batch %s failed with a connection error; sending it again (%d of %d)",
                                       batch.batch_id, resends[batch.batch_id], self.max_resends)
                        in_flight[self._send(model, batch)] = batch
                        continue
                    yield result
                pending = {task_id: meta for task_id, meta in states.items() if task_id in in_flight}
                for task_id, why in redelivery.stalled(pending, self._queue_size, self._live_workers).items():
                    batch = in_flight.pop(task_id)
                    logger.warning("batch %s: %s; sending it again", batch.batch_id, why)
                    in_flight[self._send(model, batch, backend)] = batch
                if finished:
                    watch.progressed()
                else:
                    watch.check()
                    time.sleep(self.poll_interval)
        finally:
            if in_flight and self._outage.since is None:  # stopped early or failed: drop the rest
                self._revoke(list(in_flight))

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    # -- dispatch -------------------------------------------------------------------------------------

    def _send(self, model: str, batch: EmbedBatch, backend: str = "torch") -> str:
        task_id = str(uuid.uuid4())
        kwargs = {
            "model": model,
            "batch_id": batch.batch_id,
            "shard_dir": str(self.shard_dir),
            "keys": list(batch.keys),
            "texts": list(batch.texts),
            "device": self.device,
            "encode_batch_size": self.encode_batch_size,
            "backend": backend,
        }
        while True:
            started = time.monotonic()
            try:
                self.app.send_task(EMBED_TASK, kwargs=kwargs, queue=self.settings.queue, task_id=task_id)
                self._outage.ok()
                return task_id
            except Exception as exc:
                self._outage.failed(exc, f"sending batch {batch.batch_id!r} to the Celery broker at "
                                         f"{redacted(self.settings.broker_url)}", started)

    # -- collection -----------------------------------------------------------------------------------

    def _poll(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """States of `task_ids`, waiting (within `outage_timeout`) for a result backend that went away."""
        while True:
            started = time.monotonic()
            try:
                states = self._fetch(task_ids)
                self._outage.ok()
                return states
            except Exception as exc:
                self._outage.failed(exc, f"the Celery result backend at {redacted(self.settings.result_backend)}",
                                    started)

    def _queue_size(self) -> int | None:
        """Messages waiting in the queue (0 when Redis dropped the empty list); None when unknown."""
        started = time.monotonic()
        try:
            with self.app.connection_for_read() as conn:
                return int(conn.default_channel.queue_declare(queue=self.settings.queue, passive=True)[1])
        except Exception as exc:
            if "NOT_FOUND" in str(exc) or "404" in str(getattr(exc, "reply_code", "")):
                return 0
            logger.debug("could not size queue %s", self.settings.queue, exc_info=True)
            self._outage.noticed(started)
            return None

    def _fetch(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Task id -> decoded result meta (None while the backend has nothing for it)."""
        backend = self.app.backend
        out: dict[str, dict[str, Any] | None] = {}
        if not hasattr(backend, "mget"):  # a database backend: one query per task
            for task_id in task_ids:
                meta = backend.get_task_meta(task_id, cache=False)
                out[task_id] = None if meta.get("status") == "PENDING" else meta
            return out
        for start in range(0, len(task_ids), 1000):
            chunk = task_ids[start : start + 1000]
            values = backend.mget([backend.get_key_for_task(task_id) for task_id in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                out[task_id] = backend.decode_result(value) if value else None
        return out

    def _result(self, batch: EmbedBatch, meta: dict[str, Any],
                expected_model: tuple[str, str] | None) -> EmbedResult:
        status = meta.get("status")
        if status != "SUCCESS" and transient(meta):
            rescued = self._rescue(batch, expected_model, meta)
            if rescued is not None:
                return rescued
        if status != "SUCCESS":
            exc = meta.get("result")
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else repr(exc)
            return self._failed(
                batch,
                f"batch {batch.batch_id!r} failed on a worker (status {status}, after up to "
                f"{self.settings.max_retries} retries): {reason}",
            )
        summary = meta.get("result") or {}
        worker_model = summary.get("model_id") if isinstance(summary, dict) else None
        worker_backend = summary.get("backend_id", "torch") if isinstance(summary, dict) else None
        if expected_model and worker_model and worker_model != expected_model[0]:
            return self._failed(
                batch,
                f"batch {batch.batch_id!r} was encoded with {worker_model} on a worker but this run uses "
                f"{expected_model[0]}: install the same model on every worker",
            )
        if expected_model and worker_model and worker_backend != expected_model[1]:
            return self._failed(
                batch,
                f"batch {batch.batch_id!r} was encoded by the {worker_backend} backend on a worker but this run"
                f" uses {expected_model[1]}: install the same shopfusion, torch and onnxruntime versions on"
                " every worker (an ONNX export is identified by its checksum)",
            )
        try:
            keys, vectors = read_shard(self.shard_dir, batch.batch_id)
        except (OSError, ValueError) as exc:
            return self._failed(
                batch,
                f"the shard of batch {batch.batch_id!r} cannot be read from {self.shard_dir} ({exc}): "
                "shard_dir must be a directory every worker and this process share",
            )
        if keys != tuple(batch.keys):
            return self._failed(batch, f"the shard of batch {batch.batch_id!r} holds other keys than sent")
        if not self.keep_shards:
            remove_shard(self.shard_dir, batch.batch_id)
        return EmbedResult(batch.batch_id, batch.keys, vectors)

    def _rescue(self, batch: EmbedBatch, expected_model: tuple[str, str] | None,
                meta: dict[str, Any]) -> EmbedResult | None:
        """The batch's shard, when its worker wrote it but then could not store the task's result (the
        broker went away between the two): the vectors are there, written atomically, under this
        batch's keys and by the expected model and backend."""
        try:
            keys, vectors = read_shard(self.shard_dir, batch.batch_id)
        except (OSError, ValueError):
            return None
        model = shard_model(self.shard_dir, batch.batch_id)
        if keys != tuple(batch.keys) or model is None or (expected_model is not None and model != expected_model):
            return None
        logger.warning("batch %s: its worker wrote the shard but could not store the result (%s); using the"
                       " shard", batch.batch_id, meta.get("result"))
        if not self.keep_shards:
            remove_shard(self.shard_dir, batch.batch_id)
        return EmbedResult(batch.batch_id, batch.keys, vectors)

    @staticmethod
    def _failed(batch: EmbedBatch, message: str) -> EmbedResult:
        logger.warning(
            "%s (keys: %s)", message, ", ".join(batch.keys[:5]) + (" ..." if len(batch.keys) > 5 else "")
        )
        return EmbedResult(batch.batch_id, batch.keys, None, error=message)

    def _revoke(self, task_ids: list[str]) -> None:
        """Best effort: workers discard these tasks when they receive them (they may have run already)."""
        try:
            self.app.control.revoke(task_ids)
        except Exception:
            logger.debug("could not revoke %d tasks", len(task_ids), exc_info=True)

    def _forget(self, task_id: str) -> None:
        if self._outage.since is not None:
            return  # Redis is away: the result expires on its own (result_expires)
        started = time.monotonic()
        try:
            self.app.backend.forget(task_id)
        except Exception:
            logger.debug("could not forget task %s", task_id, exc_info=True)
            self._outage.noticed(started)

    # -- connections ----------------------------------------------------------------------------------

    def _check_connections(self) -> None:
        """Fail fast, with the fix, when the broker or the result backend cannot be reached."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(
                    max_retries=self.connect_retries, interval_start=0.5, interval_step=0.5, interval_max=2.0
                )
        except Exception as exc:
            raise BackendError(
                f"cannot reach the Celery broker at {redacted(self.settings.broker_url)} after "
                f"{self.connect_retries} retries ({type(exc).__name__}: {exc}): {START_HINT}"
            ) from exc
        for attempt in range(self.connect_retries + 1):
            try:
                self._fetch(["shopfusion-connection-check"])
                return
            except Exception as exc:
                if attempt == self.connect_retries:
                    raise BackendError(
                        f"cannot reach the Celery result backend at {redacted(self.settings.result_backend)}"
                        f" ({type(exc).__name__}: {exc}): {START_HINT}"
                    ) from exc
                time.sleep(0.5 * (attempt + 1))

    def _live_workers(self) -> set[str] | None:
        """Names of the workers answering a ping; None when the broker cannot be asked."""
        started = time.monotonic()
        try:
            replies = self.app.control.ping(timeout=1.0) or []
        except Exception:
            logger.debug("could not ping the workers", exc_info=True)
            self._outage.noticed(started)
            return None
        return {name for reply in replies for name in reply}

    def workers_consuming(self, timeout: float = 1.0) -> list[str]:
        """Names of the live workers that consume this executor's queue (asks them over the broker)."""
        replies = self.app.control.inspect(timeout=timeout).active_queues() or {}
        return sorted(
            name
            for name, queues in replies.items()
            if any(q.get("name") == self.settings.queue for q in queues)
        )


class _RedeliveryWatch:
    """Finds batches no worker will finish without help, to send them again.

    Every `every` seconds it looks at the in-flight tasks; a task suspect at two looks in a row is given up:

    - unknown to the result backend while the queue is empty: the broker lost its message (a Redis restart
      without persistence, a flush). Tasks a worker holds are STARTED (`task_track_started`) and tasks
      waiting to be retried are RETRY, so an unknown task with an empty queue is nowhere.
    - STARTED on a worker that no longer answers a ping while other workers do: the whole worker died
      mid-batch (machine lost, main process SIGKILLed). Redis would hand its message out again only after
      the visibility timeout. When no worker answers at all (a broker restart they are reconnecting from,
      or the only worker died) nothing is sent again until some worker answers.

    Sending a batch again is safe: shards are idempotent and the executor yields each batch once. A late
    duplicate (the dead worker's message restored after the visibility timeout) rewrites the same shard."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last_look = time.monotonic()
        self.suspects: set[str] = set()

    def stalled(
        self,
        states: dict[str, dict[str, Any] | None],
        queue_size: Callable[[], int | None],
        live_workers: Callable[[], set[str] | None],
    ) -> dict[str, str]:
        """Task id -> why it is given up, for the tasks to send again now."""
        now = time.monotonic()
        if now - self.last_look < self.every:
            return {}
        self.last_look = now
        suspects: dict[str, str] = {}
        unknown = [task_id for task_id, meta in states.items() if meta is None]
        if unknown and queue_size() == 0:
            suspects.update(dict.fromkeys(unknown, "the broker lost its message"))
        started = {
            task_id: str(meta["result"].get("hostname"))
            for task_id, meta in states.items()
            if meta and meta.get("status") == "STARTED" and isinstance(meta.get("result"), dict)
        }
        if started:
            live = live_workers()
            if live:  # nobody answering is an outage or a restart, not a death: wait for them
                suspects.update(
                    (task_id, f"its worker {host} stopped answering")
                    for task_id, host in started.items()
                    if host not in live
                )
        given_up = {task_id: why for task_id, why in suspects.items() if task_id in self.suspects}
        self.suspects = set(suspects) - set(given_up)
        return given_up


class _WorkerWatch:
    """While nothing finishes, checks now and then that some worker consumes the queue."""

    CHECK_EVERY = 30.0

    def __init__(self, executor: CeleryExecutor) -> None:
        self.executor = executor
        self.last_progress = time.monotonic()
        self.last_check = self.last_progress
        self.no_worker_since: float | None = None

    def progressed(self) -> None:
        self.last_progress = self.last_check = time.monotonic()
        self.no_worker_since = None

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last_check < self.CHECK_EVERY:
            return
        self.last_check = now
        started = time.monotonic()
        try:
            workers = self.executor.workers_consuming()
        except Exception:  # the broker is away: _poll fails the run once it has been for outage_timeout
            self.executor._outage.noticed(started)
            return
        if workers:
            self.no_worker_since = None
            return
        queue = self.executor.settings.queue
        self.no_worker_since = self.no_worker_since or self.last_progress
        waited = now - self.no_worker_since
        hint = (
            f"no Celery worker consumes queue {queue!r}: start one with `shopfusion worker` "
            f"(or `celery -A workers.worker_main worker`) using the same SHOPFUSION_CELERY_* settings"
        )
        limit = self.executor.no_worker_timeout
        if limit is not None and waited >= limit:
            raise BackendError(f"{hint}; gave up after {waited:.0f} s")
        logger.warning("%s (waiting %.0f s so far)", hint, waited)


def _use_polling_backend(app: Any) -> None:
    """Make a Redis result backend skip its per-task pub/sub subscription.

    The executor polls results with one MGET per round, which survives a Redis restart plainly; left on,
    the backend would also subscribe to every task's channel and leave the messages unread, which grows
    the connection's buffer until Redis drops it on long runs."""
    from celery.app.backends import by_url
    from celery.backends.redis import RedisBackend

    base, url = by_url(app.conf.result_backend, app.loader)
    if not (isinstance(base, type) and issubclass(base, RedisBackend)):
        return

    class PollingBackend(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["url"] = kwargs.get("url") or url
            super().__init__(*args, **kwargs)

        def on_task_call(self, producer: Any, task_id: str) -> None:
            return None

    app.backend_cls = PollingBackend


def _local_identity(model: str, device: str, backend: str = "torch") -> tuple[str, str] | None:
    """(model id, backend id) as this process sees them, to check the workers use the same; None when the
    model is unknown here."""
    try:
        encoder = load_encoder(model, device, backend)
        return encoder.model_id, encoder.backend_id
    except Exception:  # the model may exist on the workers only
        return None
