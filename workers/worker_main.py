"""Entry module for a plain `celery worker` command: the one place a module-level app exists.

    celery -A workers.worker_main worker --loglevel=INFO --concurrency=2

The app is built from the project's settings (`shopfusion.toml` / `$SHOPFUSION_CONFIG` and
`SHOPFUSION_CELERY_*` environment variables), like `shopfusion worker`, which calls `workers.worker.run_worker`
instead. Library code never imports this module.
"""

from __future__ import annotations

from shopfusion.config import load_settings
from workers.celery_app import create_app

settings = load_settings().celery
app = create_app(settings)
