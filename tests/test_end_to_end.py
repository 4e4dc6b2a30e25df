"""End to end on the embedded default with the real packaged MiniLM model: index, search, re-rank, evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfusion import Candidate, Client, Filters, Settings


@pytest.mark.slow
def test_minilm_end_to_end(tmp_path: Path, tiny_catalog: Path, minilm) -> None:
    client = Client(tmp_path / "idx", settings=Settings().replace("index", device="cpu"))
    summary = client.index(tiny_catalog)
    assert summary.added == 12 and summary.total == 12
    assert client.verify().ok

    results = client.search("battery powered drill", k=3, explain=True)
    assert results.hits[0].product_id in {"p01", "p12"}
    assert results.hits[0].legs["dense"].raw > 0.3

    # semantic match without shared words: the dense leg carries it
    dense = client.search("illumination for the house", k=3, mode="dense")
    assert {h.product.category_path[0] for h in dense.hits} == {"Lighting"}

    filtered = client.search("drill", k=10, filters=Filters(brands=("DeWalt",)))
    assert {h.product_id for h in filtered.hits} == {"p03", "p12"}

    reranked = client.rerank("water the lawn", [Candidate("p01"), Candidate("p05"), Candidate("p04")])
    assert reranked.hits[0].product_id == "p05"

    report = client.evaluate({"q1": "cordless drill", "q2": "garden hose"},
                             {"q1": {"p01": 3, "p12": 2, "p04": 1}, "q2": {"p04": 3}}, runs=("hybrid", "dense"))
    assert report["runs"]["hybrid"]["ndcg@10"] > 0.8
