"""`shopfusion train ranker` (judgments and clicks), then `search --ranker --explain` and `eval` comparing
runs with paired tests, through the CLI in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.pipeline import run_index
from shopfusion.cli import main
from shopfusion.config import Settings
from tests.plugins.catalogs import shop_catalog, write_jsonl
from trainer.clicks import simulate, write_click_log

SMALL = ["--num-leaves", "7", "--learning-rate", "0.2", "--rounds", "30", "--early-stopping", "10",
         "--min-data-in-leaf", "5"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("shopcli")
    products, queries, qrels = shop_catalog()
    settings = Settings().replace("index", model="hash:32")
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in products]), tmp / "idx", settings=settings)
    write_jsonl(tmp / "q.jsonl", [{"id": q, "text": t} for q, t in queries.items()])
    (tmp / "j.tsv").write_text("query_id\tproduct_id\tgrade\n" + "".join(
        f"{q}\t{p}\t{g}\n" for q, docs in qrels.items() for p, g in docs.items()))
    (tmp / "shopfusion.toml").write_text('[index]\nmodel = "hash:32"\n[search]\npolicy = "none"\n')
    return tmp


def _invoke(shop: Path, args: list[str]):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, ["--config", str(shop / "shopfusion.toml"), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_train_from_judgments_search_and_eval(shop: Path) -> None:
    out = _invoke(shop, ["train", "ranker", "--index", str(shop / "idx"), "--queries", str(shop / "q.jsonl"),
                         "--qrels", str(shop / "j.tsv"), "--output", str(shop / "ranker"),
                         "--cache-dir", str(shop / "cache"), "--json", *SMALL])
    summary = json.loads(out.output)
    assert summary["queries"] > 50 and summary["validation_queries"] > 10 and summary["trees"] >= 1
    assert (shop / "ranker" / "ranker.txt").is_file()

    text = _invoke(shop, ["search", "dewalt saw 10 in", "--index", str(shop / "idx"), "--ranker",
                          str(shop / "ranker"), "--explain"]).output
    assert "ranker:" in text and "lexical  raw" in text and "(average)" in text

    (shop / "ext.trec").write_text("sq000 Q0 s000 1 1.0 other\n")
    report = json.loads(_invoke(shop, [
        "eval", "--index", str(shop / "idx"), "--queries", str(shop / "q.jsonl"), "--qrels", str(shop / "j.tsv"),
        "--run", "fusion", "--run", "ranker", "--ranker", str(shop / "ranker"), "--trec", str(shop / "ext.trec"),
        "--metric", "ndcg@10", "--metric", "map@100", "--per-query", "--json"]).output)
    assert list(report["runs"]) == ["fusion", "ranker", "ext"] and report["metrics"] == ["ndcg@10", "map@100"]
    assert 0.0 <= report["comparisons"]["p_values"]["ranker"]["fusion"]["ndcg@10"] <= 1.0
    assert report["models"]["ranker"]["path"] == str(shop / "ranker")
    assert report["setup"]["index"]["encoder"].startswith("hash:32")
    assert set(report["per_query"]["ranker"]["ndcg@10"]) == set(report["per_query"]["fusion"]["ndcg@10"])
    table = _invoke(shop, ["eval", "--index", str(shop / "idx"), "--queries", str(shop / "q.jsonl"), "--qrels",
                           str(shop / "j.tsv"), "--run", "fusion", "--run", "ranker", "--ranker",
                           str(shop / "ranker"), "--per-query"]).output
    assert "paired student test against 'fusion'" in table and "sq000\t" in table


def test_train_from_clicks(shop: Path) -> None:
    _, queries, qrels = shop_catalog()
    rankings = {q: sorted(docs, key=lambda p: -docs[p]) + [] for q, docs in qrels.items()}
    sessions = simulate(rankings, qrels, queries, sessions_per_query=10)
    write_click_log(sessions, shop / "clicks.jsonl")
    summary = json.loads(_invoke(shop, ["train", "ranker", "--index", str(shop / "idx"), "--clicks",
                                        str(shop / "clicks.jsonl"), "--output", str(shop / "ranker-clicks"),
                                        "--cache-dir", str(shop / "cache"), "--json", *SMALL]).output)
    assert summary["method"].startswith("lambdarank from clicks")
    assert len(summary["propensities"]) == 10 and summary["propensities"][0] == 1.0
    card = json.loads((shop / "ranker-clicks" / "shopfusion_card.json").read_text())
    assert card["metrics"]["propensities"] == summary["propensities"]


def test_portable_and_monotone_rankers(shop: Path) -> None:
    from ranker.features import PORTABLE_EXCLUDED

    _invoke(shop, ["train", "ranker", "--index", str(shop / "idx"), "--queries", str(shop / "q.jsonl"), "--qrels",
                   str(shop / "j.tsv"), "--output", str(shop / "portable"), "--cache-dir", str(shop / "cache"),
                   "--portable", "--monotone", "--json", *SMALL])
    card = json.loads((shop / "portable" / "shopfusion_card.json").read_text())
    assert not set(card["extra"]["feature_names"]) & set(PORTABLE_EXCLUDED)
    assert "title_coverage" in card["params"]["excluded"] and "all_coverage" in card["extra"]["feature_names"]
    assert card["params"]["portable"] is True and card["params"]["monotone"] is True


def test_client_applies_a_configured_ranker(shop: Path) -> None:
    from shopfusion.client import Client

    ranker = shop / "ranker-client"
    _invoke(shop, ["train", "ranker", "--index", str(shop / "idx"), "--queries", str(shop / "q.jsonl"), "--qrels",
                   str(shop / "j.tsv"), "--output", str(ranker), "--cache-dir", str(shop / "cache"), "--json", *SMALL])
    settings = Settings().replace("index", model="hash:32").replace("search", policy="none", ranker=str(ranker))
    client = Client(shop / "idx", settings=settings)
    try:
        found = client.search("dewalt saw 10 in", k=5, explain=True)  # search.ranker turns the stage on
        assert found.fusion["ranker"]["path"] == str(ranker) and found.hits[0].contributions
        assert "ranker" not in client.search("dewalt saw 10 in", k=5, ranker="none").fusion
        ids = [h.product_id for h in found.hits]
        reranked = client.rerank("dewalt saw 10 in", list(reversed(ids)), explain=True)
        assert reranked.fusion["ranker"]["path"] == str(ranker) and {h.product_id for h in reranked.hits} == set(ids)
        assert "ranker" not in client.rerank("dewalt saw 10 in", ids, ranker="none").fusion
    finally:
        client.close()


def test_train_ranker_needs_labels(shop: Path) -> None:
    result = CliRunner().invoke(main, ["train", "ranker", "--index", str(shop / "idx"), "--output", str(shop / "x")])
    assert result.exit_code == 2 and "--qrels" in result.output
