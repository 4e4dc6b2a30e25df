"""Click logs: the format, a position-based click simulator, propensity estimation and debiased labels.

Format (JSONL, one search session a line)::

    {"query": "cordless drill", "query_id": "q17", "shown": ["p3", "p9", "p1", ...], "clicked": ["p9"]}

`shown` is the list the user saw, best first; `clicked` the products clicked in it (`query_id` is
optional). Clicks are biased by position: people click what they look at, and they look at the top.

Position-based model (PBM): a shown product at rank k is examined with probability `theta_k` and, if
examined, clicked with probability `gamma(q, d)` (its attractiveness, which tracks relevance):

    P(click at rank k) = theta_k * gamma(q, d)

Training labels must estimate `gamma`, not the raw click rate. With propensities `theta` (given, or
estimated from the log by expectation-maximisation, which needs each product to appear at several ranks
across sessions: a logging policy with some randomisation, or several rankers over time, supplies that),
the inverse-propensity-weighted click rate of a product,

    r(q, d) = sum over sessions showing d of click / theta_rank  /  number of sessions showing d,

is an unbiased estimate of `gamma(q, d)` (Joachims et al. 2017; Wang et al. 2018 for the EM). Products
never shown get no evidence: they are labelled 0, like unjudged products with judgments.

The simulator (`simulate`) is the one the ranker benchmark uses: it turns graded judgments into
sessions under the PBM with `theta_k = (1 / k) ** eta` and
`gamma = epsilon + (1 - epsilon) * (2 ** y - 1) / (2 ** y_max - 1)` where `y` is the grade scaled to
`[0, y_max]` (unjudged products are `y = 0`: clicked with the noise probability `epsilon` only).

>>> model = ClickModel(eta=1.0, epsilon=0.1, y_max=4)
>>> [round(model.examination(k), 3) for k in (1, 2, 4)]
[1.0, 0.5, 0.25]
>>> round(model.attractiveness(1.0), 3), round(model.attractiveness(0.0), 3)
(1.0, 0.1)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shopfusion.errors import TrainingError


@dataclass(frozen=True)
class Session:
    """One search: the query, the products shown in order, the ones clicked."""

    query: str
    shown: tuple[str, ...]
    clicked: frozenset[str]
    query_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"query": self.query, "shown": list(self.shown),
                                   "clicked": [p for p in self.shown if p in self.clicked]}
        if self.query_id is not None:
            data["query_id"] = self.query_id
        return data


def read_click_log(path: str | os.PathLike[str]) -> list[Session]:
    """Sessions from a JSONL click log; a malformed line is an error naming the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"click log {path} not found")
    sessions = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                shown = tuple(str(p) for p in record["shown"])
                clicked = frozenset(str(p) for p in record.get("clicked") or ())
                query = str(record["query"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise TrainingError(f"{path} line {number}: expected a JSON object with `query`, `shown` (a list)"
                                    f" and `clicked` (a list) ({exc})") from exc
            if not clicked <= set(shown):
                raise TrainingError(f"{path} line {number}: clicked products {sorted(clicked - set(shown))} were"
                                    " not shown in that session")
            query_id = record.get("query_id")
            sessions.append(Session(query, shown, clicked, None if query_id is None else str(query_id)))
    if not sessions:
        raise TrainingError(f"click log {path} holds no sessions")
    return sessions


def write_click_log(sessions: Iterable[Session], path: str | os.PathLike[str]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for session in sessions:
            handle.write(json.dumps(session.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


# -- simulation ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClickModel:
    """The position-based click model of the simulator (see the module docstring)."""

    eta: float = 1.0
    epsilon: float = 0.1
    y_max: float = 4.0

    def examination(self, rank: int) -> float:
        return float((1.0 / rank) ** self.eta)

    def attractiveness(self, relevance: float) -> float:
        """`relevance` in [0, 1] (grade scaled between the lowest and the highest grade)."""
        y = self.y_max * min(max(relevance, 0.0), 1.0)
        return float(self.epsilon + (1.0 - self.epsilon) * (2.0 ** y - 1.0) / (2.0 ** self.y_max - 1.0))


def simulate(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]],
             queries: Mapping[str, str], *, sessions_per_query: int = 20, shown: int = 10, pool: int = 20,
             temperature: float = 1.0, model: ClickModel = ClickModel(), seed: int = 0) -> list[Session]:
    """Sessions of a logging policy over each query's `rankings` (best first), clicked by `model`.

    Logging policy: each session shows `shown` products drawn without replacement from the top `pool`
    of the ranking with probability proportional to `1 / rank ** temperature` (Plackett-Luce), so the
    top stays on top but products move between ranks, which lets EM tell position from attraction.
    Relevance is the judged grade scaled to [0, 1] by the lowest and highest grade in `qrels`."""
    grades = [g for docs in qrels.values() for g in docs.values()]
    if not grades:
        raise TrainingError("no judgments to simulate clicks from")
    low, high = min(grades), max(grades)
    span = (high - low) or 1.0
    rng = np.random.default_rng(seed)
    sessions = []
    examination = np.array([model.examination(k) for k in range(1, shown + 1)])
    for qid, ranking in rankings.items():
        if qid not in queries:
            continue
        top = list(ranking[:pool])
        if not top:
            continue
        judged = qrels.get(qid, {})
        attraction = np.array([model.attractiveness((judged[p] - low) / span) if p in judged else model.epsilon
                               for p in top])
        weights = 1.0 / np.arange(1, len(top) + 1) ** temperature
        for _ in range(sessions_per_query):
            order = _plackett_luce(rng, weights)[:shown]
            count = len(order)
            clicks = rng.random(count) < examination[:count] * attraction[order]
            sessions.append(Session(queries[qid], tuple(top[i] for i in order),
                                    frozenset(top[i] for i, c in zip(order, clicks, strict=True) if c), qid))
    return sessions


def _plackett_luce(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """A Plackett-Luce permutation: sampling without replacement proportional to `weights`
    (Efraimidis-Spirakis keys `u ** (1 / w)`, sorted)."""
    keys = rng.random(len(weights)) ** (1.0 / weights)
    return np.argsort(-keys)


# -- propensities and labels --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observations:
    """Impressions and clicks per (query, product, rank) cell, the sufficient statistics of the PBM."""

    keys: list[tuple[str, str]]
    cell_key: np.ndarray
    cell_rank: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    ranks: int

    @classmethod
    def of(cls, sessions: Iterable[Session], ranks: int | None = None, by_id: bool = True) -> Observations:
        counts: dict[tuple[int, int], list[int]] = {}
        index: dict[tuple[str, str], int] = {}
        deepest = 0
        for session in sessions:
            query = session.query_id if by_id and session.query_id is not None else session.query
            for position, product in enumerate(session.shown, start=1):
                if ranks is not None and position > ranks:
                    break
                key = index.setdefault((query, product), len(index))
                cell = counts.setdefault((key, position), [0, 0])
                cell[0] += 1
                cell[1] += product in session.clicked
                deepest = max(deepest, position)
        if not counts:
            raise TrainingError("the click log shows no products")
        cells = np.array(list(counts), dtype=np.int64)
        values = np.array(list(counts.values()), dtype=np.float64)
        return cls(list(index), cells[:, 0], cells[:, 1] - 1, values[:, 0], values[:, 1], ranks or deepest)


def estimate_propensities(sessions: Sequence[Session], *, ranks: int | None = None, iterations: int = 100,
                          tolerance: float = 1e-6) -> np.ndarray:
    """Examination probabilities `theta_1..theta_K` under the PBM by expectation-maximisation over the
    log, normalised so `theta_1 = 1` (the top result is always looked at; the PBM cannot tell a
    scale of `theta` from one of `gamma`)."""
    obs = Observations.of(sessions, ranks)
    theta = 1.0 / np.arange(1, obs.ranks + 1)
    gamma = np.full(len(obs.keys), 0.5)
    n, c = obs.impressions, obs.clicks
    for _ in range(iterations):
        t, g = theta[obs.cell_rank], gamma[obs.cell_key]
        miss = np.maximum(1.0 - t * g, 1e-12)
        examined = c + (n - c) * t * (1.0 - g) / miss
        attracted = c + (n - c) * (1.0 - t) * g / miss
        new_theta = np.bincount(obs.cell_rank, examined, obs.ranks) / np.maximum(np.bincount(obs.cell_rank, n, obs.ranks), 1e-12)
        gamma = np.clip(np.bincount(obs.cell_key, attracted, len(obs.keys)) /
                        np.maximum(np.bincount(obs.cell_key, n, len(obs.keys)), 1e-12), 1e-6, 1.0)
        new_theta = np.clip(new_theta / max(new_theta[0], 1e-12), 1e-6, 1.0)
        done = float(np.abs(new_theta - theta).max()) < tolerance
        theta = new_theta
        if done:
            break
    return theta


def debiased_relevance(sessions: Sequence[Session], propensities: Sequence[float], *,
                       by_id: bool = True) -> dict[str, dict[str, float]]:
    """Inverse-propensity-weighted click rate per query (id, else text) and product, clipped to [0, 1];
    products shown below the last rank with a propensity are not counted."""
    theta = np.asarray(propensities, dtype=np.float64)
    if not len(theta) or (theta <= 0).any():
        raise TrainingError("propensities must be positive, one per rank starting at rank 1")
    obs = Observations.of(sessions, len(theta), by_id=by_id)
    weighted = np.bincount(obs.cell_key, obs.clicks / theta[obs.cell_rank], len(obs.keys))
    shown = np.bincount(obs.cell_key, obs.impressions, len(obs.keys))
    out: dict[str, dict[str, float]] = {}
    for (query, product), w, s in zip(obs.keys, weighted, shown, strict=True):
        out.setdefault(query, {})[product] = float(min(1.0, w / s)) if s else 0.0
    return out


def click_labels(relevance: Mapping[str, Mapping[str, float]], levels: int = 10) -> dict[str, dict[str, int]]:
    """Debiased relevance in [0, 1] as integer labels `0..levels` for LambdaMART."""
    return {q: {p: int(round(r * levels)) for p, r in docs.items()} for q, docs in relevance.items()}


__all__ = ["ClickModel", "Observations", "Session", "click_labels", "debiased_relevance", "estimate_propensities",
           "read_click_log", "simulate", "write_click_log"]
