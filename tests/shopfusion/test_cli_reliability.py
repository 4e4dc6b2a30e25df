"""Issue 14 through the CLI: oversized or invalid queries are refused with exit 2 before any work, `--json`
never prints NaN or Infinity, and an unexpected failure is one line, not a traceback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shopfusion.cli import main
from shopfusion.serialization import dumps, jsonable

ENV = {"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none"}
REPO = Path(__file__).resolve().parents[2]


def _strict_json(text: str):  # type: ignore[no-untyped-def]
    def refuse(token: str) -> None:
        raise ValueError(f"bare {token} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.plugins.catalogs import TINY, write_jsonl

    root = tmp_path_factory.mktemp("cli-rel")
    catalog = write_jsonl(root / "c.jsonl", [p.to_dict() for p in TINY])
    result = CliRunner(env=ENV).invoke(main, ["index", str(catalog), "--index", str(root / "idx")])
    assert result.exit_code == 0, result.output
    return root / "idx"


@pytest.mark.parametrize("args, fragment", [
    (["--k", str(2**31)], "max_k"),
    (["--k", str(10**23)], "max_k"),
    (["--depth", str(2**31)], "max_depth"),
    (["--depth", str(10**23)], "max_depth"),
])
def test_huge_k_and_depth_exit_2(indexed: Path, args: list[str], fragment: str) -> None:
    result = CliRunner(env=ENV).invoke(main, ["search", "drill", "--index", str(indexed), *args])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


def test_100_kb_query_is_refused_before_any_work(indexed: Path) -> None:
    result = CliRunner(env=ENV).invoke(main, ["search", "drill " * 20_000, "--index", str(indexed)])
    assert result.exit_code == 2 and "max_query_chars" in result.output


@pytest.mark.parametrize("query, fragment", [
    ("dri\udcffll", "not valid UTF-8 (byte 0xFF"),
    ("dri\ud800ll", "lone surrogate (U+D800"),
])
def test_invalid_unicode_queries_exit_2(indexed: Path, query: str, fragment: str) -> None:
    result = CliRunner(env=ENV).invoke(main, ["search", query, "--index", str(indexed), "--json"])
    assert result.exit_code == 2 and fragment in result.output


def test_invalid_utf8_bytes_on_a_real_command_line(indexed: Path) -> None:
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}
    for raw in (b"dri\xffll", b"a\xed\xa0\x80b"):  # a stray byte; an encoded surrogate
        proc = subprocess.run([sys.executable, "-m", "shopfusion.cli", "search", raw, "--index", str(indexed)],
                              capture_output=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert b"not valid UTF-8" in proc.stderr and b"Traceback" not in proc.stderr


def test_client_refuses_lone_surrogates(tmp_path: Path) -> None:
    from shopfusion.client import Client
    from shopfusion.config import load_settings
    from shopfusion.errors import QueryError

    client = Client(tmp_path / "none", settings=load_settings(env={}))
    with pytest.raises(QueryError, match="lone surrogate"):
        client.search("a\udfffb")
    with pytest.raises(QueryError, match="not valid UTF-8"):
        client.rerank("a\udc80b", ["x"])


def test_json_output_never_holds_nan_or_infinity(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shopfusion.types import Hit

    original = Hit.to_dict

    def poisoned(self: Hit) -> dict:
        data = original(self)
        data["score"] = math.nan
        data["extra"] = [math.inf, -math.inf, 1.5]
        return data

    monkeypatch.setattr(Hit, "to_dict", poisoned)
    result = CliRunner(env=ENV).invoke(main, ["search", "drill", "--index", str(indexed), "--json"])
    assert result.exit_code == 0, result.output
    data = _strict_json(result.output)
    assert data["hits"][0]["score"] is None and data["hits"][0]["extra"] == [None, None, 1.5]


def test_jsonable_conversions() -> None:
    import decimal

    import numpy as np

    data = {"a": np.float32(0.5), "b": np.array([1.0, np.nan]), "c": decimal.Decimal("2.5"), "d": Path("/x"),
            "e": "bad \udc80 text", 1: (np.int64(3),)}
    assert jsonable(data) == {"a": 0.5, "b": [1.0, None], "c": 2.5, "d": "/x", "e": "bad \ufffd text", "1": [3]}
    assert _strict_json(dumps({"x": float("-inf")})) == {"x": None}


def test_an_unexpected_exception_is_one_line(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shopfusion.client

    def boom(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shopfusion.client.Client, "search", boom)
    result = CliRunner(env=ENV).invoke(main, ["search", "drill", "--index", str(indexed)])
    assert result.exit_code == 1 and "unexpected OSError" in result.output and "SHOPFUSION_DEBUG" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_exit_codes_are_documented() -> None:
    from shopfusion import errors

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code, meaning in errors.EXIT_CODES.items():
        assert f"\n    {code}  " in errors.__doc__, code
        assert f"| {code} |" in readme, f"README lacks exit code {code} ({meaning})"
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ShopfusionError)}
    assert codes <= set(errors.EXIT_CODES)


def test_embedding_failures_exit_8_after_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A product that could not be embedded is reported as such (not as a reject) and the exit code says so."""
    import indexer.pipeline as pipeline
    from tests.indexer.test_pipeline import FailingExecutor
    from tests.plugins.catalogs import TINY, write_jsonl

    monkeypatch.setattr(pipeline, "EMBED_BATCH", 1)
    monkeypatch.setattr(pipeline, "_default_executor", lambda settings, directory: FailingExecutor())
    catalog = write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in TINY] + [{"id": "bad", "title": "poison"}])
    result = CliRunner(env=ENV).invoke(main, ["index", str(catalog), "--index", str(tmp_path / "i"),
                                             "--json"])
    assert result.exit_code == 8
    summary = _strict_json(result.stdout)
    assert summary["embedding_failed"] == 1 and summary["rejected"] == 0 and summary["total"] == 12
    assert "1 product(s) could not be embedded" in result.stderr and "run the same command again" in result.stderr

