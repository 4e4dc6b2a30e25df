"""The attribute catalog: built at index time, saved with the version, and used to check queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.attributes import CATALOG_FILE, AttributeCatalog, CatalogBuilder, nice_edges
from indexer.pipeline import run_index
from shopfusion.config import Settings
from shopfusion.errors import IndexStateError, QueryError
from shopfusion.types import AttributeFilter, Filters, Product
from tests.plugins.catalogs import FACETED, write_jsonl


@pytest.fixture(scope="module")
def catalog() -> AttributeCatalog:
    builder = CatalogBuilder()
    builder.add_all(FACETED)
    return builder.build()


def test_kinds_counts_and_labels(catalog: AttributeCatalog) -> None:
    assert catalog.products == len(FACETED)
    colour = catalog.field("colour")
    assert colour.kind == "text" and colour.products == 12
    assert colour.values[0] == ("black", "Black", 5)  # five spellings, one value, the first spelling as label
    assert colour.label_of("dark grey") == "Dark\u00a0Grey" and colour.label_of("unseen") == "unseen"
    weight = catalog.field("Weight")
    assert weight.kind == "numeric" and (weight.min, weight.max) == (60.0, 1250.0) and weight.edges
    assert catalog.field("min_temp").min == -40.5
    assert catalog.field("connection").kind == "text"
    brand, category, price = catalog.field("brand"), catalog.field("category"), catalog.field("price")
    assert brand.builtin and brand.products == 13 and brand.values[0][:2] == ("logitech", "Logitech")
    assert category.kind == "category" and ("computers > mice", "Computers > Mice", 6) in category.values
    assert price.kind == "numeric" and price.products == 13 and price.max == 129.0


def test_builtin_names_win_and_attributes_prefix_reaches_the_attribute() -> None:
    builder = CatalogBuilder()
    builder.add(Product("1", "Toner", price=49.95, attributes={"price": "4995"}))
    catalog = builder.build()
    assert catalog.field("price").builtin and catalog.field("price").max == 49.95
    assert catalog.field("attributes.price").max == 4995.0
    assert catalog.attribute("price").max == 4995.0


def test_save_and_load_round_trip(catalog: AttributeCatalog, tmp_path: Path) -> None:
    catalog.save(tmp_path / CATALOG_FILE)
    loaded = AttributeCatalog.load(tmp_path / CATALOG_FILE)
    assert loaded.fields == catalog.fields and loaded.products == catalog.products
    with pytest.raises(IndexStateError, match="re-index it once"):
        AttributeCatalog.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(IndexStateError, match="unreadable"):
        AttributeCatalog.load(tmp_path / "bad.json")


def test_unknown_attribute_lists_close_names(catalog: AttributeCatalog) -> None:
    with pytest.raises(QueryError, match=r"unknown attribute 'color' \(close names: colour\).*shopfusion attributes"):
        catalog.check_filters(Filters(attributes={"color": ("black",)}))
    with pytest.raises(QueryError, match="close names: .*min_temp"):
        catalog.field("temp")
    assert "material" in catalog.close_names("materials")


def test_range_on_text_and_words_on_numbers_are_errors(catalog: AttributeCatalog) -> None:
    with pytest.raises(QueryError, match="'colour' is a text attribute: a range applies to numeric.*colour=black"):
        catalog.check_filters(Filters(attributes=[AttributeFilter("colour", min=1)]))
    with pytest.raises(QueryError, match=r"'weight' is a numeric attribute \(60 to 1250\): 'heavy' is not a number"):
        catalog.check_filters(Filters(attributes={"weight": ("heavy",)}))
    catalog.check_filters(Filters(attributes=[AttributeFilter("weight", ("93.0",), min=1)]))


def test_nice_edges() -> None:
    assert nice_edges(3.0, 2000.0) == (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    assert nice_edges(0.5, 20000.0) == (1.0, 10.0, 100.0, 1000.0, 10000.0)
    assert nice_edges(-20.0, 60.0) == (-20.0, 0.0, 20.0, 40.0, 60.0)
    assert nice_edges(5.0, 5.0) == () and nice_edges(float("nan"), 1.0) == ()
    for low, high in [(0.01, 7.3), (1.0, 1e9), (-1e6, -3.0), (0.0, 0.004)]:
        edges = nice_edges(low, high)
        assert 1 <= len(edges) <= 9 and list(edges) == sorted(set(edges))


def test_index_run_writes_the_catalog_with_the_version(tmp_path: Path) -> None:
    settings = Settings().replace("index", model="hash:16")
    summary = run_index(write_jsonl(tmp_path / "c.jsonl", [p.to_dict() for p in FACETED]), tmp_path / "idx",
                        settings=settings)
    path = tmp_path / "idx" / "versions" / summary.version / CATALOG_FILE
    assert AttributeCatalog.load(path).field("colour").products == 12
