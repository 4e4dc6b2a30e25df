"""Filters, facets, paging and sorting through the searcher, with each lexical engine.

The relevant set of a search is what both legs retrieved under the filters (each leg's top `depth`),
fused; pages partition it, sorting re-orders it, facets count it. With `depth` above the catalog size the
relevant set is every product that passes the filters, so both engines must give identical facets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.attributes import CATALOG_FILE
from indexer.pipeline import run_index
from ranker.searcher import HybridSearcher
from ranker.view import ResultView
from shopfusion.client import Client
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, QueryError
from shopfusion.types import AttributeFilter, Filters, Results, normalize_brand
from tests.plugins.catalogs import FACETED, write_jsonl

SETTINGS = (Settings().replace("index", model="hash:32", analyzer="standard")
            .replace("search", policy="none", depth=50))
BY_ID = {p.id: p for p in FACETED}
FILTERS = [
    Filters(),
    Filters(attributes={"colour": ("black",)}),
    Filters(attributes={"colour": ("black", "dark grey"), "connection": ("usb", "wireless")}),
    Filters(attributes=[AttributeFilter("weight", min=80, below=500)]),
    Filters(brands=("razer",), price_max=100),
    Filters(category=("computers", "mice"), attributes=[AttributeFilter("buttons", min=5)]),
    Filters(attributes={"colour": ("purple",)}),
]
ENGINES = ["tantivy", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)]


def _index(tmp: Path, settings: Settings) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    run_index(write_jsonl(tmp / "c.jsonl", [p.to_dict() for p in FACETED]), tmp / "idx", settings=settings)
    return tmp / "idx"


@pytest.fixture(scope="module", params=ENGINES)
def searcher(request, tmp_path_factory) -> Iterator[HybridSearcher]:  # type: ignore[no-untyped-def]
    settings = SETTINGS
    if request.param == "elasticsearch":
        settings = Settings(elasticsearch=request.getfixturevalue("es_settings"), index=SETTINGS.index,
                            search=SETTINGS.search).replace("index", lexical="elasticsearch")
    searcher = HybridSearcher(_index(tmp_path_factory.mktemp(request.param), settings), settings)
    yield searcher
    searcher.close()


def _all(searcher: HybridSearcher, query: str, **kwargs) -> Results:  # type: ignore[no-untyped-def]
    return searcher.search(query, k=100, **kwargs)


@pytest.mark.parametrize("filters", FILTERS)
def test_filtered_hybrid_search_returns_k_whenever_k_products_match(searcher: HybridSearcher,
                                                                    filters: Filters) -> None:
    matching = {p.id for p in FACETED if filters.matches(p)}
    for query in ("wireless mouse", "zzzqqq nothing matches these words"):  # the second: the dense leg alone
        for k in (1, 3, 10):
            results = searcher.search(query, k=k, filters=filters)
            assert len(results.hits) == min(k, len(matching))
            assert {h.product_id for h in results.hits} <= matching


def test_pages_partition_the_relevant_set_in_a_stable_order(searcher: HybridSearcher) -> None:
    filters = Filters(attributes={"connection": ("wireless", "usb")})
    whole = _all(searcher, "wireless mouse", filters=filters)
    seen: list[str] = []
    offset = 0
    while True:
        page = searcher.search("wireless mouse", k=3, filters=filters, view=ResultView(offset=offset))
        assert page.page is not None and page.page.total == len(whole.hits) and page.page.size == 3
        assert [h.rank for h in page.hits] == list(range(offset + 1, offset + 1 + len(page.hits)))
        if not page.hits:
            break
        assert page.page.number == offset // 3 + 1
        seen += [h.product_id for h in page.hits]
        offset += 3
    assert seen == [h.product_id for h in whole.hits]  # no gap, no repeat, the same order as one big page
    assert len(seen) == sum(1 for p in FACETED if filters.matches(p))


def test_a_page_past_the_relevant_set_is_empty_and_says_how_many_there_are(searcher: HybridSearcher) -> None:
    results = searcher.search("mouse", k=5, view=ResultView.for_page(40, 5))
    assert results.hits == () and results.page is not None
    assert results.page.offset == 195 and results.page.total == len(FACETED) and results.page.exhausted
    assert results.to_dict()["page"]["total"] == len(FACETED)


@pytest.mark.parametrize(("sort", "key"), [
    ("price", lambda p: p.price),
    ("-price", lambda p: p.price),
    ("weight", lambda p: float(p.attributes["weight"]) if "weight" in p.attributes else None),
    ("-min_temp", lambda p: float(p.attributes["min_temp"]) if "min_temp" in p.attributes else None),
    ("brand", lambda p: normalize_brand(p.brand) if p.brand else None),
])
def test_sorting_reorders_the_relevant_set_only(searcher: HybridSearcher, sort: str, key) -> None:  # type: ignore[no-untyped-def]
    relevance = [h.product_id for h in _all(searcher, "wireless mouse").hits]
    results = _all(searcher, "wireless mouse", view=ResultView(sort=sort))
    assert results.page is not None and results.page.sort == sort
    order = [h.product_id for h in results.hits]
    assert sorted(order) == sorted(relevance)  # the same set, re-ordered
    present = [pid for pid in relevance if key(BY_ID[pid]) is not None]
    expected = sorted(present, key=lambda pid: key(BY_ID[pid]), reverse=sort.startswith("-"))
    expected += [pid for pid in relevance if key(BY_ID[pid]) is None]  # no value: last, in relevance order
    assert order == expected
    paged = searcher.search("wireless mouse", k=4, view=ResultView(offset=4, sort=sort))
    assert [h.product_id for h in paged.hits] == order[4:8]


def test_facets_count_the_relevant_set(searcher: HybridSearcher) -> None:
    filters = Filters(attributes={"connection": ("wireless",)})
    results = _all(searcher, "mouse", filters=filters,
                   view=ResultView(facets="brand,category,price,colour,weight", facet_size=3))
    relevant = [BY_ID[h.product_id] for h in results.hits]
    facets = results.facets
    assert facets is not None and facets.over == len(relevant) == 7
    brands = Counter(normalize_brand(p.brand) for p in relevant if p.brand)
    top = sorted(brands.items(), key=lambda item: (-item[1], item[0]))
    assert facets["brand"].counts() == dict(top[:3])
    assert facets["brand"].other == sum(c for _, c in top[3:])
    assert facets["brand"].missing == sum(1 for p in relevant if not p.brand)
    assert facets["brand"].buckets[0].label == "Logitech"
    levels = {b.value: b.level for b in facets["category"].buckets}
    assert levels["computers"] == 1 and levels["computers > mice"] == 2
    assert facets["category"].counts()["computers"] == sum(1 for p in relevant if p.category_path[:1] == ("Computers",))
    prices = [p.price for p in relevant if p.price is not None]
    price = facets["price"]
    assert sum(b.count for b in price.buckets) == len(prices) and price.missing == len(relevant) - len(prices)
    assert (price.min, price.max) == (min(prices), max(prices))
    for bucket in price.buckets:  # a bucket's value narrows the search to exactly its count
        narrowed = _all(searcher, "mouse", filters=Filters(
            attributes=filters.attributes, price_min=bucket.low, price_below=bucket.high))
        assert len(narrowed.hits) == bucket.count, bucket
    assert facets["colour"].counts()["black"] == sum(
        1 for p in relevant if p.attributes.get("colour", p.attributes.get("Colour", "")).strip().lower() == "black")
    assert facets["weight"].kind == "range" and facets["weight"].missing == 1  # f12 has no weight
    data = results.to_dict()["facets"]
    assert data["over"] == 7 and data["fields"]["brand"]["buckets"][0]["label"] == "Logitech"


def test_facets_follow_the_mode(searcher: HybridSearcher) -> None:
    lexical = searcher.search("keyboard", k=10, mode="lexical", view=ResultView(facets=("brand",)))
    assert lexical.facets is not None and lexical.facets.over == len(lexical.hits) == 2
    dense = searcher.search("keyboard", k=3, mode="dense", view=ResultView(facets=("brand",)))
    assert dense.facets is not None and dense.facets.over == len(FACETED)


@pytest.mark.parametrize(("view", "message"), [
    (ResultView(facets="color"), "unknown attribute 'color' .close names: colour"),
    (ResultView(sort="colr"), "close names: colour"),
    (ResultView(sort="-relevance"), "drop the '-'"),
    (ResultView(sort="-"), "names no field"),
    (ResultView(facets="brand", facet_size=0), "facet size"),
])
def test_view_errors_say_how_to_fix_them(searcher: HybridSearcher, view: ResultView, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        searcher.search("mouse", view=view)


def test_filter_errors_are_caught_before_the_legs_run(searcher: HybridSearcher) -> None:
    with pytest.raises(QueryError, match="text attribute"):
        searcher.search("mouse", filters=Filters(attributes=[AttributeFilter("colour", max=3)]))
    with pytest.raises(QueryError, match="numeric attribute"):
        searcher.search("mouse", filters=Filters(attributes={"weight": ("heavy",)}))


def test_view_argument_checks() -> None:
    with pytest.raises(QueryError, match="page must be"):
        ResultView.for_page(0, 10)
    with pytest.raises(QueryError, match="offset must be"):
        ResultView(offset=-1)
    assert ResultView(facets=["brand, category", "brand"]).facets == ("brand", "category")


@pytest.mark.elasticsearch
def test_both_engines_give_the_same_facets_and_pages(tmp_path: Path, es_settings) -> None:  # type: ignore[no-untyped-def]
    es = Settings(elasticsearch=es_settings, index=SETTINGS.index, search=SETTINGS.search).replace(
        "index", lexical="elasticsearch")
    searchers = [HybridSearcher(_index(tmp_path / "t", SETTINGS), SETTINGS),
                 HybridSearcher(_index(tmp_path / "e", es), es)]
    view = ResultView(facets="brand,category,price,colour,weight,min_temp", sort="-price")
    try:
        for filters in FILTERS:
            a, b = (s.search("wireless mouse", k=4, filters=filters, view=view) for s in searchers)
            assert a.facets == b.facets and a.page == b.page
            assert [h.product_id for h in a.hits] == [h.product_id for h in b.hits]
    finally:
        for searcher in searchers:
            searcher.close()


def test_client_pages_sorts_and_counts(tmp_path: Path) -> None:
    client = Client(_index(tmp_path, SETTINGS), settings=SETTINGS)
    results = client.search("mouse", k=2, page=2, sort="price", facets="brand",
                            filters=Filters(attributes={"colour": ("black",)}))
    assert results.page is not None and results.page.offset == 2 and results.facets is not None
    assert [h.rank for h in results.hits] == [3, 4]
    with pytest.raises(QueryError, match="page or offset"):
        client.search("mouse", page=2, offset=3)
    with pytest.raises(QueryError, match="shopfusion.Filters"):
        client.search("mouse", filters={"brands": ["HP"]})  # type: ignore[arg-type]
    assert client.attributes().field("colour").products == 12
    client.close()


def test_an_index_built_before_attribute_filters_says_to_reindex(tmp_path: Path) -> None:
    index_dir = _index(tmp_path, SETTINGS)
    removed = (CATALOG_FILE, "vectors/columns.json", "vectors/columns.npz")
    for version in (index_dir / "versions").iterdir():
        for name in removed:
            (version / name).unlink()
        for record in (index_dir / "manifest.json", version / "version.json"):  # as such a build recorded
            if record.is_file():
                data = json.loads(record.read_text(encoding="utf-8"))
                data["files"] = {k: v for k, v in data.get("files", {}).items() if k not in removed}
                record.write_text(json.dumps(data), encoding="utf-8")
    searcher = HybridSearcher(index_dir, SETTINGS)
    assert searcher.search("mouse", k=2).hits  # plain search still works
    with pytest.raises(IndexStateError, match="re-index it once"):
        searcher.search("mouse", filters=Filters(attributes={"colour": ("black",)}))
    with pytest.raises(IndexStateError, match="re-index it once"):
        searcher.search("mouse", filters=Filters(brands=("razer",)))
    searcher.close()
    assert run_index(write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in FACETED]), index_dir,
                     settings=SETTINGS).reused_vectors == len(FACETED)  # re-indexing upgrades it, no re-embedding
    upgraded = HybridSearcher(index_dir, SETTINGS)
    assert upgraded.search("mouse", filters=Filters(brands=("razer",))).hits
    upgraded.close()
