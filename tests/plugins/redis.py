"""Fixtures for the real Redis service and real Celery worker processes (see scripts/redis.sh).

- `redis_url` (session): `$SHOPFUSION_TEST_REDIS_URL` when set (CI starts Redis with
  `scripts/redis.sh start`), else a private server started by the script for this session and stopped after.
- `private_redis`: a server of the test's own, which the test may stop and start again (broker restarts);
  it keeps its port and its append-only file across the restart.
- `celery_settings`: a factory of `CelerySettings` on a given Redis URL with a queue no other test uses.
- `celery_worker`: a factory that starts `celery -A workers.worker_main worker` subprocesses configured
  through `SHOPFUSION_CELERY_*` variables, waits until each is ready, and stops them all after the test.

Nothing here mocks Redis or Celery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shopfusion.config import CelerySettings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "redis.sh"
READY_TIMEOUT = 90.0


@dataclass
class RedisServer:
    """A Redis server started by scripts/redis.sh with its own run directory."""

    run_dir: Path
    url: str = ""

    def _script(self, command: str) -> str:
        env = os.environ | {"SHOPFUSION_RUN": str(self.run_dir)}
        proc = subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/redis.sh {command} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def start(self) -> str:
        for line in self._script("start").splitlines():
            if line.startswith("SHOPFUSION_TEST_REDIS_URL="):
                self.url = line.split("=", 1)[1].strip()
        if not self.url:
            raise RuntimeError("scripts/redis.sh start printed no SHOPFUSION_TEST_REDIS_URL")
        return self.url

    def stop(self) -> None:
        self._script("stop")

    def restart(self, *, lose_data: bool = False) -> None:
        """Stop and start again on the same port; `lose_data` deletes the append-only file in between,
        as a Redis without persistence would lose its queues."""
        self.stop()
        if lose_data:
            shutil.rmtree(self.run_dir / "redis" / "appendonlydir", ignore_errors=True)
        self.start()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SHOPFUSION_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = RedisServer(tmp_path_factory.mktemp("redis-run"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start Redis for the tests: {exc}")
    yield server.url
    server.stop()


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-private"))
    server.start()
    yield server
    server.stop()


def _with_db(url: str, db: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
def celery_settings() -> Callable[..., CelerySettings]:
    """`celery_settings(url, **overrides)`: settings on `url` (broker db 0, results db 1), a fresh queue."""

    def make(url: str, **overrides: object) -> CelerySettings:
        values: dict[str, object] = {
            "broker_url": _with_db(url, 0),
            "result_backend": _with_db(url, 1),
            "queue": f"shopfusion-test-{uuid.uuid4().hex[:12]}",
            "task_time_limit": 120,
            "max_retries": 2,
        }
        values.update(overrides)
        return CelerySettings(**values)  # type: ignore[arg-type]

    return make


@dataclass
class WorkerProcess:
    """A `celery worker` subprocess in its own process group; `log` holds its output."""

    proc: subprocess.Popen[bytes]
    log: Path
    hostname: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def pool_pids(self) -> list[int]:
        """Process ids of the pool processes (children of the worker's main process)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"celery worker exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            time.sleep(0.2)
        pytest.fail(f"celery worker not ready after {timeout:.0f} s:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # pool processes left behind by a killed main process
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)


def settings_env(settings: CelerySettings) -> dict[str, str]:
    """The `SHOPFUSION_CELERY_*` variables that make `load_settings().celery` equal `settings`."""
    return {
        f"SHOPFUSION_CELERY_{key.upper()}": str(value)
        for key, value in dataclasses.asdict(settings).items()
        if value is not None
    }


@pytest.fixture
def celery_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """`celery_worker(settings, concurrency=1, pool="prefork", env=None, via="celery")`: a ready worker
    subprocess, stopped (SIGTERM, then SIGKILL of its process group) after the test."""
    started: list[WorkerProcess] = []

    def start(
        settings: CelerySettings,
        concurrency: int = 1,
        pool: str = "prefork",
        env: dict[str, str] | None = None,
        via: str = "celery",
    ) -> WorkerProcess:
        """`via="celery"` runs `celery -A workers.worker_main worker`; `via="run_worker"` calls
        `workers.worker.run_worker` (what `shopfusion worker` does)."""
        hostname = f"test{len(started)}-{uuid.uuid4().hex[:6]}@%h"
        log = tmp_path / f"worker-{len(started)}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPFUSION_CELERY_")}
        child_env.update(settings_env(settings))
        child_env.update(
            {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        child_env.update(env or {})
        if via == "run_worker":
            code = (
                "from shopfusion.config import load_settings; from workers.worker import run_worker; "
                f"run_worker(load_settings().celery, {concurrency}, 'INFO', pool={pool!r}, hostname={hostname!r})"
            )
            command = [sys.executable, "-c", code]
        else:
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.worker_main",
                "worker",
                f"--concurrency={concurrency}",
                f"--pool={pool}",
                f"--queues={settings.queue}",
                f"--hostname={hostname}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ]
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=child_env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log, hostname, dict(env or {}))
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
