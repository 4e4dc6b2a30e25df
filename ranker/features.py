"""Features of the learned ranking stage: one table of names and definitions, one extraction.

The stage scores each (query, candidate) pair by a feature vector; `FEATURES` is the one place that names
and defines every feature, in column order. `extract` computes the matrix of one query's candidates from
a `CandidateSet` (what retrieval produced, see `ranker.stage`), and both the trainer and the searcher call
it, so there is no training/serving skew: a test asserts that the vectors are identical.

Product-side work (tokenising titles, finding numbers and units, analysing fields for BM25) happens once
per product, in a `ProductView` that the stage caches by product id; per query only set intersections and
numpy arithmetic remain, which keeps the stage within a few milliseconds for 400 candidates.

Terms (`terms`): lower-cased runs of letters or of digits (`3/4` and `1.5` stay whole, `18v` is `18` and
`v`), with unit words mapped to one spelling (`inches` -> `in`, `volt` -> `v`) and a plural `s` dropped.
A quantity is a number directly followed by a unit (`18 v`, `3/4 in`).

>>> terms('DeWalt 20-Volt MAX 1/2 in. Drills')
['dewalt', '20', 'v', 'max', '1/2', 'in', 'drill']
>>> sorted(quantities(terms('2 gal. bucket, 5 gallons')))
['2 gal', '5 gal']
>>> [f.name for f in FEATURES][:4]
['lexical_score', 'lexical_rank', 'lexical_present', 'lexical_norm']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from indexer.stores.base import TEXT_FIELDS, field_texts
from indexer.stores.bm25 import FieldStatistics, stored_length
from shopfusion.types import LegHit, Product

FEATURE_SET_VERSION = 1
"""Bumped whenever a feature's definition changes; a ranker trained on another version is refused."""

INTENT_LABELS: tuple[str, ...] = ("product_lookup.specific", "product_lookup.attribute", "product_lookup.broad",
                                  "product_information", "comparison", "service")
"""The intent taxonomy (`ranker.intent.LABELS`); a test keeps the two equal."""

ABSENT_RANK = 1000
"""The rank a leg is given for a product it did not retrieve (independent of the depth asked for)."""
RRF_K = 60.0
LEGS: tuple[str, ...] = ("lexical", "dense")

Kind = Literal["candidate", "query"]


@dataclass(frozen=True)
class Feature:
    """`scaled`: the value depends on the catalog's scoring scale (BM25 magnitudes, text lengths); with
    per-query normalisation (for transfer to another catalog) a scaled candidate feature is min-max
    normalised within the query and a scaled query-level feature is left out (set to 0)."""

    name: str
    definition: str
    kind: Kind = "candidate"
    scaled: bool = False


def _leg_features(leg: str, what: str) -> tuple[Feature, ...]:
    scaled = leg == "lexical"
    return (
        Feature(f"{leg}_score", f"{what} of the product for the query, whether or not the {leg} leg retrieved it",
                scaled=scaled),
        Feature(f"{leg}_rank", f"log2(1 + rank) in the {leg} leg's list; log2(1 + {ABSENT_RANK}) when not retrieved"),
        Feature(f"{leg}_present", f"1 when the {leg} leg retrieved the product within its depth"),
        Feature(f"{leg}_norm", f"{leg}_score min-max normalised over the query's candidates"),
        Feature(f"{leg}_z", f"{leg}_score as a z-score over the query's candidates"),
        Feature(f"{leg}_gap", f"(top {leg}_score among the candidates - this one) / |top| (0 for the best)"),
    )


FEATURES: tuple[Feature, ...] = (
    *_leg_features("lexical", "BM25 (title x2 + brand, description, category, attributes)"),
    *_leg_features("dense", "cosine similarity of the query and product embeddings"),
    Feature("fused_linear", "0.5 * lexical_norm + 0.5 * dense_norm (static linear fusion)"),
    Feature("fused_rrf", f"sum over legs of 1 / ({RRF_K:g} + rank), 0 for a leg that did not retrieve it"),
    *(Feature(f"bm25_{name}", f"BM25 of the {name} field alone (unboosted), from the lexical engine",
              scaled=True) for name in TEXT_FIELDS),
    Feature("bm25_title_share", "2 * bm25_title / lexical_score: how much of the lexical match is in the title"),
    Feature("title_coverage", "share of the query's distinct terms found in the title"),
    Feature("all_coverage", "share of the query's distinct terms found in any field"),
    Feature("title_precision", "share of the title's distinct terms that are query terms"),
    Feature("title_phrase", "1 when the query's terms (2 or more) appear in the title contiguously and in order"),
    Feature("text_phrase", "1 when the query's terms (2 or more) appear contiguously in some field"),
    Feature("title_bigrams", "share of the query's adjacent term pairs that are adjacent in the title"),
    Feature("title_first_term", "1 when the title's first term is a query term (often the brand)"),
    Feature("head_in_title", "1 when the query's last term (the head noun of most product queries) is in the title"),
    Feature("title_trigrams", "share of the query's character trigrams found in the title (misspellings)"),
    Feature("number_match", "share of the query's numbers found in the product's text (0 without numbers)"),
    Feature("quantity_match", "share of the query's quantities (number + unit) the product states"),
    Feature("quantity_conflict", "1 when the product states a quantity in a unit of the query, never the query's"),
    Feature("brand_match", "1 when every term of the product's brand is a query term"),
    Feature("category_match", "share of the leaf category's terms that are query terms"),
    Feature("category_coverage", "share of the query's distinct terms found in the category path"),
    Feature("title_length", "number of terms in the title", scaled=True),
    Feature("text_length", "log(1 + characters of all text fields)", scaled=True),
    Feature("has_brand", "1 when the product has a brand"),
    Feature("has_category", "1 when the product has a category path"),
    Feature("has_description", "1 when the product has a description"),
    Feature("has_attributes", "1 when the product has attributes"),
    Feature("query_length", "number of distinct query terms", kind="query"),
    Feature("query_chars", "number of characters of the query", kind="query"),
    Feature("query_numbers", "number of numbers in the query", kind="query"),
    Feature("query_quantities", "number of quantities (number + unit) in the query", kind="query"),
    Feature("q_lexical_top", "top lexical_score among the candidates", kind="query", scaled=True),
    Feature("q_lexical_gap12", "(first - second score of the lexical leg) / first", kind="query"),
    Feature("q_lexical_gap110", "(first - tenth score of the lexical leg) / first", kind="query"),
    Feature("q_dense_top", "top dense_score among the candidates", kind="query"),
    Feature("q_dense_gap12", "first - second score of the dense leg", kind="query"),
    Feature("q_dense_gap110", "first - tenth score of the dense leg", kind="query"),
    Feature("q_overlap10", "share of the lexical leg's top 10 that is also in the dense leg's top 10", kind="query"),
    Feature("q_lexical_hits", "log(1 + number of products the lexical leg retrieved)", kind="query"),
    *(Feature(f"intent_{label}", f"the intent model's probability of `{label}` (0 with rules only)", kind="query")
      for label in INTENT_LABELS),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


# -- terms ----------------------------------------------------------------------------------------------
_TERM = re.compile(r"[0-9]+(?:[./][0-9]+)*|[a-z]+")
_INCH = re.compile(r"(?<=\d)\s*(\"|''|\u201d|\u2033)")
_FOOT = re.compile(r"(?<=\d)\s*('|\u2019|\u2032)")
_UNITS: dict[str, str] = {}
for _canonical, _spellings in {
    "in": "in inch inches", "ft": "ft feet foot", "yd": "yd yard yards", "mm": "mm", "cm": "cm",
    "m": "m meter meters metre metres", "gal": "gal gallon gallons", "qt": "qt quart quarts",
    "oz": "oz ounce ounces", "lb": "lb lbs pound pounds", "v": "v volt volts", "w": "w watt watts",
    "a": "a amp amps ampere", "ah": "ah", "mah": "mah", "btu": "btu", "psi": "psi", "cfm": "cfm", "gpm": "gpm",
    "kg": "kg kgs", "g": "g gm gms gram grams", "l": "l ltr litre litres liter liters", "ml": "ml",
    "pc": "pc pcs piece pieces pack packs pk count ct", "sq": "sq", "cu": "cu", "ga": "ga gauge",
    "grit": "grit", "hp": "hp", "lumen": "lumen lumens lm", "k": "k kelvin", "gb": "gb", "tb": "tb",
    "hz": "hz", "kw": "kw", "x": "x",
}.items():
    for _spelling in _spellings.split():
        _UNITS[_spelling] = _canonical


def _term(token: str) -> str:
    unit = _UNITS.get(token)
    if unit is not None:
        return unit
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss") and token.isalpha():
        return token[:-1]
    return token


def _number(token: str) -> str:
    if "." in token and "/" not in token:
        token = token.rstrip("0").rstrip(".") or "0"
    return token.lstrip("0") or "0"


def terms(text: str) -> list[str]:
    """The match terms of a text (see the module docstring)."""
    text = _FOOT.sub(" ft ", _INCH.sub(" in ", text.lower()))
    out = []
    for token in _TERM.findall(text):
        out.append(_number(token) if token[0].isdigit() else _term(token))
    return out


def quantities(words: Sequence[str]) -> set[str]:
    """`number unit` pairs: a number directly followed by a unit term."""
    units = set(_UNITS.values())
    return {f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a[0].isdigit() and b in units}


def trigrams(words: Sequence[str]) -> frozenset[str]:
    """Character trigrams of each term padded with spaces (`"drill"` -> ` dr`, `dri`, ..., `ll `)."""
    out: set[str] = set()
    for word in words:
        padded = f" {word} "
        out.update(padded[i:i + 3] for i in range(len(padded) - 2))
    return frozenset(out)


def _numbers(words: Sequence[str]) -> frozenset[str]:
    return frozenset(w for w in words if w[0].isdigit())


# -- per product (cached) and per query --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProductView:
    """What the features need of one product, computed once (`product_view`) and cached by the stage.

    `lexical`: for each analysed term (the lexical engine's analyzer), its count in each text field;
    `lengths`: each field's stored length (for BM25 from the index's statistics); both empty when the
    engine scores the fields itself."""

    title_terms: tuple[str, ...]
    title_set: frozenset[str]
    title_text: str
    title_bigrams: frozenset[str]
    title_trigrams: frozenset[str]
    all_set: frozenset[str]
    all_text: str
    numbers: frozenset[str]
    quantities: frozenset[str]
    units: frozenset[str]
    brand_terms: frozenset[str]
    leaf_terms: frozenset[str]
    category_set: frozenset[str]
    static: np.ndarray
    lexical: Mapping[str, np.ndarray] = field(default_factory=dict)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(len(TEXT_FIELDS), dtype=np.float32))


def product_view(product: Product, analyze: Callable[[Product], Mapping[str, Sequence[str]]] | None = None) -> ProductView:
    """The cached, query-independent part of a product's features. `analyze` (the lexical engine's own
    analyzer, per field) fills `lexical` and `lengths`, for BM25 computed in-process."""
    texts = field_texts(product)
    title = terms(product.title)
    per_field = {name: terms(text) for name, text in texts.items() if name != "title"}
    everything = [title, *per_field.values()]
    all_terms = [t for words in everything for t in words]
    found_quantities = set().union(*(quantities(words) for words in everything))
    leaf = terms(product.category_path[-1]) if product.category_path else []
    static = np.array([
        len(title), math.log1p(sum(len(text) for text in texts.values())), float(bool(product.brand)),
        float(bool(product.category_path)), float(bool(product.description)), float(bool(product.attributes)),
    ], dtype=np.float32)
    lexical: dict[str, np.ndarray] = {}
    lengths = np.zeros(len(TEXT_FIELDS), dtype=np.float32)
    if analyze is not None:
        analysed = analyze(product)
        for column, name in enumerate(TEXT_FIELDS):
            tokens = analysed.get(name) or ()
            lengths[column] = stored_length(len(tokens))
            for token in tokens:
                counts = lexical.get(token)
                if counts is None:
                    counts = lexical[token] = np.zeros(len(TEXT_FIELDS), dtype=np.float32)
                counts[column] += 1
    return ProductView(
        title_terms=tuple(title), title_set=frozenset(title), title_text=f" {' '.join(title)} ",
        title_bigrams=frozenset(f"{a} {b}" for a, b in zip(title, title[1:], strict=False)),
        title_trigrams=trigrams(title),
        all_set=frozenset(all_terms), all_text=" | ".join(f" {' '.join(words)} " for words in everything),
        numbers=_numbers(all_terms), quantities=frozenset(found_quantities),
        units=frozenset(q.split(" ", 1)[1] for q in found_quantities),
        brand_terms=frozenset(terms(product.brand or "")), leaf_terms=frozenset(leaf),
        category_set=frozenset(terms(product.category_text)), static=static, lexical=lexical, lengths=lengths,
    )


@dataclass(frozen=True)
class QueryView:
    text: str
    terms: tuple[str, ...]
    distinct: frozenset[str]
    phrase: str
    bigrams: frozenset[str]
    trigrams: frozenset[str]
    numbers: frozenset[str]
    quantities: frozenset[str]
    units: frozenset[str]

    @classmethod
    def of(cls, query: str) -> QueryView:
        words = terms(query)
        found = quantities(words)
        return cls(query, tuple(words), frozenset(words), f" {' '.join(words)} ",
                   frozenset(f"{a} {b}" for a, b in zip(words, words[1:], strict=False)), trigrams(words),
                   _numbers(words), frozenset(found), frozenset(q.split(" ", 1)[1] for q in found))


@dataclass(frozen=True)
class CandidateSet:
    """Everything the features of one query read; built by `ranker.stage` for search, re-rank and
    training alike.

    `fields`: the per-field BM25 matrix `(n, len(TEXT_FIELDS))`, `dense`: cosine similarities `(n,)`,
    `legs`: each retrieval leg's list as retrieved (ranks and presence come from here), `intent`: the
    intent model's probabilities over `INTENT_LABELS` (empty: all 0)."""

    query: str
    ids: tuple[str, ...]
    views: tuple[ProductView, ...]
    fields: np.ndarray
    dense: np.ndarray
    legs: Mapping[str, Sequence[LegHit]]
    intent: Mapping[str, float] = field(default_factory=dict)


FIELD_BOOSTS = np.array([2.0 if name == "title" else 1.0 for name in TEXT_FIELDS], dtype=np.float32)


def local_field_scores(stats: FieldStatistics, views: Sequence[ProductView]) -> np.ndarray:
    """Per-field BM25 of cached views with an index's statistics (the same formula and stored lengths
    as `indexer.stores.bm25.bm25_matrix`, vectorised over the candidates)."""
    n = len(views)
    out = np.zeros((n, len(TEXT_FIELDS)), dtype=np.float32)
    columns = [i for i, name in enumerate(TEXT_FIELDS) if name in stats.docs and stats.avg_length.get(name, 0) > 0]
    if not stats.terms or not n or not columns:
        return out
    avg = np.array([stats.avg_length.get(name, 1.0) or 1.0 for name in TEXT_FIELDS], dtype=np.float64)
    lengths = np.stack([v.lengths for v in views]).astype(np.float64)
    norm = stats.k1 * (1.0 - stats.b + stats.b * lengths / avg)
    mask = np.zeros(len(TEXT_FIELDS))
    mask[columns] = 1.0
    zero = np.zeros(len(TEXT_FIELDS), dtype=np.float32)
    total = np.zeros((n, len(TEXT_FIELDS)), dtype=np.float64)
    for term in stats.terms:
        idf = np.array([stats.idf(name, term) for name in TEXT_FIELDS]) * mask
        if not idf.any():
            continue
        tf = np.stack([v.lexical.get(term, zero) for v in views]).astype(np.float64)
        total += idf * tf * (stats.k1 + 1.0) / (tf + norm)
    out[:] = total
    return out


# -- extraction ------------------------------------------------------------------------------------------
def _minmax(x: np.ndarray) -> np.ndarray:
    if not len(x):
        return x
    low, high = float(x.min()), float(x.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.ones_like(x)
    return (x - low) / (high - low)


def _zscore(x: np.ndarray) -> np.ndarray:
    if not len(x):
        return x
    spread = float(x.std())
    if spread <= 1e-12 * max(1.0, abs(float(x.mean()))):
        return np.zeros_like(x)
    return (x - x.mean()) / spread


def _leg_ranks(ids: Sequence[str], hits: Sequence[LegHit]) -> np.ndarray:
    rank = {hit.product_id: hit.rank for hit in reversed(hits)}  # a repeated id keeps its best rank
    return np.array([rank.get(pid, 0) for pid in ids], dtype=np.float64)


def extract(candidates: CandidateSet, needed: Collection[str] | None = None) -> np.ndarray:
    """The feature matrix `(len(candidates.ids), len(FEATURES))`, float32, columns in `FEATURES` order.

    `needed`: the features a model reads (serving); the per-candidate term matches it does not read are
    left at 0 instead of computed (they cost most of the time). Every feature a model reads has the value
    it has without `needed`."""
    c = candidates
    want = (lambda name: True) if needed is None else set(needed).__contains__
    n = len(c.ids)
    x = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if not n:
        return x.astype(np.float32)
    col = _COLUMN
    q = QueryView.of(c.query)
    views = c.views

    # retrieval legs
    lexical = (c.fields.astype(np.float64) @ FIELD_BOOSTS.astype(np.float64))
    dense = c.dense.astype(np.float64)
    fused_rrf = np.zeros(n)
    for leg, score in (("lexical", lexical), ("dense", dense)):
        ranks = _leg_ranks(c.ids, c.legs.get(leg, ()))
        present = ranks > 0
        top = float(score.max())
        x[:, col[f"{leg}_score"]] = score
        x[:, col[f"{leg}_rank"]] = np.log2(1.0 + np.where(present, ranks, ABSENT_RANK))
        x[:, col[f"{leg}_present"]] = present
        x[:, col[f"{leg}_norm"]] = _minmax(score)
        x[:, col[f"{leg}_z"]] = _zscore(score)
        x[:, col[f"{leg}_gap"]] = (top - score) / max(abs(top), 1e-9)
        fused_rrf += np.where(present, 1.0 / (RRF_K + ranks), 0.0)
    x[:, col["fused_linear"]] = 0.5 * x[:, col["lexical_norm"]] + 0.5 * x[:, col["dense_norm"]]
    x[:, col["fused_rrf"]] = fused_rrf
    for i, name in enumerate(TEXT_FIELDS):
        x[:, col[f"bm25_{name}"]] = c.fields[:, i]
    x[:, col["bm25_title_share"]] = np.divide(2.0 * c.fields[:, 0], lexical, out=np.zeros(n), where=lexical > 0)

    # term matches
    distinct = q.distinct
    size = max(len(distinct), 1)
    if want("title_coverage") or want("title_precision"):
        counts = np.array([(len(distinct & v.title_set), len(v.title_set)) for v in views], dtype=np.float64)
        x[:, col["title_coverage"]] = counts[:, 0] / size
        x[:, col["title_precision"]] = counts[:, 0] / np.maximum(counts[:, 1], 1)
    if want("all_coverage"):
        x[:, col["all_coverage"]] = [len(distinct & v.all_set) / size for v in views]
    if len(q.terms) >= 2:
        if want("title_phrase"):
            x[:, col["title_phrase"]] = [q.phrase in v.title_text for v in views]
        if want("text_phrase"):
            x[:, col["text_phrase"]] = [q.phrase in v.all_text for v in views]
        if want("title_bigrams"):
            pairs = q.bigrams
            x[:, col["title_bigrams"]] = [len(pairs & v.title_bigrams) / len(pairs) for v in views]
    if want("title_first_term"):
        x[:, col["title_first_term"]] = [bool(v.title_terms) and v.title_terms[0] in distinct for v in views]
    if q.terms and want("head_in_title"):
        head = q.terms[-1]
        x[:, col["head_in_title"]] = [head in v.title_set for v in views]
    if q.trigrams and want("title_trigrams"):
        grams, count = q.trigrams, len(q.trigrams)
        x[:, col["title_trigrams"]] = [len(grams & v.title_trigrams) / count for v in views]
    if q.numbers and want("number_match"):
        x[:, col["number_match"]] = [len(q.numbers & v.numbers) / len(q.numbers) for v in views]
    if q.quantities:
        if want("quantity_match"):
            x[:, col["quantity_match"]] = [len(q.quantities & v.quantities) / len(q.quantities) for v in views]
        if want("quantity_conflict"):
            x[:, col["quantity_conflict"]] = [bool(q.units & v.units) and not (q.quantities & v.quantities)
                                              for v in views]
    if want("brand_match"):
        x[:, col["brand_match"]] = [bool(v.brand_terms) and v.brand_terms <= distinct for v in views]
    if want("category_match"):
        x[:, col["category_match"]] = [len(v.leaf_terms & distinct) / len(v.leaf_terms) if v.leaf_terms else 0.0
                                       for v in views]
    if want("category_coverage"):
        x[:, col["category_coverage"]] = [len(distinct & v.category_set) / size for v in views]
    start = col["title_length"]
    x[:, start:start + 6] = np.array([v.static for v in views])

    # the query and its retrieval as a whole
    x[:, col["query_length"]] = len(distinct)
    x[:, col["query_chars"]] = len(c.query)
    x[:, col["query_numbers"]] = len(q.numbers)
    x[:, col["query_quantities"]] = len(q.quantities)
    lexical_hits = [h.score for h in c.legs.get("lexical", ())]
    dense_hits = [h.score for h in c.legs.get("dense", ())]
    x[:, col["q_lexical_top"]] = float(lexical.max())
    if lexical_hits and lexical_hits[0] > 0:
        x[:, col["q_lexical_gap12"]] = (lexical_hits[0] - _at(lexical_hits, 1)) / lexical_hits[0]
        x[:, col["q_lexical_gap110"]] = (lexical_hits[0] - _at(lexical_hits, 9)) / lexical_hits[0]
    x[:, col["q_dense_top"]] = float(dense.max())
    if dense_hits:
        x[:, col["q_dense_gap12"]] = dense_hits[0] - _at(dense_hits, 1)
        x[:, col["q_dense_gap110"]] = dense_hits[0] - _at(dense_hits, 9)
    top_lexical = {h.product_id for h in list(c.legs.get("lexical", ()))[:10]}
    top_dense = {h.product_id for h in list(c.legs.get("dense", ()))[:10]}
    x[:, col["q_overlap10"]] = len(top_lexical & top_dense) / 10.0
    x[:, col["q_lexical_hits"]] = math.log1p(len(lexical_hits))
    for label in INTENT_LABELS:
        x[:, col[f"intent_{label}"]] = float(c.intent.get(label, 0.0))
    return x.astype(np.float32)


def _at(values: Sequence[float], i: int) -> float:
    return values[min(i, len(values) - 1)]


# -- what a model reads: column selection and per-query normalisation ------------------------------------------
Normalization = Literal["none", "query"]


def model_matrix(x: np.ndarray, names: Sequence[str], normalization: Normalization = "none",
                 offsets: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The columns a model was trained on, in its order, from full `extract` matrices.

    `normalization="query"` (for transfer to other catalogs) min-max normalises each scaled candidate
    feature within each query and zeroes scaled query-level ones; `offsets` delimit the queries of a
    stacked matrix (`[0, n1, n1 + n2, ...]`; default: one query)."""
    unknown = [name for name in names if name not in _COLUMN]
    if unknown:
        from shopfusion.errors import ConfigError

        raise ConfigError(f"the ranker uses features this shopfusion does not compute ({unknown}): retrain it"
                          " with `shopfusion train ranker`")
    columns = [_COLUMN[name] for name in names]
    out = np.array(x[:, columns], dtype=np.float32)
    if normalization == "none":
        return out
    bounds = list(offsets) if offsets is not None else [0, len(x)]
    for j, name in enumerate(names):
        spec = FEATURES[_COLUMN[name]]
        if not spec.scaled:
            continue
        if spec.kind == "query":
            out[:, j] = 0.0
            continue
        for start, end in zip(bounds, bounds[1:], strict=False):
            out[start:end, j] = _minmax(out[start:end, j].astype(np.float64))
    return out


__all__ = ["FEATURES", "FEATURE_NAMES", "FEATURE_SET_VERSION", "INTENT_LABELS", "CandidateSet", "Feature",
           "ProductView", "QueryView", "extract", "local_field_scores", "model_matrix", "product_view", "quantities",
           "terms"]
