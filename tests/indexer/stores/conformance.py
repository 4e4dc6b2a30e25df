"""The shared conformance suites: every `LexicalIndex` and every `VectorIndex` implementation passes them.

Subclass `LexicalConformance` in a test module and provide a fixture `make_lexical` that returns a
factory creating a fresh, empty index:

    class TestTantivy(LexicalConformance):
        @pytest.fixture
        def make_lexical(self, tmp_path):
            return lambda: TantivyLexicalIndex(tmp_path / "idx", create=True)

`VectorConformance` likewise takes a fixture `make_vectors` (a factory of empty 32-dimensional indexes).
Filters (built-in and attribute, with spellings that differ only by case, Unicode or number form), facet
counts and the stable order paging relies on are checked against the reference semantics:
`Filters.matches` and `indexer.stores.base.reference_facet_counts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from indexer.stores.base import TEXT_FIELDS, FacetRequest, LexicalIndex, VectorIndex, reference_facet_counts
from shopfusion.encoders import HashingEncoder
from shopfusion.types import AttributeFilter, Filters, Product
from tests.plugins.catalogs import FACETED, TINY

Factory = Callable[[], LexicalIndex]
VectorFactory = Callable[[], VectorIndex]
FACETED_QUERY = "mouse keyboard hub stand pad thermometer bungee"
"""Every product of FACETED has one of these words, so a filter alone decides what comes back."""

ATTRIBUTE_FILTERS = [
    Filters(attributes={"colour": ("black",)}),
    Filters(attributes={"COLOUR": ("Dark Grey", "silver")}),
    Filters(attributes={"colour": ("red",)}),  # the catalog wrote it in full-width letters
    Filters(attributes=[AttributeFilter("weight", min=90, max=135)]),
    Filters(attributes=[AttributeFilter("weight", below=93)]),  # 93.0 is not below 93
    Filters(attributes=[AttributeFilter("weight", ("93",))]),  # equals 93.0
    Filters(attributes=[AttributeFilter("min_temp", max=-30)]),
    Filters(attributes=[AttributeFilter("min_temp", min=-40.5, below=-20)]),
    Filters(attributes={"colour": ("black",), "connection": ("wireless",)}),
    Filters(brands=("logitech",), attributes=[AttributeFilter("buttons", min=5)]),
    Filters(attributes={"nothere": ("x",)}),
    Filters(price_below=25.0),
    Filters(price_min=19.99, price_below=25),
    Filters(category=("computers", "mice"), attributes={"colour": ("red", "black")}),
]
FACET_REQUESTS = [
    FacetRequest("brand", "terms", 3),
    FacetRequest("category", "category"),
    FacetRequest("price", "range", edges=(10.0, 25.0, 50.0)),
    FacetRequest("colour", "terms", 10, attribute=True),
    FacetRequest("weight", "range", edges=(80.0, 100.0, 1000.0), attribute=True),
    FacetRequest("min_temp", "range", edges=(-30.0,), attribute=True),
    FacetRequest("material", "terms", attribute=True),
    FacetRequest("nothere", "terms", attribute=True),
]


def _loaded(make_lexical: Factory, products: list[Product] = TINY) -> LexicalIndex:
    index = make_lexical()
    report = index.upsert(products)
    assert report.succeeded == len(products) and not report.failed
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

    # -- attribute filters, facets, the order paging relies on -------------------------------------------
    @pytest.mark.parametrize("filters", ATTRIBUTE_FILTERS)
    def test_attribute_filters_match_reference_semantics(self, make_lexical: Factory, filters: Filters) -> None:
        index = _loaded(make_lexical, FACETED)
        got = {h.product_id for h in index.search(FACETED_QUERY, k=50, filters=filters)}
        assert got == {p.id for p in FACETED if filters.matches(p)}

    def test_facet_counts_match_the_reference_over_the_given_ids(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical, FACETED)
        chosen = [p for p in FACETED if p.id not in {"f03", "f07"}]
        counts = index.facet_counts([p.id for p in chosen] + ["not-indexed"], FACET_REQUESTS)
        for request in FACET_REQUESTS:
            assert counts[request.name] == reference_facet_counts(chosen, request), request
        assert counts["attributes.colour"].values["black"] == 5  # Black, BLACK, black : one value
        assert index.facet_counts([], FACET_REQUESTS[:1])["brand"].values == {}

    def test_facet_counts_stay_exact_across_commits(self, make_lexical: Factory) -> None:
        # 'zzz' is the most frequent brand overall (4) but the rarest in the first commit (1 of 151
        # values, each other one twice): an engine that keeps only each segment's or shard's top values
        # before merging counts it 3
        first = [Product(id=f"a{v}-{j}", title="thing", brand=f"b{v:03d}") for v in range(150) for j in range(2)]
        first.append(Product(id="a-z", title="thing", brand="zzz"))
        second = [Product(id=f"b-z{j}", title="thing", brand="zzz") for j in range(3)]
        second += [Product(id=f"b-q{j}", title="thing", brand=f"q{j:03d}") for j in range(300)]
        index = _loaded(make_lexical, first)
        assert index.upsert(second).succeeded == len(second)
        index.commit()
        request = FacetRequest("brand", "terms", 10)
        counts = index.facet_counts([p.id for p in first + second], [request])[request.name]
        assert counts == reference_facet_counts(first + second, request)
        assert counts.values["zzz"] == 4

    def test_order_is_deterministic_and_every_prefix_is_stable(self, make_lexical: Factory) -> None:
        index = _loaded(make_lexical, FACETED)
        full = index.search("wireless mouse", k=20)
        assert index.search("wireless mouse", k=20) == full
        for k in (1, 3, 7):
            assert index.search("wireless mouse", k=k) == full[:k]

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


class VectorConformance:
    ENCODER = HashingEncoder(32)

    def _loaded(self, make_vectors: VectorFactory, products: list[Product] = FACETED) -> VectorIndex:
        index = make_vectors()
        index.upsert(products, self.ENCODER.encode([p.embedding_text() for p in products]))
        index.commit()
        return index

    @pytest.mark.parametrize("filters", ATTRIBUTE_FILTERS)
    def test_attribute_filters_match_reference_semantics(self, make_vectors: VectorFactory, filters: Filters) -> None:
        index = self._loaded(make_vectors)
        got = {h.product_id for h in index.search(self.ENCODER.encode_query("mouse"), k=50, filters=filters)}
        assert got == {p.id for p in FACETED if filters.matches(p)}

    def test_filters_follow_replacements_and_deletions(self, make_vectors: VectorFactory) -> None:
        index = self._loaded(make_vectors)
        black = Filters(attributes={"colour": ("black",)})
        replaced = Product("f01", "Wireless mouse M185", brand="Logitech", attributes={"colour": "Blue"})
        index.upsert([replaced], self.ENCODER.encode([replaced.embedding_text()]))
        index.delete(["f02"])
        query = self.ENCODER.encode_query("mouse")
        remaining = [replaced if p.id == "f01" else p for p in FACETED if p.id != "f02"]
        assert {h.product_id for h in index.search(query, k=50, filters=black)} == {
            p.id for p in remaining if black.matches(p)}
        blue = Filters(attributes={"colour": ("blue",)})
        assert [h.product_id for h in index.search(query, k=50, filters=blue)] == ["f01"]

    def test_filtered_search_returns_k_whenever_k_products_match(self, make_vectors: VectorFactory) -> None:
        # 9,000 products: a filter passing 60% of them leaves more survivors than approximate indexes
        # score exactly, so their filtered search (and its fallback when it comes back short) runs.
        products = [Product(f"g{i}", f"item {i}", attributes={"group": str(i % 10)}) for i in range(9000)]
        index = self._loaded(make_vectors, products)
        query = self.ENCODER.encode_query("item")
        for groups, k in ((("3",), 250), (("1", "2", "3", "4", "5", "6"), 700), (("9",), 400)):
            filters = Filters(attributes={"group": groups})
            hits = index.search(query, k=k, filters=filters)
            matching = sum(1 for p in products if filters.matches(p))
            assert len(hits) == min(k, matching)
            assert all(int(h.product_id[1:]) % 10 in {int(g) for g in groups} for h in hits)
