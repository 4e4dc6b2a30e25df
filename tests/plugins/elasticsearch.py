"""Fixtures for a real Elasticsearch node (scripts/elasticsearch.sh), one per test session.

- `es_url`: `$SHOPFUSION_TEST_ES_URL` when set (CI starts the node once: `eval "$(scripts/elasticsearch.sh
  start)"`); otherwise the node the script runs, started here when it is not already running and then
  stopped at the end of the session. `SHOPFUSION_SKIP_ES=1` skips the tests that need it; without that, a
  node that cannot be started is an error, never a silent skip.
- `es_secure_url`: a second node with security on (HTTP without TLS, user `elastic`, password
  `ES_SECURE_PASSWORD`), started on first use, for the credential tests.
- `es_settings`: `ElasticsearchSettings` for `es_url` with the `standard` analyzer (the test node has no
  analysis-common module, hence no `english`) and a prefix unique to the session.
- `disposable_es` (module): a node of the module's own, on a fixed port, that a test may stop and start
  again (outage tests), so the session node stays up for every other test; deleted at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "elasticsearch.sh"
ES_SECURE_PASSWORD = "changeme-test"


def _skip_if_disabled() -> None:
    if os.environ.get("SHOPFUSION_SKIP_ES") == "1":
        pytest.skip("SHOPFUSION_SKIP_ES=1: tests that need a real Elasticsearch node are disabled")


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=900, check=False)


def _url_from(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("SHOPFUSION_TEST_ES_URL="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"scripts/elasticsearch.sh printed no URL:\n{output}")


def _node(extra_env: dict[str, str]) -> Iterator[str]:
    """Reuse the run dir's node when it is up (and leave it running); else start it and stop it after."""
    env = {**os.environ, **extra_env}
    status = _script("status", env)
    if status.returncode == 0:
        yield _url_from(status.stdout)
        return
    started = _script("start", env)
    if started.returncode != 0:
        pytest.fail(
            "could not start Elasticsearch with scripts/elasticsearch.sh start "
            f"(set SHOPFUSION_TEST_ES_URL to use a running node, or SHOPFUSION_SKIP_ES=1 to skip):\n"
            f"{started.stdout}\n{started.stderr[-4000:]}",
            pytrace=False,
        )
    try:
        yield _url_from(started.stdout)
    finally:
        _script("stop", env)


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    _skip_if_disabled()
    if os.environ.get("SHOPFUSION_TEST_ES_URL"):
        yield os.environ["SHOPFUSION_TEST_ES_URL"]
        return
    yield from _node({})


@pytest.fixture(scope="session")
def es_secure_url() -> Iterator[str]:
    _skip_if_disabled()
    if os.environ.get("SHOPFUSION_TEST_ES_SECURE_URL"):
        yield os.environ["SHOPFUSION_TEST_ES_SECURE_URL"]
        return
    cache = Path(os.environ.get("SHOPFUSION_CACHE", Path.home() / ".cache" / "shopfusion"))
    yield from _node({
        "SHOPFUSION_ES_RUN_DIR": str(cache / "elasticsearch" / "run-secure"),
        "SHOPFUSION_ES_SECURITY": "true",
        "SHOPFUSION_ES_PASSWORD": ES_SECURE_PASSWORD,
    })


@pytest.fixture(scope="session")
def es_settings(es_url: str):  # type: ignore[no-untyped-def]
    from shopfusion.config import ElasticsearchSettings

    return ElasticsearchSettings(
        hosts=(es_url,),
        index_prefix=f"sftest{uuid.uuid4().hex[:8]}",
        analyzer="standard",
        max_retries=1,
        request_timeout=30.0,
    )


@dataclass
class DisposableNode:
    """An Elasticsearch node in its own run directory and on a fixed port (kept across restarts)."""

    run_dir: Path
    port: int
    url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SHOPFUSION_ES_RUN_DIR": str(self.run_dir), "SHOPFUSION_ES_PORT": str(self.port)}

    def start(self) -> str:
        started = _script("start", self.env)
        if started.returncode != 0:
            pytest.fail(f"could not start a disposable Elasticsearch node:\n{started.stderr[-4000:]}", pytrace=False)
        self.url = _url_from(started.stdout)
        return self.url

    def stop(self) -> None:
        _script("stop", self.env)


@pytest.fixture(scope="module")
def disposable_es() -> Iterator[DisposableNode]:
    _skip_if_disabled()
    base = os.environ.get("SHOPFUSION_ES_RUN_DIR") or str(
        Path(os.environ.get("SHOPFUSION_CACHE", Path.home() / ".cache" / "shopfusion")) / "elasticsearch" / "run")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = DisposableNode(Path(base).parent / f"run-disposable-{uuid.uuid4().hex[:8]}", port)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.run_dir, ignore_errors=True)
