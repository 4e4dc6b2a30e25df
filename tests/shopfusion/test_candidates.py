"""The one re-rank input parser: shopfusion lists, Elasticsearch/OpenSearch and Solr bodies, `fields`,
bad scores, binary and over-deep files, stdin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shopfusion.candidates import load_candidates_text, parse_candidates, read_candidates_file
from shopfusion.cli import main
from shopfusion.client import Client
from shopfusion.errors import QueryError

ES_BODY = {
    "took": 3, "timed_out": False,
    "hits": {"total": {"value": 3, "relation": "eq"}, "max_score": 9.1, "hits": [
        {"_index": "shop", "_id": "p02", "_score": 9.1, "_source": {"name": "Bosch hammer drill 750W"}},
        {"_index": "shop", "_id": "ext-9", "_score": 4.0,
         "_source": {"name": "Ryobi cordless drill 18V", "maker": {"name": "Ryobi"}, "cat": "Tools > Drills"}},
        {"_index": "shop", "_id": "ext-10", "_score": 3.0, "_source": {"sku_name": "Mystery box"}},
    ]},
}
SOLR_BODY = {"responseHeader": {"status": 0}, "response": {"numFound": 2, "start": 0, "docs": [
    {"id": "p01", "score": 2.5, "title": ["Makita cordless drill 18V"]},
    {"id": "solr-1", "score": 1.5, "title": ["Cordless screwdriver"], "brand": "Ikea"},
]}}


def test_shopfusion_list_ids_objects_and_text() -> None:
    parsed = parse_candidates(["p01", 7, {"id": "x", "score": 2, "title": "Drill", "colour": "red"},
                               {"id": "y", "text": "some drill"}])
    assert parsed.format == "shopfusion"
    ids = [c.product_id for c in parsed.candidates]
    assert ids == ["p01", "7", "x", "y"]
    x = parsed.candidates[2]
    assert x.score == 2.0 and x.product is not None and x.product.attributes == {"colour": "red"}
    assert parsed.candidates[3].product.title == "some drill"  # type: ignore[union-attr]
    assert parse_candidates({"candidates": ["a"]}).candidates[0].product_id == "a"


def test_elasticsearch_body_with_fields_mapping() -> None:
    parsed = parse_candidates(ES_BODY, {"title": "name", "brand": "maker.name", "category": "cat"})
    assert parsed.format == "elasticsearch"
    first, second, third = parsed.candidates
    assert (first.product_id, first.score, first.product.title) == ("p02", 9.1, "Bosch hammer drill 750W")  # type: ignore[union-attr]
    assert second.product.brand == "Ryobi" and second.product.category_path == ("Tools", "Drills")  # type: ignore[union-attr]
    assert third.product is None and "sku_name" in (third.note or "")


def test_elasticsearch_without_mapping_reports_why_not_zero() -> None:
    parsed = parse_candidates(ES_BODY)
    assert all(c.product is None for c in parsed.candidates)
    assert 'fields, e.g. {"title": "name"}' in (parsed.candidates[0].note or "")


def test_elasticsearch_fields_instead_of_source() -> None:
    body = {"hits": {"hits": [{"_id": "a", "_score": 1.0, "fields": {"title": ["Drill"], "tags": ["x", "y"]}}]}}
    assert parse_candidates(body).candidates[0].product.title == "Drill"  # type: ignore[union-attr]


def test_solr_body() -> None:
    parsed = parse_candidates(SOLR_BODY)
    assert parsed.format == "solr"
    assert [(c.product_id, c.score) for c in parsed.candidates] == [("p01", 2.5), ("solr-1", 1.5)]
    assert parsed.candidates[1].product.title == "Cordless screwdriver"  # type: ignore[union-attr]
    assert parsed.candidates[1].product.brand == "Ikea"  # type: ignore[union-attr]


@pytest.mark.parametrize("score", [True, "7", [1], float("nan"), float("inf"), -float("inf")])
def test_bad_scores_are_refused(score: object) -> None:
    with pytest.raises(QueryError, match="score must be"):
        parse_candidates([{"id": "a", "score": score}])
    body = {"hits": {"hits": [{"_id": "a", "_score": score, "_source": {}}]}}
    with pytest.raises(QueryError, match=r"hits\.hits\[0\]"):
        parse_candidates(body)


@pytest.mark.parametrize("text", ['[{"id": "a", "score": NaN}]', '[{"id": "a", "score": Infinity}]',
                                  '{"id": "a", "score": -Infinity}'])
def test_nan_and_infinity_literals_are_not_json(text: str) -> None:
    with pytest.raises(QueryError, match="not valid JSON"):
        load_candidates_text(text, "input")


def test_bad_shapes_and_fields() -> None:
    with pytest.raises(QueryError, match="has no `id`"):
        parse_candidates([{"title": "x"}])
    with pytest.raises(QueryError, match="not recognised"):
        parse_candidates({"foo": 1})
    with pytest.raises(QueryError, match="unknown field"):
        parse_candidates(["a"], {"colour": "c"})
    with pytest.raises(QueryError, match="must be a source field"):
        parse_candidates(["a"], {"title": 3})
    invalid = parse_candidates([{"id": "a", "title": "Drill", "price": -3}]).candidates[0]
    assert invalid.product is None and "price" in (invalid.note or "")


def test_binary_deep_and_empty_files(tmp_path: Path) -> None:
    binary = tmp_path / "c.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    with pytest.raises(QueryError, match="binary"):
        read_candidates_file(binary)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'["caf\xe9"]')
    with pytest.raises(QueryError, match="UTF-8"):
        read_candidates_file(latin)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(QueryError, match="nested too deeply"):
        read_candidates_file(deep)
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(QueryError, match="empty"):
        read_candidates_file(empty)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "a"}\n\n{"id": "b", "score": 1}\n')
    assert [c["id"] for c in read_candidates_file(jsonl)] == ["a", "b"]


@pytest.fixture
def indexed(tiny_catalog: Path, tmp_path: Path, hash_settings):  # type: ignore[no-untyped-def]
    client = Client(tmp_path / "idx", settings=hash_settings.replace("search", policy="none"))
    client.index(tiny_catalog)
    return client


def test_client_reranks_an_es_body_and_reports_unscored(indexed: Client) -> None:
    results = indexed.rerank("cordless drill", ES_BODY, fields={"title": "name"})
    ids = [h.product_id for h in results.hits]
    assert set(ids[:2]) == {"p02", "ext-9"} and ids[2] == "ext-10"  # unscored: last, and reported
    assert [u.product_id for u in results.unscored] == ["ext-10"]
    assert results.to_dict()["unscored"][0]["reason"].startswith("not in the index")
    assert results.to_dict()["schema"] == "shopfusion.results/1"


def test_cli_reads_stdin_and_field_options(indexed: Client, tmp_path: Path) -> None:
    runner = CliRunner(env={"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none"})
    result = runner.invoke(main, ["rerank", "cordless drill", "--index", str(indexed.index_dir), "--candidates",
                                  "-", "--field", "title=name", "--json"], input=json.dumps(ES_BODY))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [h["product_id"] for h in data["hits"]][-1] == "ext-10" and data["unscored"]
    text = runner.invoke(main, ["rerank", "drill", "--index", str(indexed.index_dir), "--candidates", "-"],
                         input=json.dumps(ES_BODY))
    assert text.exit_code == 0 and "unscored: ext-10" in text.output
    bad = runner.invoke(main, ["rerank", "drill", "--index", str(indexed.index_dir), "--candidates", "-"],
                        input='[{"id": "p01", "score": NaN}]')
    assert bad.exit_code == 2 and "NaN" in bad.output
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    refused = runner.invoke(main, ["rerank", "drill", "--index", str(indexed.index_dir), "--candidates",
                                   str(binary)])
    assert refused.exit_code == 2 and "binary" in refused.output
