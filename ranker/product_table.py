"""The learned ranking stage's product table: what its features need of each product, computed once and
kept in flat numpy arrays.

A query's features compare the query with up to 400 candidates. Doing that with Python sets per product
costs milliseconds, most of it spent touching objects scattered in memory. Here every product's
query-independent data is stored once, as integer ids in a few contiguous arrays (a compressed sparse row
layout: a product's entries are one slice), so a query gathers its candidates' entries in a handful of
numpy operations:

- match entries: the distinct ids of the product's title terms, all-field terms, title bigrams and
  trigrams, numbers, quantities, units, brand terms, leaf-category terms and category-path terms, each
  tagged with its group (`GROUPS`). Counting, per candidate and group, the entries that are query ids
  gives every coverage and match feature at once (`match_counts`);
- lexical entries (when the lexical engine analyses in this process, as tantivy does): each analysed
  token's count per text field, and each field's stored length, for BM25 with the index's statistics
  (`local_field_scores`, the formula of `indexer.stores.bm25`);
- per product: six static features, the first title term, the sizes of the title, brand and leaf sets,
  and the title and all-field term strings (phrase tests run only on candidates that contain every
  query term).

Strings become ids through one vocabulary per table (kinds prefixed, so a trigram never equals a term).
A `ProductCache` owns the current table and adds products to it under a lock; past `capacity` products
it starts a new, empty table (products are re-read from the product store when next needed). Readers
keep the table `ensure` returned, so a query never mixes two tables; reading needs no lock (arrays only
grow, and a product's slot is published after its entries are written).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.stores.base import TEXT_FIELDS, field_texts
from indexer.stores.bm25 import FieldStatistics, stored_length
from ranker.terms import bigrams, numbers, phrase, quantities, terms, trigrams
from shopfusion.types import Product

GROUPS: tuple[str, ...] = ("title", "all", "bigram", "trigram", "number", "quantity", "unit", "brand", "leaf",
                           "category")
G = {name: i for i, name in enumerate(GROUPS)}
STATIC: tuple[str, ...] = ("title_length", "text_length", "has_brand", "has_category", "has_description",
                           "has_attributes")
DEFAULT_CAPACITY = 1_000_000
"""Products kept before the table starts again empty (about 1-2 KB each, more with long descriptions)."""

Analyze = Callable[[Product], Mapping[str, Sequence[str]]]


class _Column:
    """A growable 1-D (or rows x width) numpy array; `data[:size]` is valid."""

    def __init__(self, dtype: type, width: int = 0) -> None:
        self.width = width
        self.data: np.ndarray = np.zeros((1024, width) if width else 1024, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> int:
        start, end = self.size, self.size + len(values)
        if end > len(self.data):
            grown = np.zeros((max(end, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[start:end] = values
        self.size = end
        return start


@dataclass(frozen=True)
class QueryTerms:
    """A query read as the table reads products: its terms and the ids of what it can match."""

    terms: tuple[str, ...]
    distinct: frozenset[str]
    phrase: str
    bigrams: frozenset[str]
    trigrams: frozenset[str]
    numbers: frozenset[str]
    quantities: frozenset[str]
    units: frozenset[str]

    @classmethod
    def of(cls, query: str) -> QueryTerms:
        words = terms(query)
        found = quantities(words)
        return cls(tuple(words), frozenset(words), phrase(words), bigrams(words), trigrams(words), numbers(words),
                   frozenset(found), frozenset(q.split(" ", 1)[1] for q in found))

    def match_keys(self) -> list[str]:
        """Vocabulary keys of everything the query matches (terms cover the brand, leaf and category
        groups and the numbers; the other kinds have their own prefix)."""
        return ([f"t:{t}" for t in self.distinct] + [f"b:{b}" for b in self.bigrams] + [f"g:{g}" for g in self.trigrams]
                + [f"q:{q}" for q in self.quantities] + [f"u:{u}" for u in self.units])


class ProductCache:
    """The current `ProductTable` of a searcher, filled on demand (thread-safe)."""

    def __init__(self, analyze: Analyze | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        self.analyze = analyze
        self.capacity = capacity
        self.table = ProductTable(analyze)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, key: object) -> bool:
        return key in self.table.slots

    def clear(self) -> None:
        with self._lock:
            self.table = ProductTable(self.analyze)

    def ensure(self, products: Mapping[str, Product]) -> ProductTable:
        """The table holding every one of these products (key -> product), adding those it lacks."""
        with self._lock:
            table = self.table
            missing = {key: p for key, p in products.items() if key not in table.slots}
            if len(table) + len(missing) > self.capacity:
                table = self.table = ProductTable(self.analyze)
                missing = dict(products)
            for key, product in missing.items():
                table.add(key, product)
            return table


class ProductTable:
    """Query-independent product data of many products (see the module docstring)."""

    def __init__(self, analyze: Analyze | None = None) -> None:
        self.analyze = analyze
        self.vocab: dict[str, int] = {}
        self.slots: dict[str, int] = {}
        self.entry_ids = _Column(np.int32)
        self.entry_groups = _Column(np.int8)
        self.lexical_ids = _Column(np.int32)
        self.lexical_fields = _Column(np.int8)
        self.lexical_counts = _Column(np.float32)
        self.rows = _Column(np.int64, 8)  # entry start, entry count, lexical start, lexical count, first term, title/brand/leaf sizes
        self.static = _Column(np.float32, len(STATIC))
        self.lengths = _Column(np.float32, len(TEXT_FIELDS))
        self.title_text: list[str] = []
        self.all_text: list[str] = []

    def __len__(self) -> int:
        return len(self.slots)

    def _ids(self, keys: Sequence[str]) -> list[int]:
        vocab = self.vocab
        return [vocab.setdefault(key, len(vocab)) for key in keys]

    @classmethod
    def of(cls, products: Sequence[Product], analyze: Analyze | None = None) -> tuple[ProductTable, np.ndarray]:
        """A table of just these products and their slots (tests, one-off use)."""
        table = cls(analyze)
        for product in products:
            if product.id not in table.slots:
                table.add(product.id, product)
        return table, table.slots_of([p.id for p in products])

    def add(self, key: str, product: Product) -> None:
        """Add one product under `key` (callers serialise adds: `ProductCache.ensure`)."""
        texts = field_texts(product)
        title = terms(product.title)
        everything = [title, *(terms(text) for name, text in texts.items() if name != "title")]
        all_terms = [t for words in everything for t in words]
        found = set().union(*(quantities(words) for words in everything))
        brand = frozenset(terms(product.brand or ""))
        leaf = frozenset(terms(product.category_path[-1]) if product.category_path else ())
        groups = {
            "title": [f"t:{t}" for t in dict.fromkeys(title)],
            "all": [f"t:{t}" for t in dict.fromkeys(all_terms)],
            "bigram": [f"b:{b}" for b in bigrams(title)],
            "trigram": [f"g:{g}" for g in trigrams(title)],
            "number": [f"t:{n}" for n in numbers(all_terms)],
            "quantity": [f"q:{q}" for q in found],
            "unit": [f"u:{u}" for u in {q.split(' ', 1)[1] for q in found}],
            "brand": [f"t:{t}" for t in brand],
            "leaf": [f"t:{t}" for t in leaf],
            "category": [f"t:{t}" for t in dict.fromkeys(terms(product.category_text))],
        }
        ids = np.array(self._ids([k for keys in groups.values() for k in keys]), dtype=np.int32)
        tags = np.repeat(np.arange(len(GROUPS), dtype=np.int8), [len(groups[g]) for g in GROUPS])
        entry_start = self.entry_ids.extend(ids)
        self.entry_groups.extend(tags)
        lexical_start, lexical_count = 0, 0
        lengths = np.zeros(len(TEXT_FIELDS), dtype=np.float32)
        if self.analyze is not None:
            analysed = self.analyze(product)
            tokens, fields, counts = [], [], []
            for column, name in enumerate(TEXT_FIELDS):
                words = analysed.get(name) or ()
                lengths[column] = stored_length(len(words))
                for token, count in Counter(words).items():
                    tokens.append(f"x:{token}")
                    fields.append(column)
                    counts.append(count)
            lexical_start = self.lexical_ids.extend(np.array(self._ids(tokens), dtype=np.int32))
            self.lexical_fields.extend(np.array(fields, dtype=np.int8))
            self.lexical_counts.extend(np.array(counts, dtype=np.float32))
            lexical_count = len(tokens)
        static = [len(title), math.log1p(sum(len(text) for text in texts.values())), float(bool(product.brand)),
                  float(bool(product.category_path)), float(bool(product.description)), float(bool(product.attributes))]
        first = self._ids([f"t:{title[0]}"])[0] if title else -1
        self.static.extend(np.array([static], dtype=np.float32))
        self.lengths.extend(lengths[None, :])
        self.title_text.append(phrase(title))
        self.all_text.append(" | ".join(phrase(words) for words in everything))
        slot = self.rows.extend(np.array([[entry_start, len(ids), lexical_start, lexical_count, first,
                                           len(set(title)), len(brand), len(leaf)]], dtype=np.int64))
        self.slots[key] = slot  # published last: readers see a slot only once its entries are written

    def slots_of(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of these keys (KeyError for one the table lacks)."""
        slots = self.slots
        return np.fromiter((slots[key] for key in keys), dtype=np.int64, count=len(keys))

    # -- per query -------------------------------------------------------------------------------------------
    def _gather(self, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the concatenated slices `[start, start + count)` and the row each comes from."""
        total = int(counts.sum())
        if not total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ends = np.cumsum(counts)
        index = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)
        return index, np.repeat(np.arange(len(counts), dtype=np.int64), counts)

    def match_counts(self, slots: np.ndarray, query: QueryTerms, *, head: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """`(len(slots), len(GROUPS))`: per candidate and group, how many of its entries the query has;
        and per candidate, 1 when its title holds the term `head` (0 without `head`)."""
        n = len(slots)
        out = np.zeros((n, len(GROUPS)), dtype=np.float64)
        heads = np.zeros(n, dtype=np.float64)
        rows = self.rows.data[slots]
        index, row = self._gather(rows[:, 0], rows[:, 1])
        vocab = self.vocab
        wanted = [vocab[key] for key in query.match_keys() if key in vocab]
        if not len(index) or not wanted:
            return out, heads
        ids = self.entry_ids.data[index]
        groups = self.entry_groups.data[index]
        mask = np.zeros(len(vocab) + 1, dtype=bool)  # calloc: only the pages touched are zeroed
        mask[wanted] = True
        hit = mask[ids]
        flat = row[hit] * len(GROUPS) + groups[hit]
        out.flat[:] = np.bincount(flat, minlength=n * len(GROUPS))
        key = vocab.get(f"t:{head}") if head is not None else None
        if key is not None:
            heads[row[(ids == key) & (groups == G["title"])]] = 1.0
        return out, heads

    def first_term_in(self, slots: np.ndarray, query: QueryTerms) -> np.ndarray:
        first = self.rows.data[slots, 4]
        wanted = {self.vocab[f"t:{t}"] for t in query.distinct if f"t:{t}" in self.vocab}
        return np.array([f in wanted for f in first.tolist()], dtype=np.float64)

    def sizes(self, slots: np.ndarray) -> np.ndarray:
        """`(len(slots), 3)`: distinct title terms, brand terms, leaf-category terms."""
        return self.rows.data[slots, 5:8].astype(np.float64)

    def local_field_scores(self, slots: np.ndarray, stats: FieldStatistics) -> np.ndarray:
        """Per-field BM25 with an index's statistics, from the analysed tokens kept here (the formula and
        stored lengths of `indexer.stores.bm25.bm25_matrix`)."""
        n = len(slots)
        out = np.zeros((n, len(TEXT_FIELDS)), dtype=np.float64)
        fields = [i for i, name in enumerate(TEXT_FIELDS) if name in stats.docs and stats.avg_length.get(name, 0) > 0]
        if not n or not stats.terms or not fields:
            return out.astype(np.float32)
        vocab = self.vocab
        term_of = np.zeros(len(vocab) + 1, dtype=np.int16)  # query term index + 1; calloc: touched pages only
        idf = np.zeros((len(stats.terms), len(TEXT_FIELDS)), dtype=np.float64)
        for j, term in enumerate(stats.terms):
            key = vocab.get(f"x:{term}")
            if key is not None and not term_of[key]:
                term_of[key] = j + 1
            for i in fields:
                idf[j, i] = stats.idf(TEXT_FIELDS[i], term)
        rows = self.rows.data[slots]
        index, row = self._gather(rows[:, 2], rows[:, 3])
        j = term_of[self.lexical_ids.data[index]].astype(np.int64) - 1
        hit = j >= 0
        if not hit.any():
            return out.astype(np.float32)
        index, row, j = index[hit], row[hit], j[hit]
        field = self.lexical_fields.data[index].astype(np.int64)
        tf = self.lexical_counts.data[index].astype(np.float64)
        avg = np.array([stats.avg_length.get(name, 1.0) or 1.0 for name in TEXT_FIELDS], dtype=np.float64)
        lengths = self.lengths.data[slots].astype(np.float64)
        norm = stats.k1 * (1.0 - stats.b + stats.b * lengths / avg)
        contribution = idf[j, field] * tf * (stats.k1 + 1.0) / (tf + norm[row, field])
        out.flat[:] = np.bincount(row * len(TEXT_FIELDS) + field, weights=contribution, minlength=n * len(TEXT_FIELDS))
        return out.astype(np.float32)


__all__ = ["DEFAULT_CAPACITY", "GROUPS", "STATIC", "ProductCache", "ProductTable", "QueryTerms"]
