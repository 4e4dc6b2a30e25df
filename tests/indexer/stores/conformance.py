"""The shared conformance suite every `LexicalIndex` implementation passes.

Subclass `LexicalConformance` in a test module and provide a fixture `make_lexical` that returns a
factory creating a fresh, empty index:

    class TestTantivy(LexicalConformance):
        @pytest.fixture
        def make_lexical(self, tmp_path):
            return lambda: TantivyLexicalIndex(tmp_path / "idx", create=True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from indexer.stores.base import TEXT_FIELDS, LexicalIndex
from shopfusion.types import Filters, Product
from tests.plugins.catalogs import TINY

Factory = Callable[[], LexicalIndex]


def _loaded(make_lexical: Factory) -> LexicalIndex:
    index = make_lexical()
    report = index.upsert(TINY)
    assert report.succeeded == len(TINY) and not report.failed
    index.commit()
    return index


class LexicalConformance:
    def test_satisfies_protocol(self, make_lexical: Factory) -> None:
        assert isinstance(make_lexical(), LexicalIndex)

    def test_empty_index_finds_nothing(self, make_lexical: Factory) -> None:
        index = make_lexical()
        index.commit()
        assert index.search("drill", k=5) == []
        assert index.count() == 0
        assert index.ids() == set()

    def test_search_ranks_matching_products(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        hits = index.search("cordless drill", k=5)
        assert hits, "expected matches for 'cordless drill'"
        assert hits[0].product_id == "p01"
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
        assert len({h.product_id for h in hits}) == len(hits)

    def test_title_is_boosted(self, make_lexical: Factory) -> None:
        index = make_lexical()
        index.upsert([Product("in-title", "Lantern"), Product("in-description", "Porch light", "A lantern")])
        index.commit()
        assert [h.product_id for h in index.search("lantern", k=2)] == ["in-title", "in-description"]

    def test_brand_category_and_attributes_are_searchable(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        assert "p07" in {h.product_id for h in index.search("stanley", k=10)}
        assert {"p09", "p10", "p11"} <= {h.product_id for h in index.search("lighting", k=10)}
        assert "p09" in {h.product_id for h in index.search("3000K", k=10)}

    def test_k_limits_results(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        assert len(index.search("drill driver garden", k=2)) == 2
        assert index.search("drill", k=0) == []

    def test_query_without_terms_returns_nothing(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        assert index.search("   ", k=5) == []
        assert index.search("zzzunknownzzz", k=5) == []

    def test_special_characters_do_not_break_queries(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        for query in ['drill "18V', "hammer (16 oz", "bits: wood AND metal -", "1/2 in. x 3-5/8 in.", "*?~^"]:
            index.search(query, k=5)

    @pytest.mark.parametrize(
        "filters",
        [
            Filters(category=("Tools",)),
            Filters(category=("tools", "power tools")),
            Filters(category=("Tools", "Power Tools", "Drills")),
            Filters(category=("Tool",)),
            Filters(brands=("makita",)),
            Filters(brands=("Bosch", "DeWalt")),
            Filters(price_min=20, price_max=130),
            Filters(price_max=19.0),
            Filters(price_min=100),
            Filters(category=("Garden",), brands=("Makita",)),
        ],
    )
    def test_filters_match_reference_semantics(self, make_lexical: Factory, filters: Filters) -> None:
        index = _loaded(make_lexical)
        query = "drill driver garden hammer light bulb cordless tools lantern sprinkler hose bit screwdriver"
        got = {h.product_id for h in index.search(query, k=50, filters=filters)}
        expected = {p.id for p in TINY if filters.matches(p)}
        assert got <= expected
        # every product matching the filters has at least one query term, so all must come back
        assert got == expected

    def test_upsert_replaces_by_id(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        index.upsert([Product("p01", "Velvet armchair", brand="Ikea")])
        index.commit()
        assert index.count() == len(TINY)
        assert "p01" not in {h.product_id for h in index.search("makita cordless drill", k=20)}
        assert [h.product_id for h in index.search("armchair", k=5)] == ["p01"]

    def test_delete_by_id(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        index.delete(["p01", "not-there"])
        index.commit()
        assert index.count() == len(TINY) - 1
        assert "p01" not in index.ids()
        assert "p01" not in {h.product_id for h in index.search("cordless drill", k=20)}

    def test_score_only_the_given_ids(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        scores = index.score("cordless drill", ["p01", "p02", "p04", "missing"])
        assert set(scores) == {"p01", "p02"}  # p04 does not match, "missing" is not indexed
        full = {h.product_id: h.score for h in index.search("cordless drill", k=20)}
        for pid, value in scores.items():
            assert value == pytest.approx(full[pid], rel=1e-4)

    def test_ids_and_count(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        assert index.ids() == {p.id for p in TINY}
        assert index.count() == len(TINY)

    # -- per-field scores: the learned ranking stage's lexical features --------------------------------
    def test_field_scores_add_up_to_the_score(self, make_lexical: Factory) -> None:
        """The score is the boosted sum of the per-field BM25 (title x2), so the features explain it."""
        index = _loaded(make_lexical)
        ids = [p.id for p in TINY]
        boosts = np.array([2.0 if name == "title" else 1.0 for name in TEXT_FIELDS])
        for query in ("cordless drill", "makita garden tools 18V", "warm white led"):
            fields = index.field_scores(query, ids)
            assert fields.shape == (len(ids), len(TEXT_FIELDS)) and fields.dtype == np.float32
            totals = fields @ boosts
            scores = index.score(query, ids)
            for row, pid in enumerate(ids):
                assert totals[row] == pytest.approx(scores.get(pid, 0.0), rel=1e-4, abs=1e-5)

    def test_field_scores_rows_follow_the_ids(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical)
        fields = index.field_scores("makita cordless drill", ["missing", "p01", "p04", "p01"])
        assert fields.shape == (4, len(TEXT_FIELDS))
        assert not fields[0].any() and not fields[2].any()  # not indexed; indexed but no match
        assert fields[1, TEXT_FIELDS.index("title")] > 0 and fields[1, TEXT_FIELDS.index("brand")] > 0
        np.testing.assert_array_equal(fields[1], fields[3])
        assert index.field_scores("makita", []).shape == (0, len(TEXT_FIELDS))
        assert not index.field_scores("zzzunknownzzz", ["p01"]).any()

    def test_score_products_uses_the_index_statistics(self, make_lexical: Factory) -> None:
        """A copy of an indexed product, scored from its text, gets the indexed product's scores: the same
        document frequencies, document count and average lengths, not those of the candidates alone."""
        index = _loaded(make_lexical)
        copies = [dataclasses.replace(p, id=f"copy-{p.id}") for p in TINY]
        for query in ("cordless drill", "garden hose nozzle", "philips led bulb"):
            indexed = index.field_scores(query, [p.id for p in TINY])
            outside = index.score_products(query, copies)
            np.testing.assert_allclose(outside, indexed, rtol=1e-4, atol=1e-5)
            alone = index.score_products(query, copies[:2])  # two candidates: still the index's statistics
            np.testing.assert_allclose(alone, indexed[:2], rtol=1e-4, atol=1e-5)
        assert index.score_products("drill", []).shape == (0, len(TEXT_FIELDS))
