"""Shared fixtures. Expensive ones (the MiniLM model, the Elasticsearch node, Redis and Celery workers)
are created once per test session; service fixtures live in tests/plugins/."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.plugins.catalogs", "tests.plugins.elasticsearch", "tests.plugins.redis", "tests.plugins.service"]
