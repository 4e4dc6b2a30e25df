"""A real `shopfusion serve` process on a free loopback port, and a tiny HTTP client for it.

Tests talk HTTP to the server exactly as another service would; nothing is mocked. The index uses the
deterministic `hash:32` encoder so a server starts in a couple of seconds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shopfusion.client import Client
from shopfusion.config import load_settings
from tests.plugins.catalogs import TINY, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
BASE_ENV = {"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none",
            "SHOPFUSION_SERVICE_RELOAD_INTERVAL": "0.2"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """One `shopfusion serve` subprocess; its stdout and stderr go to `log_path`."""

    def __init__(self, index_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.index_dir = index_dir
        self.log_path = log_path
        self.port = free_port()
        full_env = {**os.environ, **BASE_ENV, **(env or {}), "PYTHONPATH": str(ROOT)}
        full_env.pop("SHOPFUSION_CONFIG", None)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopfusion.cli", "serve", "--index", str(index_dir), "--port", str(self.port),
             *args],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/ready").status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            sent = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


def build_index(index_dir: Path, records: list[dict[str, Any]] | None = None) -> Client:
    """A `hash:32` index of the tiny catalog (or `records`) in `index_dir`, built in-process."""
    settings = load_settings(env=BASE_ENV)
    catalog = write_jsonl(index_dir.parent / f"{index_dir.name}-catalog.jsonl",
                          records if records is not None else [p.to_dict() for p in TINY])
    client = Client(index_dir, settings=settings)
    client.index(catalog, replace=True)
    return client


@contextlib.contextmanager
def running_server(index_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                   args: tuple[str, ...] = ()) -> Iterator[Server]:
    server = Server(index_dir, log_path, env, args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def served_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_dir = tmp_path_factory.mktemp("served") / "idx"
    build_index(index_dir).close()
    return index_dir


@pytest.fixture(scope="session")
def server(served_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session's shared server: no API key, small limits so that the limit tests stay cheap."""
    env = {"SHOPFUSION_LIMITS_MAX_K": "50", "SHOPFUSION_LIMITS_MAX_CANDIDATES": "200",
           "SHOPFUSION_LIMITS_MAX_QUERY_CHARS": "100", "SHOPFUSION_SERVICE_MAX_BODY_BYTES": "65536"}
    with running_server(served_index, tmp_path_factory.mktemp("logs") / "server.log", env) as running:
        yield running
