import json
from pathlib import Path

import pytest

from shopfusion.errors import TrainingError
from shopfusion.types import Product
from trainer.datasets import (
    category_examples,
    category_name_queries,
    intent_examples,
    intent_splits,
    load_products,
    pseudo_queries,
    read_products,
    relevance_pairs,
)


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_products_and_category_examples(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [
        {"id": "1", "title": "Green Tea 100 g", "brand": "Tetley", "category_path": ["Beverages", "Tea", "Green Tea"],
         "source": "shop"},
        {"id": "2", "title": "Steel Pan", "category_path": ["Kitchen"]},
    ])
    products = load_products(path)
    assert products[0].attributes["source"] == "shop"  # as the indexer keeps extra fields
    examples = category_examples(products)
    assert [(e.text, e.label, e.domain) for e in examples] == [("Green Tea 100 g | Tetley", "Green Tea", "Beverages")]


def test_catalogs_are_read_as_the_indexer_reads_them(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="no valid product"):
        load_products(tmp_path / "empty.jsonl")
    with pytest.raises(TrainingError, match="not found"):
        load_products(tmp_path / "missing.jsonl")
    path = _write(tmp_path / "mixed.jsonl", [{"id": "1", "title": "Tea"}, {"title": "no id"}, {"id": "2"},
                                             {"id": "1", "title": "Green tea"}, {"id": "3", "title": "Pan"}])
    read = read_products(path, rejects=tmp_path / "rejects.jsonl")
    assert [p.title for p in read.products] == ["Green tea", "Pan"]  # the last record of a repeated id wins
    assert read.rejected == 2 and read.duplicates == 1
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3] and "id" in rejects[0]["reason"]


def test_intents_and_relevance_pairs(tmp_path: Path) -> None:
    q = _write(tmp_path / "q.jsonl", [
        {"id": "a", "text": "order status", "intent": "order_status", "domain": "shopping", "split": "train"},
        {"id": "b", "text": "blah", "intent": "oos", "domain": "oos", "split": "train"},
    ])
    assert [e.label for e in intent_examples(q)] == ["order_status"]
    train, test = intent_splits(_write(tmp_path / "s.jsonl", [{"text": "x", "intent": "a", "split": "test"},
                                                              {"text": "y", "intent": "b"}]))
    assert [e.text for e in train] == ["y"] and [e.text for e in test] == ["x"] and train[0].domain == "default"
    (tmp_path / "qrels.tsv").write_text("query_id\tproduct_id\tgrade\na\tp1\t3\na\tp2\t1\n", encoding="utf-8")
    assert {p.product_id for p in relevance_pairs(q, tmp_path / "qrels.tsv")} == {"p1", "p2"}


def test_pseudo_queries_never_use_category_names() -> None:
    products = [Product(id=str(i), title=f"Organic Darjeeling Leaf Tea {i} Pack", brand="Tetley",
                        category_path=("Beverages", "Tea", "Green Tea"), attributes={"flavour": "lemon"})
                for i in range(5)]
    queries = pseudo_queries(products, per_product=3, seed=0)
    assert queries and {q.kind for q in queries} <= {"brand+type", "span", "attribute"}
    assert all("beverages" not in q.query and "green tea" not in q.query for q in queries)
    assert pseudo_queries(products, seed=0) == pseudo_queries(products, seed=0)


def test_category_name_queries_grade_leaf_and_parent() -> None:
    products = [Product(id="1", title="a", category_path=("Bev", "Tea", "Green Tea")),
                Product(id="2", title="b", category_path=("Bev", "Tea", "Black Tea")),
                Product(id="3", title="c", category_path=("Bev", "Coffee", "Instant"))]
    queries, qrels = category_name_queries(products)
    qid = next(q for q, text in queries.items() if text == "Green Tea")
    assert qrels[qid] == {"1": 2.0, "2": 1.0}
