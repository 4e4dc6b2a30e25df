"""Hybrid search and re-ranking over one published index version.

`HybridSearcher.search`: encode the query once, let the policy choose the fusion for it, retrieve
`depth` candidates from each leg with the same filters, fuse, and return typed hits (with the per-leg
breakdown when `explain`). `HybridSearcher.rerank`: the same policy and fusion over a caller's candidate
list only; candidates the index lacks are scored from the text they come with, with the index's
statistics. With a learned ranker configured (`search.ranker`, or per call), the ranking stage
(`ranker.stage`) then orders all fused candidates. A `ResultView` picks the page and order of
that set and the facets counted over it (`ranker.view`).

When one leg's engine is down (a `BackendError`: Elasticsearch unreachable, say), a hybrid search or
re-rank answers from the other leg and says so in `Results.warnings`, unless `search.on_leg_failure` is
`fail` (see `_call_leg`); a single-leg search whose engine is down fails with the backend's error. A
learned ranker reads both legs' features, so it is skipped (and said) while a leg is down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from indexer.attributes import CATALOG_FILE, AttributeCatalog
from indexer.docstore import ProductStore
from indexer.manifest import IndexDirectory, Manifest
from indexer.stores import LexicalIndex, open_lexical
from indexer.stores.ann_tuning import effective_width
from indexer.stores.faiss_store import FaissVectorIndex
from ranker.fusion import Fused, FusionConfig, fuse
from ranker.paging import SortKey
from ranker.policy import Decision, Policy, PolicyRow, load_policy
from ranker.view import ResultView, ViewPlan, plan_view
from shopfusion.artifacts import EncoderRef
from shopfusion.config import Settings, check_count
from shopfusion.encoders import Encoder, load_encoder
from shopfusion.errors import BackendError, IndexStateError, QueryError
from shopfusion.types import (
    Candidate,
    Facets,
    FeatureContribution,
    Filters,
    Hit,
    LegHit,
    LegScore,
    Page,
    Product,
    Results,
    Unscored,
)

if TYPE_CHECKING:
    from ranker.features import CandidateSet
    from ranker.learned import LearnedRanker
    from ranker.stage import RankingStage

Mode = Literal["hybrid", "lexical", "dense"]
_LegResult = TypeVar("_LegResult")
ENGINE_LEG = "engine"


@dataclass(frozen=True)
class SearchOptions:
    """Per-call overrides; None keeps what the policy chose."""

    method: str | None = None
    alpha: float | None = None
    normalization: str | None = None
    rrf_k: float | None = None
    depth: int | None = None
    ranker: str | None = None
    """A learned ranker's directory, or `none`, for this call (None: `search.ranker`)."""

    def apply(self, row: PolicyRow) -> PolicyRow:
        return row.override(method=self.method, alpha=self.alpha, normalization=self.normalization,
                            rrf_k=self.rrf_k, depth=self.depth)

    def given(self) -> dict[str, str]:
        """The options this call sets, in the `[search]` key names `--explain` reports overrides by."""
        names = {"method": "fusion", "alpha": "alpha", "normalization": "normalization", "rrf_k": "rrf_k",
                 "depth": "depth", "ranker": "ranker"}
        return {names[key]: "call" for key, value in self.__dict__.items() if value is not None}


class HybridSearcher:
    """Reads the version the manifest names at construction; open a new one after re-indexing."""

    def __init__(self, index_dir: str | Path, settings: Settings | None = None,
                 policy: Policy | None = None) -> None:
        self.settings = settings or Settings()
        check_count("search.vector_threads", self.settings.search.vector_threads,
                    "the OpenMP threads of one query's vector search (1, the default; 0: one per core)")
        self.directory = IndexDirectory(index_dir)
        self.manifest: Manifest = self.directory.read_manifest()
        version_dir = self.directory.version_path(self.manifest.version)
        self.store = ProductStore(version_dir / "products.sqlite")
        lexical_info = self.manifest.lexical
        self.lexical: LexicalIndex = open_lexical(
            self.settings, version_dir, self.manifest.version, lexical_info.get("namespace", ""),
            create=False, engine=lexical_info["engine"], analyzer=lexical_info.get("analyzer"))
        self.width = effective_width(self.manifest.vector, self.settings)
        """The dense leg's search width: explicit settings, else what the build tuned (`ann_tuning`)."""
        ef_search, nprobe = self.width.widths(self.settings.index)
        self.vectors = FaissVectorIndex(version_dir / "vectors", ef_search=ef_search, nprobe=nprobe,
                                        query_threads=self.settings.search.vector_threads)
        try:
            _refuse_damaged(version_dir, self.manifest, self.vectors)
        except IndexStateError:
            self.close()
            raise
        self.encoder: Encoder = query_encoder(self.manifest, self.settings)
        self.policy = policy or load_policy(self.settings, EncoderRef(self.manifest.model_id, self.manifest.dim))
        self._stage: RankingStage | None = None
        self._rankers: dict[str, tuple[LearnedRanker, list[str]]] = {}

    def close(self) -> None:
        self.store.close()
        self.lexical.close()

    @cached_property
    def catalog(self) -> AttributeCatalog:
        """The version's attribute catalog: what can be filtered, faceted and sorted on."""
        return AttributeCatalog.load(self.directory.version_path(self.manifest.version) / CATALOG_FILE)

    # -- search --------------------------------------------------------------------------------------
    def search(self, query: str, *, k: int | None = None, filters: Filters | None = None,
               options: SearchOptions | None = None, mode: Mode = "hybrid", explain: bool = False,
               view: ResultView | None = None) -> Results:
        query = query.strip()
        if not query:
            raise QueryError("the query is empty: give some words to search for")
        k = self.settings.search.k if k is None else k
        if k <= 0:
            raise QueryError(f"k must be at least 1, got {k}")
        plan = plan_view(view, filters, lambda: self.catalog)
        vector = self.encoder.encode_query(query) if mode != "lexical" else None
        decision = self._decide(query, vector, options)
        row = decision.row
        if not row.search:  # only where a deployment's policy opted in to withholding this intent
            return Results(query, (), row.fusion.to_dict(), decision.intent, decision.message, decision.warnings)
        warnings: list[str] = []
        legs = self.retrieve(query, vector, max(row.depth, k), filters, mode, warnings=warnings)
        learned: _Learned | None = None
        if mode == "hybrid":
            fused = fuse(legs, _surviving(row.fusion, legs))
            assert vector is not None
            if not warnings:
                learned = self._learned(query, vector, decision, legs, fused, options, explain, None)
            else:
                warnings += self._ranker_skipped(options)
            fused = learned.fused if learned else fused  # the whole relevant set, in the stage's order
        else:
            fused = [Fused(h.product_id, h.score, {mode: LegScore(h.score, None, h.rank, h.score)})
                     for h in legs[mode]]
        shown, page, facets = self._view(plan, fused, k, max(row.depth, k), warnings)
        results = self._results(query, shown, decision, mode, explain, {}, learned, first_rank=page.offset + 1)
        results = dataclasses.replace(results, page=page, facets=facets)
        return dataclasses.replace(results, warnings=(*results.warnings, *warnings)) if warnings else results

    def _view(self, plan: ViewPlan, fused: list[Fused], k: int, depth: int,
              warnings: list[str]) -> tuple[list[Fused], Page, Facets | None]:
        """The page and facets of the relevant set. Facets are the lexical engine's aggregations: while
        it is down, the page still comes back, without facets and with a warning (unless
        `search.on_leg_failure = "fail"`)."""
        def values(ids: Sequence[str], key: SortKey) -> Sequence[object]:
            return self.vectors.sort_values(ids, key.field, key.numeric)

        try:
            return plan.apply(fused, k=k, depth=depth, lexical=self.lexical, values=values)
        except BackendError as exc:
            if not plan.facets or self.settings.search.on_leg_failure == "fail":
                raise
            warnings.append(f"facets need the lexical engine, which is down ({exc}): results come without them")
            return dataclasses.replace(plan, facets=()).apply(fused, k=k, depth=depth, lexical=self.lexical,
                                                              values=values)

    def retrieve(self, query: str, vector: np.ndarray | None, depth: int, filters: Filters | None = None,
                 mode: Mode = "hybrid", *, warnings: list[str] | None = None) -> dict[str, list[LegHit]]:
        """Each leg's top `depth` among the products matching `filters` (the same filters on both).

        With `warnings` (a hybrid search), a leg whose engine is down is left out and said there (see
        `_call_leg`); without it (training, benchmarks) the `BackendError` stands."""
        legs: dict[str, list[LegHit]] = {}
        if mode in ("hybrid", "lexical"):
            legs.update(self._call_leg("lexical", lambda: self.lexical.search(query, depth, filters), mode, warnings))
        if mode in ("hybrid", "dense"):
            assert vector is not None
            legs.update(self._call_leg("dense", lambda: self.vectors.search(vector, depth, filters), mode, warnings))
        return legs

    def _call_leg(self, leg: str, call: Callable[[], _LegResult], mode: str,
                  warnings: list[str] | None) -> dict[str, _LegResult]:
        """`{leg: call()}`, or `{}` with a warning when the leg's engine is down and the other leg can
        answer (hybrid modes, `search.on_leg_failure = "degrade"`); otherwise the `BackendError` stands."""
        try:
            return {leg: call()}
        except BackendError as exc:
            if (warnings is None or warnings or mode not in ("hybrid", "rerank")
                    or self.settings.search.on_leg_failure == "fail"):
                raise
            other = "dense" if leg == "lexical" else "lexical"
            warnings.append(f"the {leg} leg is down, results come from the {other} leg only ({exc}); set"
                            " search.on_leg_failure = \"fail\" to get an error instead")
            return {}

    def _ranker_skipped(self, options: SearchOptions | None) -> list[str]:
        """The warning for a configured learned ranker that a leg outage leaves out (it reads both legs)."""
        ranker, _ = self.ranker(options)
        if ranker is None:
            return []
        return ["the learned ranker is skipped while a leg is down (it reads both legs): results are in fused"
                " order"]

    def _decide(self, query: str, vector: np.ndarray | None, options: SearchOptions | None) -> Decision:
        """The policy's decision, with this call's options applied over it (and named in `--explain`)."""
        decision = self.policy.decide(query, vector)
        given = options.given() if options is not None else {}
        if not given:
            return decision
        assert options is not None
        row = options.apply(decision.row)
        intent = decision.intent
        if intent is not None:
            overrides = {**intent.policy.get("overrides", {}), **given}
            intent = replace(intent, policy={**intent.policy, **row.to_dict(), "overrides": overrides})
        return replace(decision, intent=intent, row=row)

    def _results(self, query: str, fused: list[Fused], decision: Decision, mode: str, explain: bool,
                 extra_products: dict[str, Product], learned: _Learned | None = None,
                 first_rank: int = 1) -> Results:
        products = self.store.get_many([f.product_id for f in fused])
        products.update({pid: p for pid, p in extra_products.items() if pid not in products})
        contributions = learned.contributions if learned else {}
        hits = tuple(
            Hit(product_id=f.product_id, score=f.score, rank=rank, product=products.get(f.product_id),
                legs=dict(f.legs) if explain else None, contributions=contributions.get(f.product_id))
            for rank, f in enumerate(fused, start=first_rank)
        )
        info: dict[str, Any] = {"mode": mode, **decision.row.fusion.to_dict(), "depth": decision.row.depth}
        if mode in ("lexical", "dense"):  # one leg: no fusion to report
            info = {"mode": mode, "depth": decision.row.depth}
        warnings = tuple(decision.warnings)
        if learned is not None:
            info["ranker"] = learned.ranker.describe()
            warnings += tuple(w for w in learned.warnings if w not in warnings)
        return Results(query, hits, info, decision.intent, decision.message, warnings)

    # -- the learned ranking stage -------------------------------------------------------------------
    @property
    def stage(self) -> RankingStage:
        if self._stage is None:
            from ranker.stage import RankingStage

            self._stage = RankingStage(self.store, self.lexical, self.vectors)
        return self._stage

    def ranker(self, options: SearchOptions | None = None) -> tuple[LearnedRanker | None, list[str]]:
        """The learned ranker for a call (`options.ranker`, else `search.ranker`; `none`: no stage) and
        the warnings that go with it; loaded once per path and checked against this index."""
        name = options.ranker if options is not None and options.ranker is not None else self.settings.search.ranker
        if not name or name == "none":
            return None, []
        if name not in self._rankers:
            from ranker.stage import intent_model_ref, open_ranker

            self._rankers[name] = open_ranker(
                name, encoder=EncoderRef(self.manifest.model_id, self.manifest.dim), lexical=self.manifest.lexical,
                intent_model=intent_model_ref(self.policy))
        ranker, warnings = self._rankers[name]
        return ranker, list(warnings)

    def candidate_set(self, query: str, vector: np.ndarray, decision: Decision, legs: Mapping[str, Sequence[LegHit]],
                      fused: Sequence[Fused], *, extra: Mapping[str, Product] | None = None,
                      dense: Mapping[str, float] | None = None) -> CandidateSet:
        """What the ranking stage reads for these candidates: the one function search, re-rank and
        `shopfusion train ranker` all call."""
        from ranker.stage import intent_probabilities

        retrieval = {leg: hits for leg, hits in legs.items() if leg in ("lexical", "dense")}
        return self.stage.collect(query, vector, retrieval, [f.product_id for f in fused],
                                  intent=intent_probabilities(decision), extra=extra, dense=dense)

    def _learned(self, query: str, vector: np.ndarray, decision: Decision, legs: Mapping[str, Sequence[LegHit]],
                 fused: list[Fused], options: SearchOptions | None, explain: bool, k: int | None, *,
                 extra: Mapping[str, Product] | None = None, dense: Mapping[str, float] | None = None
                 ) -> _Learned | None:
        ranker, warnings = self.ranker(options)
        if ranker is None or not fused:
            return None
        candidates = self.candidate_set(query, vector, decision, legs, fused, extra=extra, dense=dense)
        ordered, contributions = self.stage.order(ranker, candidates, fused, explain=explain, k=k)
        return _Learned(ranker, ordered, contributions, warnings)

    # -- re-ranking ----------------------------------------------------------------------------------
    def rerank(self, query: str, candidates: Sequence[Candidate], *, options: SearchOptions | None = None,
               explain: bool = False, engine_weight: float = 0.0) -> Results:
        """Re-order `candidates` by the fusion the policy picks for `query`, scoring only them.

        Candidates the index holds are scored by its BM25 and its stored vectors. Candidates it lacks
        are scored from the `product` they carry, by BM25 with the index's statistics (document
        frequencies, average field lengths: as if they were indexed, so scores stay comparable with the
        indexed candidates and with search) and by encoding their text. A candidate neither indexed nor
        carrying a product cannot be scored: it stays in the hits, ranked after every scored candidate
        in its original order, and is listed in `unscored` with the reason (never silently scored 0). Scores that the
        other engine sent form a third leg, `engine`, weighted by `engine_weight` (0: shown, not counted).
        """
        query = query.strip()
        if not query:
            raise QueryError("the query is empty: give some words to search for")
        unique: dict[str, Candidate] = {}
        for candidate in candidates:
            unique.setdefault(candidate.product_id, candidate)
        order = {pid: i for i, pid in enumerate(unique)}
        vector = self.encoder.encode_query(query)
        decision = self._decide(query, vector, options)  # re-ranking never withholds the caller's candidates
        known = self.store.get_many(list(unique))
        extra = {pid: c.product for pid, c in unique.items() if pid not in known and c.product is not None}
        unscored = tuple(Unscored(pid, "not in the index, and " + (c.note or "it carries no title or text"))
                         for pid, c in unique.items() if pid not in known and pid not in extra)

        warnings: list[str] = []
        lexical_leg = self._call_leg("lexical", lambda: self._lexical_scores(query, known, extra), "rerank", warnings)
        dense_scores = self.vectors.score(vector, list(known))
        if extra:
            texts = [p.embedding_text() for p in extra.values()]
            extra_vectors = self.encoder.encode(texts)
            dense_scores.update(zip(extra, (extra_vectors @ vector).tolist(), strict=True))
        legs = {name: _ranked(scores) for name, scores in (*lexical_leg.items(), ("dense", dense_scores))}
        row = decision.row
        fusion = _surviving(row.fusion, legs)
        engine_scores = {pid: c.score for pid, c in unique.items() if c.score is not None}
        if engine_scores:
            legs[ENGINE_LEG] = _ranked(engine_scores)  # type: ignore[arg-type]
            fusion = fusion.__class__(**{**fusion.__dict__,
                                         "extra_weights": {**fusion.extra_weights, ENGINE_LEG: engine_weight}})
        fused = fuse(legs, fusion, order=order)
        unscorable = {u.product_id for u in unscored}
        scorable = [f for f in fused if f.product_id not in unscorable]
        learned = None
        if not warnings:
            learned = self._learned(query, vector, decision, legs, scorable, options, explain, None, extra=extra,
                                    dense=dense_scores)
        else:
            warnings += self._ranker_skipped(options)
        if learned is not None:  # the ranker orders what can be scored; the rest stays last, in its order
            fused = learned.fused + [f for f in fused if f.product_id in unscorable]
        results = self._results(query, fused, replace(decision, row=row), "rerank", explain, extra, learned)
        info = {**results.fusion, "mode": "rerank", "candidates": len(unique), "indexed": len(known),
                "scored_from_text": len(extra), "unscorable": len(unscored)}
        said = (*results.warnings, *warnings)
        if unscored:
            said += (f"{len(unscored)} of {len(unique)} candidates could not be scored and are ranked last"
                     " in their original order (see `unscored`): send their title or text, or name the"
                     " source field that holds it with `fields`",)
        return replace(results, fusion=info, warnings=said, unscored=unscored)

    def _lexical_scores(self, query: str, known: Mapping[str, Product], extra: Mapping[str, Product]
                        ) -> dict[str, float]:
        """BM25 of the indexed candidates; those the index lacks are scored with the index's statistics,
        as if they were indexed."""
        scores = self.lexical.score(query, list(known))
        if extra:
            from ranker.features import FIELD_BOOSTS

            totals = self.lexical.score_products(query, list(extra.values())) @ FIELD_BOOSTS
            scores.update((pid, float(total)) for pid, total in zip(extra, totals, strict=True) if total > 0)
        return scores


@dataclass(frozen=True)
class _Learned:
    """What the ranking stage did to one result list."""

    ranker: LearnedRanker
    fused: list[Fused]
    contributions: Mapping[str, tuple[FeatureContribution, ...]]
    warnings: list[str]


def query_encoder(manifest: Manifest, settings: Settings) -> Encoder:
    """The query encoder for an index: its own backend under `auto`, another one only within the measured
    tolerance (`shopfusion.backends.check_mix` raises otherwise)."""
    from shopfusion.backends import check_mix, choose_backend

    index = settings.index
    backend = choose_backend(index.backend, manifest.model, index.device, min_cosine=index.backend_min_cosine,
                             index_backend=manifest.backend)
    encoder = load_encoder(manifest.model, index.device, backend)
    check_mix(manifest.backend_record, encoder, min_cosine=index.backend_min_cosine)
    return encoder


def _ranked(scores: dict[str, float]) -> list[LegHit]:
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [LegHit(pid, float(score), rank) for rank, (pid, score) in enumerate(ordered, start=1)]


def _surviving(fusion: FusionConfig, legs: Mapping[str, Sequence[LegHit]]) -> FusionConfig:
    """The fusion for the legs that answered: a retrieval leg that is down leaves all the weight to the
    other (so alpha = 0 or 1 cannot zero every weight)."""
    missing = {"lexical", "dense"} - set(legs)
    if not missing or len(missing) == 2:
        return fusion
    (present,) = {"lexical", "dense"} - missing
    return dataclasses.replace(fusion, extra_weights={**fusion.extra_weights, present: 1.0})


def _refuse_damaged(version_dir: Path, manifest: Manifest, vectors: FaissVectorIndex) -> None:
    """Never answer from a visibly damaged version (wrong products are worse than an error)."""
    from indexer.integrity import quick_check

    problems = quick_check(version_dir, manifest, vectors.ordered_ids())
    if problems:
        raise IndexStateError(f"version {manifest.version} is damaged ({'; '.join(problems[:3])}): run"
                              " `shopfusion verify --repair`, or `shopfusion rollback` to the previous version")
