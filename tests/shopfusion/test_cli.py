"""The CLI, called in-process with click's runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shopfusion.cli import main, parse_filters
from shopfusion.errors import QueryError
from shopfusion.types import Filters

ENV = {"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=ENV)


@pytest.fixture
def indexed(runner: CliRunner, tiny_catalog: Path, tmp_path: Path) -> Path:
    index_dir = tmp_path / "idx"
    result = runner.invoke(main, ["index", str(tiny_catalog), "--index", str(index_dir), "--json"])
    assert result.exit_code == 0, result.output
    return index_dir


def test_index_json_summary(runner: CliRunner, tiny_catalog: Path, tmp_path: Path) -> None:
    result = runner.invoke(main, ["index", str(tiny_catalog), "--index", str(tmp_path / "i"), "--json"])
    summary = json.loads(result.output)
    assert summary["added"] == 12 and summary["balanced"] and summary["version"] == "v000001"


def test_index_text_output_and_rejects(runner: CliRunner, tmp_path: Path) -> None:
    catalog = tmp_path / "c.jsonl"
    catalog.write_text('{"id": "a", "title": "Drill"}\n{"id": "b"}\n')
    result = runner.invoke(main, ["index", str(catalog), "--index", str(tmp_path / "i"),
                                  "--rejects", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0
    assert "rejected 1" in result.output and "r.jsonl" in result.output
    failing = runner.invoke(main, ["index", str(catalog), "--index", str(tmp_path / "j"), "--max-rejects", "0"])
    assert failing.exit_code == 4 and "index is unchanged" in failing.output


def test_search_json_and_explain(runner: CliRunner, indexed: Path) -> None:
    result = runner.invoke(main, ["search", "cordless drill", "--index", str(indexed), "--k", "3", "--json",
                                  "--explain", "--filter", "category=Tools", "--filter", "price=50..200"])
    data = json.loads(result.output)
    assert [h["product_id"] for h in data["hits"]][0] == "p01"
    assert all(h["product"]["category_path"][0] == "Tools" for h in data["hits"])
    assert set(data["hits"][0]["legs"]) == {"lexical", "dense"}
    text = runner.invoke(main, ["search", "cordless drill", "--index", str(indexed), "--explain",
                                "--fusion", "rrf"])
    assert "p01" in text.output and "contribution" in text.output and "(rrf" in text.output


def test_rerank_from_jsonl_and_json(runner: CliRunner, indexed: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "cands.jsonl"
    jsonl.write_text('{"id": "p04", "score": 3}\n{"id": "p01", "score": 1}\n'
                     '{"id": "x9", "title": "Cordless drill kit", "brand": "Ryobi"}\n')
    result = runner.invoke(main, ["rerank", "cordless drill", "--index", str(indexed), "--candidates", str(jsonl),
                                  "--json"])
    data = json.loads(result.output)
    assert {h["product_id"] for h in data["hits"]} == {"p04", "p01", "x9"}
    assert data["hits"][-1]["product_id"] == "p04"
    array = tmp_path / "cands.json"
    array.write_text(json.dumps(["p02", "p01"]))
    assert runner.invoke(main, ["rerank", "drill", "--index", str(indexed), "--candidates", str(array)]).exit_code == 0


def test_eval_and_run_files(runner: CliRunner, indexed: Path, tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "text": "cordless drill"}\n{"id": "q2", "text": "hose"}\n')
    (tmp_path / "qrels.tsv").write_text("query_id\tproduct_id\tgrade\nq1\tp01\t3\nq1\tp04\t1\nq2\tp04\t3\n")
    for mode in ("corpus", "pool"):
        result = runner.invoke(main, ["eval", "--index", str(indexed), "--queries", str(tmp_path / "q.jsonl"),
                                      "--qrels", str(tmp_path / "qrels.tsv"), "--mode", mode, "--run", "hybrid",
                                      "--run", "lexical", "--run-dir", str(tmp_path / "runs"), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["queries"] == 2 and set(report["runs"]) == {"hybrid", "lexical"}
        assert 0 < report["runs"]["hybrid"]["ndcg@10"] <= 1
    assert (tmp_path / "runs" / "hybrid.corpus.trec").is_file()


def test_verify_detects_drift(runner: CliRunner, indexed: Path) -> None:
    ok = runner.invoke(main, ["verify", "--index", str(indexed), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]
    version = json.loads((indexed / "manifest.json").read_text())["version"]
    ids_file = indexed / "versions" / version / "vectors" / "ids.json"
    ids = json.loads(ids_file.read_text())
    ids[0] = "intruder"
    ids_file.write_text(json.dumps(ids))
    drift = runner.invoke(main, ["verify", "--index", str(indexed)])
    assert drift.exit_code == 1 and "DRIFT" in drift.output and "intruder" in drift.output


def test_verify_reports_an_index_without_filter_columns(runner: CliRunner, indexed: Path) -> None:
    version = json.loads((indexed / "manifest.json").read_text())["version"]
    (indexed / "versions" / version / "attributes.json").unlink()
    (indexed / "versions" / version / "vectors" / "columns.npz").unlink()
    report = json.loads(runner.invoke(main, ["verify", "--index", str(indexed), "--json"]).output)
    assert not report["ok"] and any("attributes.json is missing" in p for p in report["problems"])
    assert any("re-index it once" in p for p in report["problems"])


def test_errors_are_clear(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["search", "drill", "--index", str(tmp_path / "none")])
    assert result.exit_code == 2 and "shopfusion index" in result.output
    bad = runner.invoke(main, ["search", "drill", "--index", str(tmp_path), "--filter", "colour"])
    assert bad.exit_code == 2 and "write KEY=VALUE" in bad.output


def test_parse_filters() -> None:
    assert parse_filters(("category=Tools > Drills", "brand=A", "brand=B", "price>=5", "price<=9")) == Filters(
        ("Tools", "Drills"), ("A", "B"), 5.0, 9.0)
    assert parse_filters(("colour=black",)) == Filters(attributes={"colour": ("black",)})
    assert parse_filters(("price=..20",)) == Filters(price_max=20.0)
    with pytest.raises(QueryError):
        parse_filters(("price=cheap",))


@pytest.fixture
def faceted(runner: CliRunner, faceted_catalog: Path, tmp_path: Path) -> Path:
    index_dir = tmp_path / "faceted"
    result = runner.invoke(main, ["index", str(faceted_catalog), "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    return index_dir


def test_search_with_attribute_filters_facets_sort_and_pages(runner: CliRunner, faceted: Path) -> None:
    args = ["search", "wireless mouse", "--index", str(faceted), "--k", "1", "--filter", "Colour=BLACK",
            "--filter", "weight=50..<140", "--facets", "brand,category", "--facets", "price,colour",
            "--sort", "-price", "--page", "2"]
    data = json.loads(runner.invoke(main, [*args, "--json"]).output)
    assert data["page"] == {"offset": 1, "size": 1, "number": 2, "total": 2, "depth": 200, "sort": "-price",
                            "exhausted": True}
    assert [(h["rank"], h["product_id"]) for h in data["hits"]] == [(2, "f01")]  # 19.99 after f02's 24.50
    assert set(data["facets"]["fields"]) == {"brand", "category", "price", "colour"}
    assert data["facets"]["fields"]["colour"]["buckets"] == [{"value": "black", "label": "Black", "count": 2}]
    text = runner.invoke(main, args).output
    assert "hits 2-2 of 2 (page 2, sorted by -price)" in text
    assert "facets over the 2 products" in text and "brand: Logitech 2" in text
    past = runner.invoke(main, ["search", "mouse", "--index", str(faceted), "--page", "9"])
    assert "past the end" in past.output and "raise --depth" in past.output


@pytest.mark.parametrize(("argument", "message"), [
    ("color=black", "unknown attribute 'color' (close names: colour)"),
    ("colour=1..3", "'colour' is a text attribute"),
    ("weight=heavy", "'weight' is a numeric attribute"),
    ("price=nan", "not a bound to filter on"),
    ("brand=", "has no value"),
])
def test_filter_errors_exit_2_with_the_fix(runner: CliRunner, faceted: Path, argument: str, message: str) -> None:
    result = runner.invoke(main, ["search", "mouse", "--index", str(faceted), "--filter", argument])
    assert result.exit_code == 2 and message in result.output


def test_attributes_command(runner: CliRunner, faceted: Path) -> None:
    text = runner.invoke(main, ["attributes", "--index", str(faceted)])
    assert text.exit_code == 0 and "14 products, 7 attributes" in text.output
    lines = text.output.splitlines()
    assert {line.split()[0] for line in lines[1:4]} == {"brand", "category", "price"}  # built-ins first
    assert lines[4].split()[0] == "colour" and "numeric" in text.output  # then by how many products have it
    data = json.loads(runner.invoke(main, ["attributes", "colour", "weight", "--index", str(faceted), "--json",
                                           "--values", "2"]).output)
    colour, weight = data["fields"]
    assert colour["kind"] == "text" and colour["values"][0] == {"value": "black", "label": "Black", "count": 5}
    assert len(colour["values"]) == 2 and weight["kind"] == "numeric" and weight["min"] == 60
    unknown = runner.invoke(main, ["attributes", "color", "--index", str(faceted)])
    assert unknown.exit_code == 2 and "close names: colour" in unknown.output


def test_help_is_instant_and_imports_nothing_heavy() -> None:
    code = ("import sys; from shopfusion.cli import main; "
            "heavy = [m for m in ('torch', 'tantivy', 'faiss', 'numpy', 'sentence_transformers') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "search" in result.output and "train" in result.output


def test_config_command_hides_secrets(tmp_path: Path) -> None:
    result = CliRunner(env={"SHOPFUSION_ELASTICSEARCH_PASSWORD": "hunter2"}).invoke(main, ["config"])
    assert result.exit_code == 0 and "hunter2" not in result.output and "alpha = 0.3\n" in result.output
    shown = CliRunner(env={"SHOPFUSION_ELASTICSEARCH_PASSWORD": "hunter2"}).invoke(main, ["config", "--json"])
    assert "hunter2" not in shown.output and json.loads(shown.output)["search"]["alpha"]["source"] == "default"
