"""Starting the service: uvicorn with one or several worker processes, logs, graceful shutdown.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the requests in flight finish (up to
`service.shutdown_timeout` seconds), then the application closes its index and exits 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

from shopfusion.config import Settings
from shopfusion.errors import require


def configure_logging() -> None:
    """Service logs (JSON access lines, index swaps) to stderr; the root logger is left alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("shopfusion.access")
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    service = logging.getLogger("shopfusion.service")
    text = logging.StreamHandler(sys.stderr)
    text.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    service.handlers = [text]
    service.setLevel(logging.INFO)
    service.propagate = False


def serve(index_dir: str | os.PathLike[str], settings: Settings, *, config: str | None = None) -> None:
    """Run until SIGTERM/SIGINT. With `service.workers > 1`, each worker process builds its own app
    (and loads the model once) from the environment; metrics are then aggregated across workers."""
    require("uvicorn", "serve")
    require("fastapi", "serve")
    import uvicorn

    service = settings.service
    options = dict(host=service.host, port=service.port, access_log=False, log_level="info",
                   timeout_graceful_shutdown=max(1, int(service.shutdown_timeout)), server_header=False,
                   proxy_headers=False)
    configure_logging()
    if service.workers <= 1:
        from shopfusion.service.app import create_app

        uvicorn.run(create_app(index_dir, settings), **options)  # type: ignore[arg-type]
        return
    os.environ["SHOPFUSION_SERVE_INDEX"] = str(Path(index_dir).resolve())
    # each worker rebuilds its settings from the file and the environment: hand on what the command line
    # set (the API key from --api-key-env, --threads, --log-queries), or the workers would run without it
    for name, value in dataclasses.asdict(service).items():
        if value is not None:
            os.environ[f"SHOPFUSION_SERVICE_{name.upper()}"] = str(value)
    if config:
        os.environ["SHOPFUSION_CONFIG"] = str(Path(config).resolve())
    with tempfile.TemporaryDirectory(prefix="shopfusion-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # a worker importing torch on a busy machine can miss uvicorn's 5 s liveness ping and be restarted
        uvicorn.run("shopfusion.service.app:app_from_environment", factory=True, workers=service.workers,
                    timeout_worker_healthcheck=30, **options)  # type: ignore[arg-type]
