"""End to end: indexing a catalog with `index.executor = "celery"` and real workers gives the index the
in-process executor builds (same summary, same hits and scores)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from indexer.pipeline import run_index
from shopfusion.client import Client
from shopfusion.config import Settings
from tests.plugins.catalogs import TINY, write_jsonl

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

QUERIES = ["cordless drill", "garden hose", "led bulb", "hammer", "screwdriver set variant 7"]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """1,200 products: more than two executor batches of 512."""
    records = []
    for n in range(100):
        for product in TINY:
            record = product.to_dict()
            record["id"] = f"{product.id}-{n:03d}"
            record["title"] = f"{product.title} variant {n}"
            records.append(record)
    return write_jsonl(tmp_path / "catalog.jsonl", records)


def test_celery_index_equals_local_index(  # type: ignore[no-untyped-def]
    catalog: Path, redis_url, celery_settings, celery_worker, tmp_path: Path
) -> None:
    local_settings = Settings().replace("index", model="hash:32")
    celery = celery_settings(redis_url, shard_dir=str(tmp_path / "shards"))
    worker = celery_worker(celery, concurrency=2)
    remote_settings = dataclasses.replace(local_settings, celery=celery).replace("index", executor="celery")

    local = run_index(catalog, tmp_path / "local", settings=local_settings)
    remote = run_index(catalog, tmp_path / "celery", settings=remote_settings)

    assert remote.failures == {} and local.failures == {}
    assert (
        (remote.added, remote.embedded, remote.total)
        == (local.added, local.embedded, local.total)
        == (
            1200,
            1200,
            1200,
        )
    )
    left = Client(tmp_path / "local", settings=local_settings)
    right = Client(tmp_path / "celery", settings=remote_settings)
    try:
        for query in QUERIES:
            expected = [(h.product_id, round(h.score, 5)) for h in left.search(query, k=20).hits]
            got = [(h.product_id, round(h.score, 5)) for h in right.search(query, k=20).hits]
            assert got == expected and len(got) == 20, query
    finally:
        left.close()
        right.close()
    assert list((tmp_path / "shards").glob("*.npy")) == []
    assert worker.output().count(" succeeded in ") == 3  # 1,200 texts in batches of 512, all on the worker
