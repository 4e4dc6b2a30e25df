"""The embedded lexical leg: BM25 over product text with tantivy, on disk, no server.

One object owns both the schema and the queries that read it. Text fields (title boosted, brand,
description, category, attributes) share one analyzer: `english` (lowercase, English stop words, Porter
stemming) or `standard` (lowercase only, like Elasticsearch's `standard` analyzer). Filters use exact
keyword fields: every ancestor of the category path (so a prefix filter is one term lookup), the
normalised brand, a numeric price, and three JSON fields keyed by attribute: `attr_value` (the
normalised value: value filters and terms facets), `attr_order` (numbers as order-preserving 64-bit
integers: range filters, which tantivy's JSON range query handles exactly only for integers) and
`attr_number` (numbers as floats: range facets and min/max). All filter fields are fast fields, so
facets are tantivy aggregations (`Searcher.aggregate`), never Python loops over products.

>>> import tempfile
>>> from shopfusion.types import Product
>>> index = TantivyLexicalIndex(tempfile.mkdtemp(), create=True)
>>> _ = index.upsert([Product(id="1", title="Cordless drill"), Product(id="2", title="Garden hose")])
>>> index.commit()
>>> [hit.product_id for hit in index.search("drills", k=5)]
['1']
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tantivy

from indexer.stores.base import TEXT_FIELDS, BulkReport, FacetCounts, FacetRequest, field_texts, range_specs
from indexer.stores.bm25 import FieldStatistics, bm25_matrix
from shopfusion.errors import IndexStateError
from shopfusion.types import (
    CATEGORY_SEPARATOR,
    AttributeFilter,
    Filters,
    LegHit,
    Product,
    attribute_values,
    normalize_brand,
    normalize_category,
    value_number,
)

FIELD_BOOSTS: dict[str, float] = {"title": 2.0, "brand": 1.0, "description": 1.0, "category": 1.0,
                                  "attributes": 1.0}
"""Per-field BM25 boosts; the Elasticsearch leg uses the same."""
AnalyzerName = Literal["english", "standard"]
_ORDINALS = "ordinals.json"
CATEGORY_TERMS = 10_000
"""Category facets count every prefix of the relevant set's paths in one terms aggregation this wide."""


def build_analyzer(name: AnalyzerName) -> tantivy.TextAnalyzer:
    builder = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
               .filter(tantivy.Filter.remove_long(40))
               .filter(tantivy.Filter.lowercase()))
    if name == "english":
        builder = builder.filter(tantivy.Filter.stopword("english")).filter(tantivy.Filter.stemmer("english"))
    elif name != "standard":
        raise IndexStateError(f"unknown analyzer {name!r}: use `english` or `standard`")
    return builder.build()


def _schema(analyzer: str) -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", tokenizer_name="raw", index_option="basic")
    for field in FIELD_BOOSTS:
        builder.add_text_field(field, tokenizer_name=analyzer, index_option="freq")
    builder.add_text_field("category_prefix", tokenizer_name="raw", index_option="basic", fast=True)
    builder.add_text_field("brand_key", tokenizer_name="raw", index_option="basic", fast=True)
    builder.add_float_field("price", indexed=True, fast=True)
    for field in ("attr_value", "attr_order", "attr_number"):
        builder.add_json_field(field, tokenizer_name="raw", index_option="basic", fast=True)
    builder.add_unsigned_field("ordinal", fast=True)
    return builder.build()


class TantivyLexicalIndex:
    """A tantivy index in `path`; `create=True` starts an empty one (replacing anything there)."""

    name = "tantivy"

    def __init__(self, path: str | os.PathLike[str], analyzer: AnalyzerName = "english",
                 create: bool = False) -> None:
        self.path = Path(path)
        self.analyzer_name = analyzer
        self._tokenizer = f"sf_{analyzer}"
        self._analyzer = build_analyzer(analyzer)
        self._schema = _schema(self._tokenizer)
        if create:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            self._ordinals: list[str | None] = []
        else:
            if not (self.path / "meta.json").is_file():
                raise IndexStateError(f"no lexical index at {self.path}: run `shopfusion index` first")
            self._ordinals = self._read_ordinals()
        try:
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=not create)
        except (ValueError, OSError) as exc:
            raise IndexStateError(f"the lexical index at {self.path} cannot be opened ({exc}): it is damaged, or"
                                  " was built by another shopfusion version with another schema; run"
                                  " `shopfusion verify --repair` (or re-index with --replace)") from None
        self._index.register_tokenizer(self._tokenizer, self._analyzer)
        self._positions = {pid: i for i, pid in enumerate(self._ordinals) if pid is not None}
        self._writer: Any = None
        self._field_norms: dict[str, tuple[float, float]] | None = None

    def _read_ordinals(self) -> list[str | None]:
        problem = "not a list of ids"
        try:
            ordinals = json.loads((self.path / _ORDINALS).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            ordinals, problem = None, f"{type(exc).__name__}: {exc}"
        if not isinstance(ordinals, list) or not all(o is None or isinstance(o, str) for o in ordinals):
            raise IndexStateError(f"the lexical index's {_ORDINALS} at {self.path} is damaged ({problem}): run"
                                  " `shopfusion verify --repair` (or re-index with --replace)")
        return ordinals

    def ordered_ids(self) -> list[str]:
        """Product ids by ordinal (the order the version was built in), deleted slots left out."""
        return [pid for pid in self._ordinals if pid is not None]

    def check_ordinals(self, ids: Sequence[str]) -> list[str]:
        """Of these ids, those whose document does not map back to them through the ordinal fast field."""
        searcher = self._index.searcher()
        wrong = []
        for pid in ids:
            result = searcher.search(tantivy.Query.term_query(self._schema, "id", pid), limit=2, count=False)
            addresses = [address for _, address in result.hits]
            values = searcher.fast_field_values("ordinal", addresses) if addresses else []
            ordinal = int(values[0]) if len(values) == 1 and values[0] is not None else -1  # type: ignore[arg-type]
            if not 0 <= ordinal < len(self._ordinals) or self._ordinals[ordinal] != pid:
                wrong.append(pid)
        return wrong

    # -- writing -----------------------------------------------------------------------------------
    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=128_000_000, num_threads=1)
        return self._writer

    def plan_attribute_fields(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Nothing to plan: attributes are one JSON fast field whatever the catalog holds."""

    def upsert(self, products: Iterable[Product]) -> BulkReport:
        report = BulkReport()
        for product in products:
            try:
                if product.id in self._positions:
                    self.writer.delete_documents_by_term("id", product.id)
                ordinal = len(self._ordinals)
                self.writer.add_document(self._document(product, ordinal))
            except (ValueError, OSError) as exc:
                report.failed[product.id] = f"lexical index refused the document: {exc}"
                continue
            self._ordinals.append(product.id)
            old = self._positions.get(product.id)
            if old is not None:
                self._ordinals[old] = None
            self._positions[product.id] = ordinal
            report.succeeded += 1
        return report

    def _document(self, product: Product, ordinal: int) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_text("id", product.id)
        doc.add_text("title", product.title)
        if product.brand:
            doc.add_text("brand", product.brand)
            doc.add_text("brand_key", normalize_brand(product.brand))
        if product.description:
            doc.add_text("description", product.description)
        if product.category_path:
            doc.add_text("category", product.category_text)
            for depth in range(1, len(product.category_path) + 1):
                doc.add_text("category_prefix", normalize_category(product.category_path[:depth]))
        if product.attributes:
            doc.add_text("attributes", product.attribute_text)
            values = attribute_values(product)
            numbers = {key: number for key, value in values.items() if (number := value_number(value)) is not None}
            if values:
                doc.add_json("attr_value", {path_key(key): value for key, value in values.items()})
            if numbers:
                doc.add_json("attr_order", {path_key(key): order_key(n) for key, n in numbers.items()})
                doc.add_json("attr_number", {path_key(key): n for key, n in numbers.items()})
        if product.price is not None:
            doc.add_float("price", float(product.price))
        doc.add_unsigned("ordinal", ordinal)
        return doc

    def delete(self, ids: Iterable[str]) -> None:
        for product_id in ids:
            old = self._positions.pop(product_id, None)
            if old is not None:
                self.writer.delete_documents_by_term("id", product_id)
                self._ordinals[old] = None

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
        tmp = self.path / (_ORDINALS + ".tmp")
        tmp.write_text(json.dumps(self._ordinals), encoding="utf-8")
        os.replace(tmp, self.path / _ORDINALS)
        self._index.reload()
        self._field_norms = None

    # -- reading -----------------------------------------------------------------------------------
    def analyze(self, text: str) -> list[str]:
        return list(dict.fromkeys(self._analyzer.analyze(text)))

    def _text_query(self, text: str) -> tantivy.Query | None:
        tokens = self.analyze(text)
        if not tokens:
            return None
        clauses = [
            (tantivy.Occur.Should, tantivy.Query.boost_query(
                tantivy.Query.term_query(self._schema, field, token), boost))
            for field, boost in FIELD_BOOSTS.items()
            for token in tokens
        ]
        return tantivy.Query.boolean_query(clauses)

    def _filter_queries(self, filters: Filters | None) -> list[tantivy.Query]:
        if filters is None or filters.empty:
            return []
        queries = []
        if filters.category:
            queries.append(tantivy.Query.term_query(self._schema, "category_prefix", filters.category_key))
        if filters.brands:
            queries.append(tantivy.Query.term_set_query(self._schema, "brand_key", list(filters.brand_keys)))
        if filters.price_min is not None or filters.price_max is not None:
            queries.append(tantivy.Query.range_query(
                self._schema, "price", tantivy.FieldType.Float, filters.price_min, filters.price_max))
        if filters.price_below is not None:
            queries.append(tantivy.Query.range_query(self._schema, "price", tantivy.FieldType.Float, None,
                                                     filters.price_below, include_upper=False))
        for attribute in filters.attributes:
            queries.extend(self._attribute_queries(attribute))
        return queries

    def _attribute_queries(self, attribute: AttributeFilter) -> list[tantivy.Query]:
        path = path_key(attribute.key)
        queries = []
        if attribute.values:
            queries.append(tantivy.Query.term_set_query(self._schema, f"attr_value.{path}",
                                                        list(attribute.value_keys)))
        if attribute.is_range:
            low = "*" if attribute.min is None else str(order_key(attribute.min))
            if attribute.below is not None and (attribute.max is None or attribute.below <= attribute.max):
                high, close = str(order_key(attribute.below)), "}"
            else:
                high, close = ("*" if attribute.max is None else str(order_key(attribute.max))), "]"
            queries.append(self._index.parse_query(f"attr_order.{path}:[{low} TO {high}{close}"))
        return queries

    def _run(self, text_query: tantivy.Query, constraints: list[tantivy.Query], k: int) -> list[LegHit]:
        if k <= 0:
            return []
        clauses = [(tantivy.Occur.Must, text_query)]
        clauses += [(tantivy.Occur.Must, tantivy.Query.const_score_query(q, 0.0)) for q in constraints]
        query = tantivy.Query.boolean_query(clauses) if constraints else text_query
        searcher = self._index.searcher()
        result = searcher.search(query, limit=k, count=False)
        if not result.hits:
            return []
        addresses = [address for _, address in result.hits]
        ordinals = searcher.fast_field_values("ordinal", addresses)
        hits: list[LegHit] = []
        for (score, _), ordinal in zip(result.hits, ordinals, strict=True):
            product_id = self._ordinals[int(ordinal)]  # type: ignore[arg-type]
            if product_id is not None:
                hits.append(LegHit(product_id, float(score), len(hits) + 1))
        return hits

    def search(self, query: str, k: int, filters: Filters | None = None) -> list[LegHit]:
        text_query = self._text_query(query)
        if text_query is None:
            return []
        return self._run(text_query, self._filter_queries(filters), k)

    def score(self, query: str, ids: Sequence[str]) -> dict[str, float]:
        text_query = self._text_query(query)
        wanted = [pid for pid in dict.fromkeys(ids) if pid in self._positions]
        if text_query is None or not wanted:
            return {}
        constraint = tantivy.Query.term_set_query(self._schema, "id", wanted)
        return {hit.product_id: hit.score for hit in self._run(text_query, [constraint], len(wanted))}

    def facet_counts(self, ids: Sequence[str], requests: Sequence[FacetRequest]) -> dict[str, FacetCounts]:
        """Counts over the products `ids` in one tantivy aggregation (terms, range and stats)."""
        if not requests:
            return {}
        wanted = list(dict.fromkeys(ids))  # ids the index lacks simply match nothing
        aggregations: dict[str, Any] = {}
        for i, request in enumerate(requests):
            field = self._facet_field(request)
            if request.kind == "range":
                aggregations[f"s{i}"] = {"stats": {"field": field}}
                if request.edges:
                    aggregations[f"r{i}"] = {"range": {"field": field, "ranges": range_specs(request.edges)}}
            else:
                size = CATEGORY_TERMS if request.kind == "category" else request.size
                # segment_size: tantivy keeps only each segment's top `segment_size` values before merging
                # (10 x size by default), which miscounts a value that is frequent overall but not in
                # every segment; a segment holds at most len(wanted) distinct values of the set
                segment_size = max(size, CATEGORY_TERMS, len(wanted))
                aggregations[f"t{i}"] = {"terms": {"field": field, "size": size, "segment_size": segment_size}}
        query = tantivy.Query.term_set_query(self._schema, "id", wanted)
        result = self._index.searcher().aggregate(query, aggregations)
        counts: dict[str, FacetCounts] = {}
        for i, request in enumerate(requests):
            if request.kind == "range":
                stats = result[f"s{i}"]
                buckets = [int(b["doc_count"]) for b in result[f"r{i}"]["buckets"]] if request.edges else []
                counts[request.name] = FacetCounts(ranges=buckets, present=int(stats["count"]),
                                                   min=stats["min"], max=stats["max"])
            else:
                terms = result[f"t{i}"]
                values = {str(b["key"]): int(b["doc_count"]) for b in terms["buckets"]}
                counts[request.name] = FacetCounts(values=values, other=int(terms["sum_other_doc_count"]))
        return counts

    def _facet_field(self, request: FacetRequest) -> str:
        builtin = {"brand": "brand_key", "category": "category_prefix", "price": "price"}
        if not request.attribute and request.field in builtin:
            return builtin[request.field]
        prefix = "attr_number" if request.kind == "range" else "attr_value"
        return f"{prefix}.{path_key(request.field)}"

    # -- per-field scores (features of the learned ranking stage) ---------------------------------------
    def field_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """One search per text field, each restricted to `ids` (a term-set filter): tantivy's own BM25."""
        out = np.zeros((len(ids), len(TEXT_FIELDS)), dtype=np.float32)
        tokens = self.analyze(query)
        wanted = [pid for pid in dict.fromkeys(ids) if pid in self._positions]
        if not tokens or not wanted:
            return out
        rows: dict[str, list[int]] = {}
        for row, pid in enumerate(ids):
            rows.setdefault(pid, []).append(row)
        constraint = tantivy.Query.const_score_query(
            tantivy.Query.term_set_query(self._schema, "id", wanted), 0.0)
        searcher = self._index.searcher()
        for column, field in enumerate(TEXT_FIELDS):
            terms = [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, field, t)) for t in tokens]
            query_ = tantivy.Query.boolean_query([(tantivy.Occur.Must, tantivy.Query.boolean_query(terms)),
                                                  (tantivy.Occur.Must, constraint)])
            result = searcher.search(query_, limit=len(wanted), count=False)
            if not result.hits:
                continue
            ordinals = searcher.fast_field_values("ordinal", [address for _, address in result.hits])
            for (score, _), ordinal in zip(result.hits, ordinals, strict=True):
                product_id = self._ordinals[int(ordinal)]  # type: ignore[arg-type]
                for row in rows.get(product_id, ()) if product_id is not None else ():
                    out[row, column] = score
        return out

    def field_statistics(self, query: str) -> FieldStatistics:
        """tantivy's BM25 statistics for the query's terms (N is every document, as tantivy scores)."""
        terms = tuple(self.analyze(query))
        norms = self._norms()
        searcher = self._index.searcher()
        doc_freq = {field: {t: int(searcher.doc_freq(field, t)) for t in terms} for field in norms}
        return FieldStatistics(terms, docs={f: n for f, (n, _) in norms.items()},
                               avg_length={f: avg for f, (_, avg) in norms.items()}, doc_freq=doc_freq)

    def analyze_fields(self, product: Product) -> dict[str, list[str]]:
        return {name: list(self._analyzer.analyze(text)) for name, text in field_texts(product).items()}

    def score_products(self, query: str, products: Sequence[Product]) -> np.ndarray:
        return bm25_matrix(self.field_statistics(query), [self.analyze_fields(p) for p in products])

    def _norms(self) -> dict[str, tuple[float, float]]:
        """Per field, tantivy's (N, average field length), read once per committed version from the
        explanation of one matching document (tantivy does not expose token totals otherwise)."""
        if self._field_norms is None:
            norms: dict[str, tuple[float, float]] = {}
            searcher = self._index.searcher()
            for field in TEXT_FIELDS:
                top = searcher.terms_with_prefix(field, "", limit=1) if searcher.num_docs else []
                if not top:
                    continue
                query = tantivy.Query.term_query(self._schema, field, top[0][0])
                hits = searcher.search(query, limit=1, count=False).hits
                if not hits:
                    continue
                found = _explained(json.loads(query.explain(searcher, hits[0][1]).to_json()))
                if "N" in found and "avgdl" in found:
                    norms[field] = (found["N"], found["avgdl"])
            self._field_norms = norms
        return self._field_norms

    def ids(self) -> set[str]:
        return set(self._positions)

    def count(self) -> int:
        return int(self._index.searcher().num_docs)

    def activate(self) -> None:
        """Nothing to do: the manifest switch makes a tantivy version current."""

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.rollback()
            self._writer = None


@lru_cache(maxsize=1 << 14)  # a catalog has few attribute names, each seen millions of times
def path_key(key: str) -> str:
    """An attribute name as a JSON path segment: `[a-z0-9]` kept, anything else written `_<hex>_`, so
    no name can contain the path separator or collide with another.

    >>> path_key("colour"), path_key("product_colour"), path_key("w.d.h")
    ('colour', 'product_5f_colour', 'w_2e_d_2e_h')
    """
    return "".join(c if ("a" <= c <= "z" or "0" <= c <= "9") else f"_{ord(c):x}_" for c in key)


def order_key(number: float) -> int:
    """A float as a signed 64-bit integer with the same order (IEEE 754 bits; negatives flipped), so
    range filters on JSON fields run as exact integer ranges.

    >>> sorted([2.5, -3.0, 0.0, -0.5, 1e300]) == sorted([2.5, -3.0, 0.0, -0.5, 1e300], key=order_key)
    True
    """
    bits = struct.unpack("<q", struct.pack("<d", float(number) + 0.0))[0]  # + 0.0 turns -0.0 into 0.0
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def _explained(node: dict[str, Any], found: dict[str, float] | None = None) -> dict[str, float]:
    """`N` and `avgdl` from a tantivy BM25 explanation tree."""
    found = {} if found is None else found
    description = str(node.get("description", ""))
    if description.startswith("N,"):
        found["N"] = float(node["value"])
    elif description.startswith("avgdl"):
        found["avgdl"] = float(node["value"])
    for child in node.get("details") or ():
        _explained(child, found)
    return found


__all__ = ["CATEGORY_SEPARATOR", "FIELD_BOOSTS", "TantivyLexicalIndex", "build_analyzer", "order_key", "path_key"]
