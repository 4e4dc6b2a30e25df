"""Filter and sort fields of the products of one vector index, as numpy columns aligned with its rows.

The vector leg applies `Filters` as a boolean mask over its rows before it takes the top k (so a
filtered query never comes back short), and the searcher sorts the relevant set by these columns. One
row per product:

- `category` and `brand`: integer codes into vocabularies of normalised values (`normalize_category`,
  `normalize_brand`); a category prefix filter is the set of codes whose path has that prefix;
- `price`: float64, NaN for none;
- attributes: one sparse column per attribute (the rows that have it, a value code, and the value's
  number or NaN), so a catalog with thousands of attributes costs only the values it has.

Every test is a vectorised numpy operation (`np.isin`, comparisons), with the semantics of
`Filters.matches`. Writes append to pending lists that are compacted on the next read, so building a
version chunk by chunk stays linear.

Files: `columns.json` (vocabularies, per-attribute slices) and `columns.npz` (the arrays).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shopfusion.errors import IndexStateError
from shopfusion.types import (
    CATEGORY_SEPARATOR,
    AttributeFilter,
    Filters,
    Product,
    attribute_values,
    normalize_brand,
    normalize_category,
    normalize_text,
    value_number,
)

COLUMNS_FORMAT = 1


class _Vocabulary:
    """Strings <-> dense integer codes; code 0 is the empty string (no value)."""

    def __init__(self, words: Sequence[str] = ("",)) -> None:
        self.words: list[str] = list(words)
        self.codes = {word: code for code, word in enumerate(self.words)}

    def code(self, word: str) -> int:
        found = self.codes.get(word)
        if found is None:
            found = self.codes[word] = len(self.words)
            self.words.append(word)
        return found


@dataclass
class _Sparse:
    """One attribute: the rows that have it, their value codes and numbers (NaN when not a number)."""

    rows: np.ndarray
    codes: np.ndarray
    numbers: np.ndarray
    vocabulary: _Vocabulary

    def row_index(self, n_rows: int) -> np.ndarray:
        """Entry of each row, -1 where the row lacks the attribute (for sorting)."""
        index = np.full(n_rows, -1, dtype=np.int64)
        index[self.rows] = np.arange(self.rows.size)
        return index


class ProductColumns:
    """Columns of one vector index; `append` / `replace` / `keep` mirror its row operations."""

    def __init__(self) -> None:
        self.category_vocabulary = _Vocabulary()
        self.brand_vocabulary = _Vocabulary()
        self.category = np.zeros(0, dtype=np.int32)
        self.brand = np.zeros(0, dtype=np.int32)
        self.price = np.zeros(0, dtype=np.float64)
        self.attributes: dict[str, _Sparse] = {}
        self._pending: dict[str, list[tuple[int, str]]] = {}

    def __len__(self) -> int:
        return int(self.price.size)

    # -- writing -----------------------------------------------------------------------------------
    def append(self, products: Sequence[Product]) -> None:
        """Add one row per product, after the existing rows."""
        start = len(self)
        self.category = np.concatenate([self.category, np.array(
            [self.category_vocabulary.code(normalize_category(p.category_path)) for p in products], dtype=np.int32)])
        self.brand = np.concatenate([self.brand, np.array(
            [self.brand_vocabulary.code(normalize_brand(p.brand or "")) for p in products], dtype=np.int32)])
        self.price = np.concatenate([self.price, np.array([_price(p) for p in products], dtype=np.float64)])
        for offset, product in enumerate(products):
            for key, value in attribute_values(product).items():
                self._pending.setdefault(key, []).append((start + offset, value))

    def replace(self, rows: Sequence[int], products: Sequence[Product]) -> None:
        """Overwrite the fields of existing rows."""
        if not rows:
            return
        row_array = np.asarray(rows, dtype=np.int64)
        for row, product in zip(rows, products, strict=True):
            self.category[row] = self.category_vocabulary.code(normalize_category(product.category_path))
            self.brand[row] = self.brand_vocabulary.code(normalize_brand(product.brand or ""))
            self.price[row] = _price(product)
        self._compact()
        for column in self.attributes.values():
            keep = ~np.isin(column.rows, row_array)
            column.rows, column.codes, column.numbers = column.rows[keep], column.codes[keep], column.numbers[keep]
        for row, product in zip(rows, products, strict=True):
            for key, value in attribute_values(product).items():
                self._pending.setdefault(key, []).append((row, value))

    def keep(self, keep: np.ndarray) -> None:
        """Drop the rows where `keep` is false; later rows move up."""
        self._compact()
        new_row = np.cumsum(keep) - 1
        self.category, self.brand, self.price = self.category[keep], self.brand[keep], self.price[keep]
        for column in self.attributes.values():
            stays = keep[column.rows]
            column.rows = new_row[column.rows[stays]].astype(np.int32)
            column.codes, column.numbers = column.codes[stays], column.numbers[stays]

    def _compact(self) -> None:
        """Fold pending attribute values into the sparse columns."""
        for key, entries in self._pending.items():
            column = self.attributes.get(key)
            if column is None:
                column = self.attributes[key] = _Sparse(np.zeros(0, np.int32), np.zeros(0, np.int32),
                                                        np.zeros(0, np.float64), _Vocabulary())
            rows = np.fromiter((row for row, _ in entries), np.int32, count=len(entries))
            codes = np.fromiter((column.vocabulary.code(v) for _, v in entries), np.int32, count=len(entries))
            numbers = np.fromiter((_number(v) for _, v in entries), np.float64, count=len(entries))
            order = np.argsort(np.concatenate([column.rows, rows]), kind="stable")
            column.rows = np.concatenate([column.rows, rows])[order]
            column.codes = np.concatenate([column.codes, codes])[order]
            column.numbers = np.concatenate([column.numbers, numbers])[order]
        self._pending.clear()

    # -- filtering -----------------------------------------------------------------------------------
    def mask(self, filters: Filters) -> np.ndarray:
        """Rows that pass `filters`, with the semantics of `Filters.matches`."""
        self._compact()
        mask = np.ones(len(self), dtype=bool)
        if filters.category:
            key = filters.category_key
            prefix = key + CATEGORY_SEPARATOR
            codes = [code for code, path in enumerate(self.category_vocabulary.words)
                     if path and (path == key or path.startswith(prefix))]
            mask &= np.isin(self.category, codes)
        if filters.brands:
            codes = [self.brand_vocabulary.codes[b] for b in filters.brand_keys if b in self.brand_vocabulary.codes]
            mask &= np.isin(self.brand, codes)
        if filters.has_price:
            mask &= _in_range(self.price, filters.price_min, filters.price_max, filters.price_below)
        for attribute in filters.attributes:
            mask &= self._attribute_mask(attribute)
        return mask

    def _attribute_mask(self, attribute: AttributeFilter) -> np.ndarray:
        passed = np.zeros(len(self), dtype=bool)
        column = self.attributes.get(attribute.key)
        if column is None:
            return passed
        selected = np.ones(column.rows.size, dtype=bool)
        if attribute.values:
            codes = [column.vocabulary.codes[v] for v in attribute.value_keys if v in column.vocabulary.codes]
            selected &= np.isin(column.codes, codes)
        if attribute.is_range:
            selected &= _in_range(column.numbers, attribute.min, attribute.max, attribute.below)
        passed[column.rows[selected]] = True
        return passed

    # -- sorting -------------------------------------------------------------------------------------
    def sort_values(self, rows: np.ndarray, field: str, numeric: bool) -> list[Any]:
        """The value of `field` (`price`, `brand`, `category` or an attribute name) for each row, as a
        float (numeric) or a normalised string; None where the row has none."""
        self._compact()
        if field == "price":
            return [None if np.isnan(v) else float(v) for v in self.price[rows]]
        if field in ("brand", "category"):
            column, vocabulary = ((self.brand, self.brand_vocabulary) if field == "brand"
                                  else (self.category, self.category_vocabulary))
            return [vocabulary.words[c] or None for c in column[rows]]
        key = normalize_text(field[len("attributes."):] if field.startswith("attributes.") else field)
        sparse = self.attributes.get(key)
        if sparse is None:
            return [None] * len(rows)
        entries = sparse.row_index(len(self))[rows]
        if numeric:
            return [None if e < 0 or np.isnan(sparse.numbers[e]) else float(sparse.numbers[e]) for e in entries]
        return [None if e < 0 else sparse.vocabulary.words[sparse.codes[e]] for e in entries]

    # -- files ---------------------------------------------------------------------------------------
    def save(self, directory: Path, write: Any) -> None:
        """Write `columns.json` and `columns.npz` with `write(path, bytes)` (the caller's atomic write)."""
        import io

        self._compact()
        keys = sorted(self.attributes)
        bounds, start = {}, 0
        for key in keys:
            end = start + self.attributes[key].rows.size
            bounds[key] = {"start": start, "end": end, "values": self.attributes[key].vocabulary.words}
            start = end
        meta = {"format": COLUMNS_FORMAT, "rows": len(self), "category": self.category_vocabulary.words,
                "brand": self.brand_vocabulary.words, "attributes": bounds}

        def joined(name: str, dtype: Any) -> np.ndarray:
            parts = [getattr(self.attributes[key], name) for key in keys]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        buffer = io.BytesIO()
        np.savez(buffer, category=self.category, brand=self.brand, price=self.price,
                 rows=joined("rows", np.int32), codes=joined("codes", np.int32),
                 numbers=joined("numbers", np.float64))
        write(directory / "columns.npz", buffer.getvalue())
        write(directory / "columns.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, directory: Path, rows: int) -> ProductColumns:
        try:
            meta = json.loads((directory / "columns.json").read_text(encoding="utf-8"))
            with np.load(directory / "columns.npz") as arrays:
                data = {name: arrays[name] for name in arrays.files}
        except FileNotFoundError as exc:
            raise IndexStateError(
                f"{directory} has no filter columns ({os.path.basename(str(exc.filename))} missing): the index"
                " was built by a shopfusion without attribute filters; re-index it once"
                " (`shopfusion index CATALOG --index DIR`; unchanged products keep their vectors)") from exc
        if meta.get("format") != COLUMNS_FORMAT or int(meta["rows"]) != rows:
            raise IndexStateError(f"filter columns in {directory} do not fit the vectors ({meta.get('rows')} rows"
                                  f" for {rows}): rebuild the index with `shopfusion index`")
        columns = cls()
        columns.category_vocabulary = _Vocabulary(meta["category"])
        columns.brand_vocabulary = _Vocabulary(meta["brand"])
        columns.category, columns.brand, columns.price = data["category"], data["brand"], data["price"]
        for key, bounds in meta["attributes"].items():
            part = slice(bounds["start"], bounds["end"])
            columns.attributes[key] = _Sparse(data["rows"][part], data["codes"][part], data["numbers"][part],
                                              _Vocabulary(bounds["values"]))
        return columns


def _price(product: Product) -> float:
    return np.nan if product.price is None else float(product.price)


def _number(value: str) -> float:
    number = value_number(value)
    return np.nan if number is None else number


def _in_range(values: np.ndarray, low: float | None, high: float | None, below: float | None) -> np.ndarray:
    """Vectorised `shopfusion.types.in_range` (NaN never passes)."""
    with np.errstate(invalid="ignore"):
        passed = ~np.isnan(values)
        if low is not None:
            passed &= values >= low
        if high is not None:
            passed &= values <= high
        if below is not None:
            passed &= values < below
    return passed


__all__ = ["ProductColumns"]
