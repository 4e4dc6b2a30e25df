"""The feature table and its extraction: definitions, values on a hand-made candidate set, the fast
in-process BM25 against the engine's own, and per-query normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.stores.base import TEXT_FIELDS
from indexer.stores.tantivy_store import TantivyLexicalIndex
from ranker.features import (
    ABSENT_RANK,
    FEATURE_NAMES,
    FEATURES,
    INTENT_LABELS,
    CandidateSet,
    extract,
    model_matrix,
)
from ranker.product_table import ProductCache, ProductTable
from ranker.terms import terms
from shopfusion.types import LegHit, Product
from tests.plugins.catalogs import TINY, shop_catalog


def test_every_feature_has_a_unique_name_and_a_definition() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURES)
    for feature in FEATURES:
        assert feature.name.isidentifier() or feature.name.startswith("intent_")
        assert len(feature.definition) > 10 and "\n" not in feature.definition
        assert feature.kind in ("candidate", "query")


def test_intent_labels_are_the_taxonomy() -> None:
    from ranker.intent import LABELS

    assert tuple(INTENT_LABELS) == tuple(LABELS)


def test_terms_units_and_numbers() -> None:
    assert terms('1/2 in. x 10 ft. PVC Pipes') == ["1/2", "in", "x", "10", "ft", "pvc", "pipe"]
    assert terms("18V drill") == terms("18-volt drills") == ["18", "v", "drill"]
    assert terms('3/4" copper') == ["3/4", "in", "copper"]
    assert terms("2.50 gallons") == ["2.5", "gal"]


def _candidates(query: str, products: list[Product], legs: dict[str, list[LegHit]],
                intent: dict[str, float] | None = None) -> CandidateSet:
    table, slots = ProductTable.of(products)
    fields = np.zeros((len(products), len(TEXT_FIELDS)), dtype=np.float32)
    fields[:, 0] = np.arange(len(products), 0, -1)  # title BM25: 3, 2, 1
    dense = np.array([0.2, 0.9, 0.5][: len(products)], dtype=np.float32)
    return CandidateSet(query, tuple(p.id for p in products), table, slots, fields, dense, legs, intent or {})


def test_extracted_values() -> None:
    products = [
        Product("a", "DeWalt 20V MAX cordless drill kit", brand="DeWalt", category_path=("Tools", "Drills")),
        Product("b", "Makita 18V cordless drill", brand="Makita", description="drill driver, 18 volt"),
        Product("c", "Garden hose 50 ft"),
    ]
    legs = {"lexical": [LegHit("a", 6.0, 1), LegHit("b", 4.0, 2)], "dense": [LegHit("b", 0.9, 1), LegHit("c", 0.5, 2)]}
    x = extract(_candidates("cordless drill 18 volt", products, legs, {"product_lookup.attribute": 0.7}))
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    f = {name: x[:, i] for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(f["lexical_score"], [6.0, 4.0, 2.0])  # title x2 (the fixture's title BM25)
    np.testing.assert_allclose(f["lexical_rank"], [1.0, math.log2(3), math.log2(1 + ABSENT_RANK)], rtol=1e-6)
    np.testing.assert_array_equal(f["lexical_present"], [1, 1, 0])
    np.testing.assert_array_equal(f["dense_present"], [0, 1, 1])
    np.testing.assert_allclose(f["lexical_norm"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(f["fused_rrf"], [1 / 61, 1 / 62 + 1 / 61, 1 / 62], rtol=1e-6)
    np.testing.assert_allclose(f["title_coverage"], [3 / 4, 1.0, 0.0])  # cordless, drill, 18, v
    np.testing.assert_allclose(f["all_coverage"], [3 / 4, 1.0, 0.0])
    np.testing.assert_array_equal(f["title_phrase"], [0, 0, 0])  # "cordless drill 18 v" nowhere in this order
    np.testing.assert_allclose(f["number_match"], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(f["quantity_match"], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(f["quantity_conflict"], [1, 0, 0])  # states 20 V, the query asks 18 V
    np.testing.assert_array_equal(f["brand_match"], [0, 0, 0])
    np.testing.assert_array_equal(f["head_in_title"], [1, 1, 0])  # the query's last term: "v"
    np.testing.assert_array_equal(f["has_brand"], [1, 1, 0])
    np.testing.assert_array_equal(f["query_quantities"], [1, 1, 1])
    np.testing.assert_allclose(f["q_lexical_gap12"], [(6 - 4) / 6] * 3)
    np.testing.assert_allclose(f["intent_product_lookup.attribute"], [0.7] * 3)
    np.testing.assert_array_equal(f["intent_service"], [0, 0, 0])


def test_phrase_brand_and_category() -> None:
    products = [Product("a", "Makita cordless drill", brand="Makita", category_path=("Tools", "Cordless Drills")),
                Product("b", "Drill cordless combo", brand="Ryobi One", category_path=("Tools", "Combo Kits"))]
    x = extract(_candidates("makita cordless drills", products, {"lexical": [], "dense": []}))
    f = {name: x[:, i] for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_array_equal(f["title_phrase"], [1, 0])
    np.testing.assert_array_equal(f["brand_match"], [1, 0])
    np.testing.assert_allclose(f["category_match"], [1.0, 0.0])
    np.testing.assert_array_equal(f["title_first_term"], [1, 1])


def test_empty_candidates_and_empty_query_terms() -> None:
    assert extract(_candidates("drill", [], {})).shape == (0, len(FEATURES))
    x = extract(_candidates("!!!", [Product("a", "Drill")], {}))
    assert np.isfinite(x).all()


def test_in_process_bm25_equals_the_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The stage's fast path (cached analysed products + the index's statistics) gives tantivy's own
    per-field scores, for every field and for long fields too."""
    products, queries, _ = shop_catalog()
    products = products + list(TINY) + [Product("long", "Drill " + " ".join(f"w{i}" for i in range(90)),
                                                " ".join(["drill bit"] * 70), "Bosch", ("Tools",), None, {"a": "b"})]
    for analyzer in ("english", "standard"):
        index = TantivyLexicalIndex(tmp_path / analyzer, analyzer=analyzer, create=True)  # type: ignore[arg-type]
        index.upsert(products)
        index.commit()
        table, slots = ProductTable.of(products, index.analyze_fields)
        ids = [p.id for p in products]
        for query in list(queries.values())[:15] + ["makita cordless drill", "drill bit", "philips"]:
            engine = index.field_scores(query, ids)
            local = table.local_field_scores(slots, index.field_statistics(query))
            np.testing.assert_allclose(local, engine, rtol=1e-4, atol=1e-5, err_msg=query)


def test_query_normalisation() -> None:
    x = np.zeros((4, len(FEATURES)), dtype=np.float32)
    lexical, top, coverage = (FEATURE_NAMES.index(n) for n in ("lexical_score", "q_lexical_top", "title_coverage"))
    x[:, lexical] = [10, 5, 2, 4]
    x[:, top] = [10, 10, 4, 4]
    x[:, coverage] = [1, 0.5, 0.5, 1]
    names = ["lexical_score", "q_lexical_top", "title_coverage"]
    raw = model_matrix(x, names)
    np.testing.assert_array_equal(raw[:, 0], [10, 5, 2, 4])
    normed = model_matrix(x, names, "query", offsets=[0, 2, 4])
    np.testing.assert_allclose(normed[:, 0], [1.0, 0.0, 0.0, 1.0])  # min-max within each query
    np.testing.assert_array_equal(normed[:, 1], [0, 0, 0, 0])  # scaled query-level: left out
    np.testing.assert_array_equal(normed[:, 2], [1, 0.5, 0.5, 1])  # not scaled: unchanged
    with pytest.raises(Exception, match="retrain"):
        model_matrix(x, ["no_such_feature"])


def test_needed_features_have_their_full_values() -> None:
    """Serving computes only what the model reads; what it reads is what training computed."""
    products, queries, _ = shop_catalog()
    table, slots = ProductTable.of(products[:40])
    rng = np.random.default_rng(0)
    legs = {"lexical": [LegHit(p.id, float(40 - i), i + 1) for i, p in enumerate(products[:25])],
            "dense": [LegHit(p.id, float(rng.random()), i + 1) for i, p in enumerate(products[10:40])]}
    fields = rng.random((40, len(TEXT_FIELDS))).astype(np.float32)
    for text in list(queries.values())[:10] + ["drill 18 V makita", "bulb"]:
        candidates = CandidateSet(text, tuple(p.id for p in products[:40]), table, slots, fields,
                                  rng.random(40).astype(np.float32), legs, {})
        full = extract(candidates)
        for needed in (["title_coverage", "brand_match"], ["title_trigrams", "lexical_score", "quantity_match"],
                       list(FEATURE_NAMES)):
            part = extract(candidates, needed=needed)
            columns = [FEATURE_NAMES.index(name) for name in needed]
            np.testing.assert_array_equal(part[:, columns], full[:, columns])


def test_a_full_table_starts_again() -> None:
    products, _, _ = shop_catalog()
    cache = ProductCache(capacity=50)
    first = cache.ensure({p.id: p for p in products[:40]})
    assert len(cache) == 40 and cache.ensure({p.id: p for p in products[:10]}) is first
    second = cache.ensure({p.id: p for p in products[40:60]})  # 60 > 50: a new table with just these
    assert second is not first and len(second) == 20 and products[0].id not in cache
    np.testing.assert_array_equal(first.static.data[first.slots_of([products[5].id])],
                                  ProductTable.of([products[5]])[0].static.data[:1])
