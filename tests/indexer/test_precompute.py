"""Precomputed vectors: `embed_catalog` in resumable chunks, and indexing that takes them instead of
embedding (with the hashing encoder: no model to load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.pipeline import run_index
from indexer.precompute import embed_catalog
from shopfusion.cli import main
from shopfusion.config import Settings
from shopfusion.errors import ConfigError
from tests.indexer.test_pipeline import CountingExecutor, assert_vectors_match_a_plain_run


def test_embed_in_chunks_then_index_without_embedding(tmp_path: Path, tiny_catalog: Path,
                                                      hash_settings: Settings) -> None:
    out = tmp_path / "vectors"
    first = embed_catalog(tiny_catalog, out, settings=hash_settings, max_texts=5, window=4)
    assert (first.embedded, first.remaining) == (5, 7)
    second = embed_catalog(tiny_catalog, out, settings=hash_settings)
    assert (second.already, second.embedded, second.remaining) == (5, 7, 0)

    executor = CountingExecutor()
    summary = run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings, vectors=out, executor=executor)
    assert summary.precomputed_vectors == 12 and summary.embedded == 0 and executor.texts == []
    assert_vectors_match_a_plain_run(tiny_catalog, tmp_path / "idx", summary.version, hash_settings)
    assert set(summary.phases) == {"read", "plan", "embed", "store", "lexical", "vectors", "publish"}


def test_texts_missing_from_the_file_are_embedded(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    out = tmp_path / "vectors"
    embed_catalog(tiny_catalog, out, settings=hash_settings, max_texts=4)
    executor = CountingExecutor()
    summary = run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings, vectors=out, executor=executor)
    assert (summary.precomputed_vectors, summary.embedded, len(executor.texts)) == (4, 8, 8)


def test_vectors_of_another_encoder_are_refused(tmp_path: Path, tiny_catalog: Path, hash_settings: Settings) -> None:
    out = tmp_path / "vectors"
    embed_catalog(tiny_catalog, out, settings=hash_settings.replace("index", model="hash:16"))
    with pytest.raises(ConfigError, match="make them again"):
        run_index(tiny_catalog, tmp_path / "idx", settings=hash_settings, vectors=out)
    with pytest.raises(ConfigError, match="another --out"):
        embed_catalog(tiny_catalog, out, settings=hash_settings)


def test_cli_embed_then_index(tmp_path: Path, tiny_catalog: Path) -> None:
    runner = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32"})
    out = tmp_path / "vectors"
    result = runner.invoke(main, ["embed", str(tiny_catalog), "--out", str(out), "--max-texts", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["remaining"] == 9
    result = runner.invoke(main, ["embed", str(tiny_catalog), "--out", str(out)])
    assert result.exit_code == 0 and "9 texts" in result.output and "0 remain" in result.output
    result = runner.invoke(main, ["index", str(tiny_catalog), "--index", str(tmp_path / "idx"),
                                  "--vectors", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["precomputed_vectors"] == 12
