"""The vector leg's filter and sort columns: masks equal the reference semantics through every row
operation and a save / load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.stores.columns import ProductColumns
from indexer.stores.faiss_store import _atomic_write
from shopfusion.errors import IndexStateError
from shopfusion.types import Filters, Product
from tests.indexer.stores.conformance import ATTRIBUTE_FILTERS
from tests.plugins.catalogs import FACETED, TINY


def _columns(products: list[Product]) -> ProductColumns:
    columns = ProductColumns()
    for start in range(0, len(products), 5):  # in chunks, as the pipeline writes them
        columns.append(products[start:start + 5])
    return columns


def _expected(products: list[Product], filters: Filters) -> list[bool]:
    return [filters.matches(p) for p in products]


@pytest.mark.parametrize("filters", [*ATTRIBUTE_FILTERS, Filters(category=("computers",)),
                                     Filters(brands=("RAZER", "trust"))])
def test_masks_follow_the_reference_through_saving_and_loading(tmp_path: Path, filters: Filters) -> None:
    columns = _columns(FACETED)
    assert columns.mask(filters).tolist() == _expected(FACETED, filters)
    columns.save(tmp_path, _atomic_write)
    loaded = ProductColumns.load(tmp_path, len(FACETED))
    assert loaded.mask(filters).tolist() == _expected(FACETED, filters)


def test_replace_and_keep_move_rows_with_their_values() -> None:
    products = list(FACETED)
    columns = _columns(products)
    products[3] = Product("f04", "Gaming mouse", brand="Logitech", attributes={"colour": "Black", "weight": "99"})
    columns.replace([3], [products[3]])
    keep = np.array([i not in (0, 5) for i in range(len(products))])
    columns.keep(keep)
    products = [p for p, k in zip(products, keep, strict=True) if k]
    for filters in [*ATTRIBUTE_FILTERS, Filters(brands=("logitech",))]:
        assert columns.mask(filters).tolist() == _expected(products, filters), filters


def test_sort_values() -> None:
    columns = _columns(TINY + FACETED)
    rows = np.array([0, 10, 12, 15])  # p01, p11 (no price), f01, f04
    assert columns.sort_values(rows, "price", numeric=True) == [129.0, None, 19.99, 59.0]
    assert columns.sort_values(rows, "brand", numeric=False) == ["makita", "philips", "logitech", "razer"]
    assert columns.sort_values(rows, "category", numeric=False)[0] == "tools > power tools > drills"
    assert columns.sort_values(rows, "attributes.weight", numeric=True) == [None, None, 75.0, 101.5]
    assert columns.sort_values(rows, "colour", numeric=False) == [None, None, "black", "dark grey"]
    assert columns.sort_values(rows, "unknown", numeric=False) == [None] * 4


def test_missing_or_mismatched_columns_say_to_reindex(tmp_path: Path) -> None:
    with pytest.raises(IndexStateError, match="re-index it once"):
        ProductColumns.load(tmp_path, 3)
    _columns(TINY).save(tmp_path, _atomic_write)
    with pytest.raises(IndexStateError, match="do not fit the vectors"):
        ProductColumns.load(tmp_path, 3)
