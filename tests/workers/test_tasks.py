"""The task's shard files and the app's delivery settings, without a broker (the real-Redis tests are in
test_celery_executor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shopfusion.config import CelerySettings
from shopfusion.errors import ConfigError
from workers.celery_app import (
    EMBED_TASK,
    create_app,
    redacted,
    soft_time_limit_for,
    visibility_timeout_for,
)
from workers.celery_executor import CeleryExecutor
from workers.tasks import embed_batch, read_shard, shard_paths, shard_stem, write_shard

pytest.importorskip("celery")


def test_rerun_overwrites_the_shard_instead_of_adding_one(tmp_path: Path) -> None:
    first = embed_batch(None, "hash:16", "b7", str(tmp_path), ["a", "b"], ["drill", "hose"])
    again = embed_batch(None, "hash:16", "b7", str(tmp_path), ["a", "b"], ["drill", "hose"])

    assert (
        first
        == again
        == {
            "batch_id": "b7",
            "count": 2,
            "dim": 16,
            "shard": str(tmp_path / "b7.npy"),
            "model_id": "hash:16",
            "backend_id": "hash",
        }
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b7.keys.json", "b7.npy"]  # no temp files left
    keys, vectors = read_shard(tmp_path, "b7")
    assert keys == ("a", "b") and vectors.shape == (2, 16) and vectors.dtype == np.float32


def test_unsafe_batch_ids_get_a_hashed_file_name(tmp_path: Path) -> None:
    batch_id = "../catalog/part 1"
    write_shard(tmp_path, batch_id, ["k"], np.ones((1, 4), dtype=np.float32))

    vectors_path, _ = shard_paths(tmp_path, batch_id)
    assert vectors_path.parent == tmp_path and shard_stem(batch_id).startswith("batch-")
    assert read_shard(tmp_path, batch_id)[0] == ("k",)
    assert shard_stem("000012-abcdef01") == "000012-abcdef01"


def test_a_shard_that_does_not_match_its_keys_is_refused(tmp_path: Path) -> None:
    write_shard(tmp_path, "b1", ["k1", "k2"], np.ones((2, 4), dtype=np.float32))
    keys_path = shard_paths(tmp_path, "b1")[1]
    keys_path.write_text(json.dumps({"batch_id": "b1", "keys": ["k1"]}))

    with pytest.raises(ValueError, match="does not match"):
        read_shard(tmp_path, "b1")


def test_keys_and_texts_of_different_lengths_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="2 keys but 1 texts"):
        embed_batch(None, "hash:8", "b0", str(tmp_path), ["a", "b"], ["one"])


def test_app_is_json_only_late_acking_and_prefetches_one() -> None:
    settings = CelerySettings(task_time_limit=900, max_retries=5, queue="q1", concurrency=3)
    app = create_app(settings)
    conf = app.conf

    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == (
        "json",
        "json",
        ["json"],
    )
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 3
    assert conf.broker_connection_retry_on_startup
    assert conf.broker_transport_options["visibility_timeout"] == visibility_timeout_for(settings) > 900
    task = app.tasks[EMBED_TASK]
    assert task.max_retries == 5 and task.acks_late and task.time_limit == 900
    assert task.soft_time_limit == soft_time_limit_for(settings) < 900
    assert task.retry_backoff and task.autoretry_for == (Exception,)
    assert conf.task_routes[EMBED_TASK] == {"queue": "q1"}


def test_apps_are_independent() -> None:
    one = create_app(CelerySettings(queue="a"))
    two = create_app(CelerySettings(queue="b", max_retries=1))
    assert one is not two
    assert one.tasks[EMBED_TASK].max_retries == 3 and two.tasks[EMBED_TASK].max_retries == 1


def test_passwords_are_redacted_from_messages() -> None:
    assert redacted("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_executor_construction_is_cheap_and_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    executor = CeleryExecutor(CelerySettings(broker_url="redis://127.0.0.1:1/0"), Path("shards"))
    assert executor.shard_dir == tmp_path / "shards" and executor._app is None
    with pytest.raises(ConfigError, match="RESULT_BACKEND"):
        CeleryExecutor(CelerySettings(result_backend=""), tmp_path)
    with pytest.raises(ConfigError, match="max_in_flight"):
        CeleryExecutor(CelerySettings(), tmp_path, max_in_flight=0)
