"""The learned ranking stage: a searcher's candidates -> features -> a LambdaMART order.

After retrieval and fusion, the union of both legs' candidates (each leg's `depth`, so up to twice that)
is scored by a trained ranker (`ranker.learned`) and re-ordered; the fused order only breaks ties. The
same `RankingStage.collect` builds the `CandidateSet` whose features the trainer learns from and the
searcher serves, so the two cannot drift apart.

Per query the stage needs: each candidate's per-field BM25 (from the lexical engine: with tantivy, which
analyses in this process, from cached analysed products and the index's statistics; with Elasticsearch,
one `field_scores` request), each candidate's cosine similarity (stored vectors; candidates the index
lacks are encoded by the caller), the legs' lists, the intent probabilities and every candidate's row
in the product table (`ranker.product_table`), filled the first time a product is a candidate (or all
at once by `warm`), so a product is tokenised once per searcher, not once per query.

Re-ranking passes products the index does not hold as `extra`: they get the same features, their BM25
scored with the index's statistics (`LexicalIndex.score_products`), never with a throw-away index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.docstore import ProductStore
from indexer.stores.base import TEXT_FIELDS, LexicalIndex, LocallyAnalyzed, VectorIndex
from ranker.features import INTENT_LABELS, CandidateSet, extract
from ranker.fusion import Fused
from ranker.learned import LearnedRanker
from ranker.product_table import DEFAULT_CAPACITY, ProductCache, ProductTable
from shopfusion.artifacts import EncoderRef, check_encoder
from shopfusion.errors import IndexStateError
from shopfusion.types import FeatureContribution, LegHit, Product

if TYPE_CHECKING:
    from ranker.policy import Decision, Policy

log = logging.getLogger(__name__)

EXPLAIN_TOP = 8
"""Contributions shown per hit by `explain` (the rest are in the score but not listed)."""


def intent_probabilities(decision: Decision | None) -> dict[str, float]:
    """The intent model's class probabilities over `INTENT_LABELS` for the intent features; all 0 when
    only the rules ran (no model, or one that cannot read this index's vectors)."""
    prediction = decision.prediction if decision is not None else None
    if prediction is None or not prediction.probabilities:
        return {}
    return {label: float(prediction.probabilities.get(label, 0.0)) for label in INTENT_LABELS}


class RankingStage:
    """Builds candidate sets for one index version (its product store and both legs) and orders them."""

    def __init__(self, store: ProductStore, lexical: LexicalIndex, vectors: VectorIndex, *,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.lexical = lexical
        self.vectors = vectors
        self.local = isinstance(lexical, LocallyAnalyzed)
        analyze = lexical.analyze_fields if self.local else None  # type: ignore[attr-defined]
        self.products = ProductCache(analyze, capacity)

    # -- product data ----------------------------------------------------------------------------------
    def table(self, ids: Sequence[str], extra: Mapping[str, Product] | None = None) -> tuple[ProductTable, np.ndarray]:
        """The product table holding these candidates and their slots. Indexed products are read from
        the product store once; `extra` products (the caller's, for re-ranking) are keyed by their
        content, since the same id may come with other text next time. An id with neither is an empty
        product."""
        keys = [_outside_key(extra[pid]) if pid in extra else pid for pid in ids] if extra else list(ids)
        table = self.products.table
        try:
            return table, table.slots_of(keys)
        except KeyError:  # some are not in the table yet
            pass
        extra = extra or {}
        needed = {key: pid for key, pid in zip(keys, ids, strict=True) if key not in table.slots}
        indexed = self.store.get_many([pid for pid in needed.values() if pid not in extra])
        table = self.products.ensure({key: extra.get(pid) or indexed.get(pid) or Product(id=pid, title="")
                                      for key, pid in needed.items()})
        return table, table.slots_of(keys)

    def warm(self, limit: int | None = None) -> int:
        """Read the index's products into the product table ahead of queries (up to `limit`), so the first
        queries do not pay for tokenising their candidates (tens of microseconds a product); returns how
        many products the table holds."""
        batch: dict[str, Product] = {}
        for count, stored in enumerate(self.store.iter_stored()):
            if limit is not None and count >= limit:
                break
            batch[stored.product.id] = stored.product
            if len(batch) >= 10_000:
                self.products.ensure(batch)
                batch = {}
        self.products.ensure(batch)
        return len(self.products)

    # -- candidate sets ---------------------------------------------------------------------------------
    def collect(self, query: str, vector: np.ndarray, legs: Mapping[str, Sequence[LegHit]],
                ids: Sequence[str], *, intent: Mapping[str, float] | None = None,
                extra: Mapping[str, Product] | None = None,
                dense: Mapping[str, float] | None = None) -> CandidateSet:
        """The candidate set of `ids` (in the fused order) for `query`. `dense`: cosine similarities the
        caller already has (the dense leg's, or those of encoded `extra` products); the rest are read
        from the stored vectors."""
        extra = extra or {}
        ids = list(dict.fromkeys(ids))
        table, slots = self.table(ids, extra)
        if self.local:
            fields = table.local_field_scores(slots, self.lexical.field_statistics(query))  # type: ignore[attr-defined]
        else:
            fields = np.zeros((len(ids), len(TEXT_FIELDS)), dtype=np.float32)
            indexed = [pid for pid in ids if pid not in extra]
            if indexed:
                rows = [i for i, pid in enumerate(ids) if pid not in extra]
                fields[rows] = self.lexical.field_scores(query, indexed)
            if extra:
                rows = [i for i, pid in enumerate(ids) if pid in extra]
                fields[rows] = self.lexical.score_products(query, [extra[ids[i]] for i in rows])
        known = dict(dense or {})
        for hit in legs.get("dense", ()):
            known.setdefault(hit.product_id, hit.score)
        need = [pid for pid in ids if pid not in known and pid not in extra]
        if need:
            known.update(self.vectors.score(vector, need))
        cosine = np.array([known.get(pid, 0.0) for pid in ids], dtype=np.float32)
        return CandidateSet(query, tuple(ids), table, slots, fields, cosine, legs, dict(intent or {}))

    # -- ordering -----------------------------------------------------------------------------------------
    def order(self, ranker: LearnedRanker, candidates: CandidateSet, fused: Sequence[Fused], *,
              explain: bool = False, k: int | None = None
              ) -> tuple[list[Fused], dict[str, tuple[FeatureContribution, ...]]]:
        """`fused` re-ordered by the ranker's scores (the fused order breaks ties): the top `k`, or every
        candidate when `k` is None; with `explain`, the contributions of the hits returned (at most `k`)."""
        features = extract(candidates, needed=ranker.spec.feature_names)
        scores = ranker.score(features)
        by_id = {pid: i for i, pid in enumerate(candidates.ids)}
        fused_scores = np.array([scores[by_id[f.product_id]] for f in fused], dtype=np.float64)
        ranked = np.lexsort((np.arange(len(fused)), -fused_scores))  # stable: ties keep the fused order
        if k is not None:
            ranked = ranked[:k]
        out = [Fused(fused[i].product_id, float(fused_scores[i]), fused[i].legs) for i in ranked]
        contributions: dict[str, tuple[FeatureContribution, ...]] = {}
        if explain and out:
            shown = out if k is None else out[:k]
            rows = [by_id[f.product_id] for f in shown]
            for hit, items in zip(shown, ranker.contributions(features, rows, top=EXPLAIN_TOP), strict=True):
                contributions[hit.product_id] = items
        return out, contributions


def open_ranker(path: str, *, encoder: EncoderRef, lexical: Mapping[str, Any],
                intent_model: str | None) -> tuple[LearnedRanker, list[str]]:
    """Load a ranker for an index, refusing one that cannot read its features.

    A ranker is only ever used because someone configured it, so a mismatch that changes what features
    mean is an error (`check_encoder(strict=True)`): another encoder's cosine similarities, or intent
    probabilities from another intent model than the one this searcher runs. Another lexical engine or
    analyzer changes BM25 values only slightly: a warning, returned for `Results.warnings`."""
    ranker = LearnedRanker.load(path)
    check_encoder(ranker.card, encoder, what=f"the ranker {path}", strict=True)
    spec = ranker.spec
    if spec.intent_model and spec.intent_model != intent_model:
        raise IndexStateError(
            f"the ranker {path} reads the probabilities of intent model {spec.intent_model}, but this search runs"
            f" {intent_model or 'no intent model'}: configure that intent model, or retrain the ranker with"
            " `shopfusion train ranker` under the current settings")
    warnings = []
    trained = {key: spec.lexical.get(key) for key in ("engine", "analyzer") if spec.lexical.get(key)}
    serving = {key: lexical.get(key) for key in trained}
    if trained != serving:
        warnings.append(f"the ranker {path} was trained with lexical {trained} and this index uses {serving}:"
                        " BM25 features differ somewhat; retrain it on this index for the best order")
    return ranker, warnings


def intent_model_ref(policy: Policy) -> str | None:
    """The identity (`directory_hash`) of the intent model a searcher's policy runs, if any: what a
    ranker that reads intent probabilities names in its card and is checked against."""
    model = getattr(policy, "model", None)
    identity = getattr(model, "identity", None) if model is not None else None
    return str(identity) if identity else None


def _outside_key(product: Product) -> str:
    return f"\x00outside:{product.content_hash()}"


__all__ = ["EXPLAIN_TOP", "RankingStage", "intent_model_ref", "intent_probabilities",
           "open_ranker"]
