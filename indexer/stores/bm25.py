"""BM25 of products an index does not hold, computed with that index's statistics.

Re-ranking receives candidates from another engine; some are not in the index. Scoring them in a
throw-away index of just the candidates would give them (and the indexed candidates beside them) other
document frequencies and field lengths than search uses, so the same product would score differently in
`search` and in `rerank`. Instead each lexical engine reports its statistics for the query's terms
(`FieldStatistics`: per field, the document count, the average field length and each term's document
frequency) and the analysed tokens of the outside products; `bm25_matrix` scores them with the formula
both engines use:

    score(field) = sum over query terms t of  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

where `dl` is the field's length in tokens as both engines store it: one byte per field and document
(Lucene's `SmallFloat.intToByte4`, which tantivy copies), exact below 40 tokens and coarser above.

>>> stats = FieldStatistics(terms=("drill",), docs={"title": 3.0}, avg_length={"title": 4.0},
...                         doc_freq={"title": {"drill": 2}})
>>> m = bm25_matrix(stats, [{"title": ["cordless", "drill"]}], fields=("title",))
>>> round(float(m[0, 0]), 4)
0.5909
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.stores.base import TEXT_FIELDS

DEFAULT_K1 = 1.2
DEFAULT_B = 0.75


_FREE_VALUES = 24
"""Lucene `SmallFloat`: lengths below this are stored as themselves, above it as a 4-bit float."""


def _long_to_int4(value: int) -> int:
    bits = value.bit_length()
    if bits < 4:
        return value
    shift = bits - 4
    return ((value >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(code: int) -> int:
    bits, shift = code & 0x07, (code >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


def stored_length(length: int) -> int:
    """The field length an engine scores with after its one-byte encoding (Lucene and tantivy alike).

    >>> [stored_length(n) for n in (3, 40, 41, 57, 89, 1000)]
    [3, 40, 40, 56, 88, 984]
    """
    if length < _FREE_VALUES:
        return length
    return _FREE_VALUES + _int4_to_long(_long_to_int4(length - _FREE_VALUES))


@dataclass(frozen=True)
class FieldStatistics:
    """An index's BM25 statistics for one query's analysed terms.

    `docs[field]` is the N of the idf (tantivy: every document; Lucene/Elasticsearch: the documents that
    have the field), `avg_length[field]` the average field length in tokens, `doc_freq[field][term]` the
    number of documents whose field holds the term. A field missing from `docs` scores 0."""

    terms: tuple[str, ...]
    docs: Mapping[str, float] = field(default_factory=dict)
    avg_length: Mapping[str, float] = field(default_factory=dict)
    doc_freq: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B

    def idf(self, field_name: str, term: str) -> float:
        n = float(self.docs.get(field_name, 0.0))
        df = float(self.doc_freq.get(field_name, {}).get(term, 0))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def bm25_matrix(stats: FieldStatistics, documents: Sequence[Mapping[str, Sequence[str]]],
                fields: Sequence[str] = TEXT_FIELDS) -> np.ndarray:
    """Per-field BM25 of each document (`{field: analysed tokens, duplicates kept}`) for the query of
    `stats`: a float32 matrix `(len(documents), len(fields))`. A field with no statistics (no indexed
    document has it) or an average length of 0 scores 0."""
    out = np.zeros((len(documents), len(fields)), dtype=np.float32)
    if not stats.terms or not documents:
        return out
    for column, name in enumerate(fields):
        avg = float(stats.avg_length.get(name, 0.0))
        if name not in stats.docs or avg <= 0:
            continue
        idf = {term: stats.idf(name, term) for term in stats.terms}
        for row, doc in enumerate(documents):
            tokens = doc.get(name) or ()
            if not tokens:
                continue
            counts = Counter(tokens)
            norm = stats.k1 * (1.0 - stats.b + stats.b * stored_length(len(tokens)) / avg)
            total = 0.0
            for term, weight in idf.items():
                tf = counts.get(term, 0)
                if tf:
                    total += weight * tf * (stats.k1 + 1.0) / (tf + norm)
            out[row, column] = total
    return out


__all__ = ["DEFAULT_B", "DEFAULT_K1", "FieldStatistics", "bm25_matrix", "stored_length"]
