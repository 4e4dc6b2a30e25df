"""Learning a fusion policy (per-intent fusion rows) from validation judgments.

`shopfusion train policy` reads as its phases:

1. `collect_legs`: run both retrieval legs once per validation query (corpus: top `depth` of each leg;
   pool: each leg's scores of the judged products) and keep them, with the query vectors, in a `LegCache`;
2. predict each query's intent with the intent model the policy will serve with (as at query time);
3. `grid_scores`: nDCG@10 of every query under every grid point (method x alpha x normalisation),
   computed from the cached legs with `grid_fuse`, which reproduces `ranker.fusion.fuse` (scores and
   tie-breaks) for many configurations at once;
4. `learn_rows`: per policy key, coarse to fine (`intent`, then `label`), the grid point with the best mean
   nDCG@10 over the key's queries; a key gets its own row only with at least `min_queries` queries and a
   cross-validated gain of at least `min_gain` over the row it would otherwise inherit (backoff to its
   parent, finally to the global best);
5. `save_policy`: `policy.json` and the model card (which intent model the rows are keyed on).

>>> scores = np.array([[0.2, 0.8, 0.5], [0.6, 0.3, 0.9]])  # 2 grid points x 3 queries
>>> rows, _ = learn_rows(scores, [("a",), ("a",), ("b",)], min_queries=1, min_gain=0.01)
>>> rows  # global best 1; "a" gains 0.05 with point 0; "b" gains nothing and inherits
{'': 1, 'a': 0}
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.fusion import FusionConfig
from shopfusion.errors import TrainingError
from shopfusion.types import LegHit

log = logging.getLogger(__name__)

METRIC = "ndcg@10"


ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
"""The default alpha grid: 0.0, 0.1, ..., 1.0."""


def default_grid(alphas: Sequence[float] = ALPHAS,
                 normalizations: Sequence[str] = ("minmax", "zscore"), rrf_k: float = 60.0) -> list[FusionConfig]:
    """RRF plus linear fusion at every alpha and normalisation."""
    grid = [FusionConfig(method="rrf", rrf_k=rrf_k)]
    grid += [FusionConfig(method="linear", alpha=a, normalization=n) for n in normalizations for a in alphas]  # type: ignore[arg-type]
    return grid


def config_name(config: FusionConfig) -> str:
    if config.method == "rrf":
        return f"rrf(k={config.rrf_k:g})"
    return f"linear({config.alpha:g},{config.normalization})"


# -- phase 1: legs ----------------------------------------------------------------------------------
@dataclass
class LegCache:
    """Both legs of every query, in both evaluation modes, plus the query vectors."""

    queries: dict[str, str]
    vectors: np.ndarray
    corpus: dict[str, dict[str, list[tuple[str, float]]]]
    """qid -> leg -> [(product id, score)] best first (rank = position + 1)."""
    pool: dict[str, dict[str, Any]]
    """qid -> {"order": [judged ids in qrels order], "lexical": {id: score}, "dense": {id: score}}."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.queries)

    def vector(self, qid: str) -> np.ndarray:
        return self.vectors[self._row[qid]]

    def __post_init__(self) -> None:
        self._row = {qid: i for i, qid in enumerate(self.queries)}

    def corpus_legs(self, qid: str, depth: int | None = None) -> dict[str, list[LegHit]]:
        return {leg: [LegHit(pid, score, rank) for rank, (pid, score) in enumerate(hits[:depth], start=1)]
                for leg, hits in self.corpus[qid].items()}

    def pool_legs(self, qid: str) -> tuple[dict[str, list[LegHit]], dict[str, int]]:
        """As `HybridSearcher.rerank` builds them: each leg ranked by score, then id; caller order kept."""
        entry = self.pool[qid]
        legs = {}
        for leg in ("lexical", "dense"):
            ordered = sorted(entry[leg].items(), key=lambda item: (-item[1], item[0]))
            legs[leg] = [LegHit(pid, float(s), rank) for rank, (pid, s) in enumerate(ordered, start=1)]
        return legs, {pid: i for i, pid in enumerate(entry["order"])}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".npy"), self.vectors, allow_pickle=False)
        with gzip.open(path.with_suffix(".json.gz"), "wt", encoding="utf-8") as handle:
            json.dump({"queries": self.queries, "corpus": self.corpus, "pool": self.pool, "info": self.info}, handle)

    @classmethod
    def load(cls, path: str | Path) -> LegCache:
        path = Path(path)
        with gzip.open(path.with_suffix(".json.gz"), "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        corpus = {q: {leg: [(p, float(s)) for p, s in hits] for leg, hits in legs.items()}
                  for q, legs in data["corpus"].items()}
        return cls(data["queries"], np.load(path.with_suffix(".npy"), allow_pickle=False), corpus, data["pool"],
                   data.get("info", {}))

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        path = Path(path)
        return path.with_suffix(".json.gz").is_file() and path.with_suffix(".npy").is_file()


def collect_legs(searcher: Any, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]], *,
                 depth: int = 200, progress: bool = False) -> LegCache:
    """Run each leg of `searcher` (a `HybridSearcher`) once per query; the encoder runs in batches."""
    from tqdm.auto import tqdm

    ids = [q for q in queries if q in qrels]
    if not ids:
        raise TrainingError("no query has judgments: check that the queries and qrels files match")
    texts = [queries[q].strip() for q in ids]
    vectors = searcher.encoder.encode(texts, batch_size=128)
    corpus: dict[str, dict[str, list[tuple[str, float]]]] = {}
    pool: dict[str, dict[str, Any]] = {}
    for row, (qid, text) in enumerate(tqdm(list(zip(ids, texts, strict=True)), desc="legs", disable=not progress)):
        vector = vectors[row]
        corpus[qid] = {"lexical": [(h.product_id, h.score) for h in searcher.lexical.search(text, depth)],
                       "dense": [(h.product_id, h.score) for h in searcher.vectors.search(vector, depth)]}
        judged = list(qrels[qid])
        known = list(searcher.store.get_many(judged))
        pool[qid] = {"order": judged, "lexical": searcher.lexical.score(text, known),
                     "dense": searcher.vectors.score(vector, known)}
    info = {"depth": depth, "encoder": searcher.encoder.model_id, "index_version": searcher.manifest.version}
    return LegCache({q: queries[q] for q in ids}, vectors, corpus, pool, info)


# -- phase 3: scores --------------------------------------------------------------------------------
def grid_fuse(legs: Mapping[str, Sequence[LegHit]], grid: Sequence[FusionConfig], k: int = 10,
              order: Mapping[str, int] | None = None) -> list[list[str]]:
    """The top `k` ids of `ranker.fusion.fuse(legs, config, order)` for every config of `grid`, computed
    together (legs without NaN scores, at most one hit per product and leg, default leg weights)."""
    names = list(legs)
    ids: dict[str, None] = {}
    for hits in legs.values():
        ids.update(dict.fromkeys(h.product_id for h in hits))
    if order:
        ids.update(dict.fromkeys(order))
    universe = list(ids)
    n = len(universe)
    if n == 0:
        return [[] for _ in grid]
    where = {pid: i for i, pid in enumerate(universe)}
    raw = {leg: np.full(n, np.nan) for leg in names}
    rank = {leg: np.full(n, np.inf) for leg in names}
    for leg, hits in legs.items():
        for hit in hits:
            i = where[hit.product_id]
            if math.isnan(raw[leg][i]):
                raw[leg][i], rank[leg][i] = hit.score, hit.rank
    pid_order = np.empty(n, dtype=np.int64)
    pid_order[np.argsort(np.array(universe, dtype=object), kind="stable")] = np.arange(n)
    position = np.array([order.get(pid, len(order)) for pid in universe]) if order else np.zeros(n)
    normed: dict[tuple[str, str], np.ndarray] = {}
    out = []
    for config in grid:
        weights = config.weights(names)
        total = np.zeros(n)
        for leg in names:
            present = ~np.isnan(raw[leg])
            if config.method == "rrf":
                values = np.where(present, 1.0 / (config.rrf_k + rank[leg]), 0.0)
            else:
                key = (leg, config.normalization)
                if key not in normed:
                    normed[key] = _normalize(raw[leg], present, config.normalization)
                values = normed[key]
            total = total + weights[leg] * values
        best = np.full(n, np.inf)
        for leg in names:
            if weights[leg] > 0:
                best = np.minimum(best, rank[leg])
        best = np.where(np.isinf(best), float(1 << 30), best)
        top = np.lexsort((pid_order, position, best, -total))[:k]
        out.append([universe[i] for i in top])
    return out


def _normalize(raw: np.ndarray, present: np.ndarray, method: str) -> np.ndarray:
    """`ranker.fusion.normalize` plus the floor `fuse` gives to products a leg did not return."""
    values = raw[present]
    out = np.zeros(len(raw))
    if not len(values):
        return out
    if method == "minmax":
        low, high = float(values.min()), float(values.max())
        if high - low <= 1e-12 * max(1.0, abs(high)):
            out[present] = 1.0
        else:
            out[present] = (values - low) / (high - low)
        return out
    mean = float(values.sum() / len(values))
    spread = math.sqrt(float(((values - mean) ** 2).sum()) / len(values))
    z = np.zeros(len(values)) if spread <= 1e-12 * max(1.0, abs(mean)) else (values - mean) / spread
    out[:] = z.min()
    out[present] = z
    return out


def ndcg_per_query(tops: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """nDCG@10 per judged query (shopfusion.evaluation: graded gains, ranx), for ranked id lists."""
    from shopfusion.evaluation import evaluate_per_query

    run = {qid: {pid: float(len(ids) - i) for i, pid in enumerate(ids)} for qid, ids in tops.items()}
    return evaluate_per_query(run, {q: qrels[q] for q in tops}, (METRIC,))[METRIC]


def grid_scores(cache: LegCache, qrels: Mapping[str, Mapping[str, float]], grid: Sequence[FusionConfig], *,
                mode: str = "corpus", ids: Sequence[str] | None = None, depth: int | None = None,
                progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """nDCG@10 of each query (columns, returned ids order) under each grid point (rows). Queries without
    a relevant judgment are dropped."""
    from tqdm.auto import tqdm

    ids = list(ids or cache.ids)
    tops: list[dict[str, list[str]]] = [{} for _ in grid]
    for qid in tqdm(ids, desc=f"grid ({mode})", disable=not progress):
        if mode == "corpus":
            legs, order = cache.corpus_legs(qid, depth), None
        else:
            legs, order = cache.pool_legs(qid)
        for g, top in enumerate(grid_fuse(legs, grid, 10, order)):
            tops[g][qid] = top
    per_point = [ndcg_per_query(t, qrels) for t in tops]
    kept = [q for q in ids if q in per_point[0]]
    return np.array([[p[q] for q in kept] for p in per_point]), kept


# -- phase 4: rows ----------------------------------------------------------------------------------
def learn_rows(scores: np.ndarray, keys: Sequence[Sequence[str]], *, min_queries: int = 50,
               min_gain: float = 0.002, folds: int = 5) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Grid-point index per policy key, with statistics for every key seen.

    `scores`: grid points x queries; `keys[j]`: query j's policy keys, most specific first. Returns
    `rows` (key -> grid index; key `""` is the global best) and `stats` (key -> queries, the chosen and
    the inherited mean nDCG@10, the cross-validated gain, and whether the key got a row).

    A key's gain is cross-validated over `folds` contiguous blocks of its queries (the point picked on
    the other blocks, scored on this one), so a row is only kept when its choice generalises; with
    fewer queries than folds, or `folds < 2`, the in-sample gain is used."""
    if scores.shape[1] != len(keys) or not len(keys):
        raise TrainingError(f"{scores.shape[1]} score columns for {len(keys)} queries: need one per query, at least one")
    global_best = int(np.argmax(scores.mean(axis=1)))
    rows: dict[str, int] = {"": global_best}
    stats: dict[str, dict[str, Any]] = {"": {"queries": len(keys), METRIC: float(scores[global_best].mean())}}
    depth = max(len(k) for k in keys)
    for level in range(depth):  # coarse (last key) to fine (first)
        groups: dict[str, list[int]] = {}
        parents: dict[str, tuple[str, ...]] = {}
        for j, query_keys in enumerate(keys):
            if level < len(query_keys):
                key = query_keys[len(query_keys) - 1 - level]
                groups.setdefault(key, []).append(j)
                parents[key] = tuple(query_keys[len(query_keys) - level:])
        for key, members in sorted(groups.items()):
            inherited = next((rows[p] for p in parents[key] if p in rows), global_best)
            sub = scores[:, members]
            means = sub.mean(axis=1)
            best = int(np.argmax(means))
            gain = _cross_validated_gain(sub, inherited, folds)
            chosen = len(members) >= min_queries and gain >= min_gain
            if chosen:
                rows[key] = best
            stats[key] = {"queries": len(members), "best": best, f"best_{METRIC}": float(means[best]),
                          f"inherited_{METRIC}": float(means[inherited]), "inherited": inherited,
                          "cv_gain": gain, "row": chosen}
    return rows, stats


def _cross_validated_gain(sub: np.ndarray, inherited: int, folds: int) -> float:
    """Mean gain over the inherited point of the point chosen without each query's block."""
    n = sub.shape[1]
    if folds < 2 or n < folds:
        return float(sub.mean(axis=1).max() - sub[inherited].mean())
    block = np.arange(n) * folds // n
    gains = np.empty(n)
    for f in range(folds):
        inside = block != f
        pick = int(np.argmax(sub[:, inside].mean(axis=1)))
        gains[~inside] = sub[pick, ~inside] - sub[inherited, ~inside]
    return float(gains.mean())


def resolve(rows: Mapping[str, int], query_keys: Sequence[str]) -> int:
    """The grid index a query gets: its first key with a row, else the global best."""
    return next((rows[k] for k in query_keys if k in rows), rows[""])


def evaluate_assignment(scores: np.ndarray, assignment: Sequence[int]) -> np.ndarray:
    """Per-query nDCG@10 when query j uses grid point assignment[j]."""
    return scores[np.asarray(assignment), np.arange(scores.shape[1])]


@dataclass
class Timer:
    """Phase timings for the training report."""

    phases: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.phases[name] = round(time.perf_counter() - start, 2)


# -- putting it together ----------------------------------------------------------------------------
def policy_keys(policy: Any, cache: LegCache, ids: Sequence[str]) -> list[tuple[str, ...]]:
    """Each query's policy keys as the serving policy predicts them from the cached vector (as at query
    time: the intent model when it can read the vectors, else the rules)."""
    return [policy.predict(cache.queries[q], cache.vector(q)).keys for q in ids]


@dataclass
class LearnedPolicy:
    """What `learn_policy` found: the rows to serve, and how they were chosen."""

    policy: Any  # ranker.policy.PolicyFile
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def save_policy(learned: LearnedPolicy, directory: str | Path, *, encoder: Any, intent_model: str | None,
                data: Sequence[str]) -> Path:
    """Write `policy.json`, the model card (kind `fusion-policy`) and a README into `directory`."""
    from shopfusion.artifacts import ModelCard

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "policy.json"
    path.write_text(json.dumps(learned.policy.to_dict(), indent=1, default=str) + "\n", encoding="utf-8")
    card = ModelCard(kind="fusion-policy", encoder=encoder, method="per-intent grid search with backoff",
                     data=tuple(data), params={k: v for k, v in learned.training.items() if k != "keys"},
                     metrics=learned.metrics, extra={"intent_model": intent_model, "keys": learned.training.get("keys")})
    card.save(directory)
    (directory / "README.md").write_text(card.render(directory.name), encoding="utf-8")
    return path


def learn_policy(cache: LegCache, qrels: Mapping[str, Mapping[str, float]], policy: Any, *,
                 grid: Sequence[FusionConfig] | None = None, mode: str = "corpus", ids: Sequence[str] | None = None,
                 min_queries: int = 50, min_gain: float = 0.002, folds: int = 5, depth: int = 200,
                 progress: bool = False) -> LearnedPolicy:
    """Rows that maximise mean nDCG@10 per policy key on the given queries; `policy` predicts the keys
    (a `ranker.policy.IntentPolicy`, as it will serve). `mode`: `corpus`, `pool`, or `both` (the mean
    of the two per query)."""
    from ranker.policy import PolicyFile, PolicyRow

    grid = list(grid or default_grid())
    ids = list(ids or cache.ids)
    if mode == "both":
        corpus, kept_c = grid_scores(cache, qrels, grid, mode="corpus", ids=ids, progress=progress)
        pool, kept_p = grid_scores(cache, qrels, grid, mode="pool", ids=ids, progress=progress)
        common = [q for q in kept_c if q in set(kept_p)]
        ic, ip = {q: i for i, q in enumerate(kept_c)}, {q: i for i, q in enumerate(kept_p)}
        scores = (corpus[:, [ic[q] for q in common]] + pool[:, [ip[q] for q in common]]) / 2
        kept = common
    elif mode in ("corpus", "pool"):
        scores, kept = grid_scores(cache, qrels, grid, mode=mode, ids=ids, progress=progress)
    else:
        raise TrainingError(f"unknown mode {mode!r}: use corpus, pool or both")
    keys = policy_keys(policy, cache, kept)
    rows, stats = learn_rows(scores, keys, min_queries=min_queries, min_gain=min_gain, folds=folds)
    assignment = [resolve(rows, k) for k in keys]
    default = PolicyRow(grid[rows[""]], depth=depth)
    policy_rows = {key: PolicyRow(grid[i], depth=depth) for key, i in rows.items() if key}
    row_stats = {key: {"queries": s["queries"], METRIC: round(s[f"best_{METRIC}"], 5),
                       f"parent_{METRIC}": round(s[f"inherited_{METRIC}"], 5)}
                 for key, s in stats.items() if key in policy_rows}
    considered = {key or "(all)": {"queries": s["queries"], "best": config_name(grid[s.get("best", rows[""])]),
                                   f"best_{METRIC}": round(s.get(f"best_{METRIC}", s.get(METRIC, 0.0)), 5),
                                   f"inherited_{METRIC}": round(s.get(f"inherited_{METRIC}", s.get(METRIC, 0.0)), 5),
                                   "cv_gain": round(s.get("cv_gain", 0.0), 5),
                                   "row": bool(s.get("row", key == ""))}
                  for key, s in sorted(stats.items())}
    training = {"mode": mode, "queries": len(kept), "grid": [config_name(c) for c in grid],
                "min_queries": min_queries, "min_gain": min_gain, "folds": folds, "depth": depth,
                "legs": cache.info, "keys": considered}
    metrics = {f"train_{METRIC}_static_best": round(float(scores[rows['']].mean()), 5),
               f"train_{METRIC}_policy": round(float(evaluate_assignment(scores, assignment).mean()), 5),
               "static_best": config_name(grid[rows[""]])}
    return LearnedPolicy(PolicyFile(default=default, rows=policy_rows, stats=row_stats), training, metrics)
