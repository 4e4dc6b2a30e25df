"""Score fusion: pure functions over ranked lists, every edge case defined.

Two methods:

- Reciprocal rank fusion: `score(d) = sum_leg w_leg / (k + rank_leg(d))`; a leg that did not return `d`
  adds nothing. `k` (default 60, Cormack et al. 2009) is a parameter.
- Normalized linear fusion: `score(d) = sum_leg w_leg * norm_leg(d)` with min-max or z-score
  normalisation within each leg's list; for the two retrieval legs the weights are `1 - alpha` (lexical)
  and `alpha` (dense).

Edge cases:
- an empty leg contributes nothing; all legs empty gives an empty list;
- min-max over equal scores (including a single hit) gives 1.0 to every hit; z-score with zero spread
  gives 0.0;
- a document missing from a leg (or with a NaN score there) gets that leg's floor: 0 for min-max, the
  lowest z-score in the leg for z-score (never better than the worst retrieved);
- negative weights, weights summing to zero, alpha outside [0, 1] or a negative RRF k raise FusionError;
- ties are broken by the best rank in any leg with a positive weight, then by `order` (the caller's original order, for
  re-ranking) and finally by product id, so results are deterministic.

>>> from shopfusion.types import LegHit
>>> legs = {"lexical": [LegHit("a", 9.0, 1), LegHit("b", 3.0, 2)],
...         "dense": [LegHit("b", 0.8, 1), LegHit("a", 0.2, 2)]}
>>> [(f.product_id, round(f.score, 3)) for f in fuse(legs, FusionConfig(method="linear", alpha=0.7))]
[('b', 0.7), ('a', 0.3)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from shopfusion.errors import FusionError
from shopfusion.types import FusionMethod, LegHit, LegScore, Normalization

DEFAULT_RRF_K = 60.0


@dataclass(frozen=True)
class FusionConfig:
    """How to fuse. `alpha` is the dense leg's weight in linear fusion (lexical gets `1 - alpha`);
    `weights` overrides per-leg weights for either method (default: 1 each for RRF)."""

    method: FusionMethod = "linear"
    alpha: float = 0.5
    normalization: Normalization = "minmax"
    rrf_k: float = DEFAULT_RRF_K
    extra_weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "linear"):
            raise FusionError(f"unknown fusion method {self.method!r}: use `rrf` or `linear`")
        if not 0.0 <= self.alpha <= 1.0 or math.isnan(self.alpha):
            raise FusionError(f"alpha must be within [0, 1] (weight of the dense leg), got {self.alpha}")
        if self.normalization not in ("minmax", "zscore"):
            raise FusionError(f"unknown normalization {self.normalization!r}: use `minmax` or `zscore`")
        if self.rrf_k < 0 or math.isnan(self.rrf_k):
            raise FusionError(f"the RRF constant k must be >= 0, got {self.rrf_k}")

    def weights(self, legs: Sequence[str]) -> dict[str, float]:
        if self.method == "linear":
            base = {"lexical": 1.0 - self.alpha, "dense": self.alpha}
        else:
            base = {"lexical": 1.0, "dense": 1.0}
        weights = {leg: float(self.extra_weights.get(leg, base.get(leg, 0.0))) for leg in legs}
        if any(w < 0 or math.isnan(w) for w in weights.values()):
            raise FusionError(f"fusion weights must be >= 0, got {weights}")
        if legs and sum(weights.values()) <= 0:
            raise FusionError(f"fusion weights sum to zero ({weights}): give at least one leg a weight")
        return weights

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "alpha": self.alpha, "normalization": self.normalization,
                "rrf_k": self.rrf_k, **({"weights": dict(self.extra_weights)} if self.extra_weights else {})}


@dataclass(frozen=True)
class Fused:
    product_id: str
    score: float
    legs: Mapping[str, LegScore]


def normalize(scores: Sequence[float], method: Normalization = "minmax") -> list[float]:
    """Normalise one leg's scores; NaN stays NaN (treated as missing by `fuse`)."""
    finite = [s for s in scores if not math.isnan(s)]
    if not finite:
        return [math.nan] * len(scores)
    if method == "minmax":
        low, high = min(finite), max(finite)
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return [math.nan if math.isnan(s) else 1.0 for s in scores]
        return [math.nan if math.isnan(s) else (s - low) / (high - low) for s in scores]
    mean = sum(finite) / len(finite)
    spread = math.sqrt(sum((s - mean) ** 2 for s in finite) / len(finite))
    if spread <= 1e-12 * max(1.0, abs(mean)):
        return [math.nan if math.isnan(s) else 0.0 for s in scores]
    return [math.nan if math.isnan(s) else (s - mean) / spread for s in scores]


def fuse(legs: Mapping[str, Sequence[LegHit]], config: FusionConfig,
         order: Mapping[str, int] | None = None) -> list[Fused]:
    """Fuse ranked lists into one, best first, with each leg's share of every score."""
    weights = config.weights(list(legs))
    per_leg: dict[str, dict[str, tuple[float, float, int]]] = {}
    floors: dict[str, float] = {}
    for leg, hits in legs.items():
        if config.method == "linear":
            normed = normalize([h.score for h in hits], config.normalization)
            finite = [n for n in normed if not math.isnan(n)]
            floors[leg] = 0.0 if config.normalization == "minmax" or not finite else min(finite)
        else:
            normed = [1.0 / (config.rrf_k + h.rank) if not math.isnan(h.score) else math.nan for h in hits]
            floors[leg] = 0.0
        entries: dict[str, tuple[float, float, int]] = {}
        for hit, value in zip(hits, normed, strict=True):
            if hit.product_id not in entries:  # a leg lists each product once; keep the best
                entries[hit.product_id] = (hit.score, value, hit.rank)
        per_leg[leg] = entries

    ids: dict[str, None] = {}
    for entries in per_leg.values():
        ids.update(dict.fromkeys(entries))
    if order:
        ids.update(dict.fromkeys(order))

    tables = _LegTables(per_leg, weights, floors)
    columns = [(entries, weights[leg], floors[leg]) for leg, entries in per_leg.items()]
    fused: list[tuple[float, int, int, str]] = []
    for pid in ids:
        total = 0.0
        best_rank = math.inf
        for entries, weight, floor in columns:  # the same sums, in the same order, as LegTables.breakdown
            entry = entries.get(pid)
            if entry is None or math.isnan(entry[1]):
                total += weight * floor
            else:
                total += weight * entry[1]
                if weight > 0 and entry[2] < best_rank:
                    best_rank = entry[2]
        position = order.get(pid, len(order)) if order else 0
        fused.append((total, int(best_rank) if best_rank != math.inf else 1 << 30, position, pid))
    fused.sort(key=lambda item: (-item[0], item[1], item[2], item[3]))
    return [Fused(pid, score, _Breakdown(pid, tables)) for score, _, _, pid in fused]


@dataclass(frozen=True)
class _LegTables:
    """One fusion's per-leg entries (raw score, normalised value, rank), weights and floors."""

    per_leg: Mapping[str, Mapping[str, tuple[float, float, int]]]
    weights: Mapping[str, float]
    floors: Mapping[str, float]

    def breakdown(self, pid: str) -> dict[str, LegScore]:
        out: dict[str, LegScore] = {}
        for leg, entries in self.per_leg.items():
            entry = entries.get(pid)
            if entry is None or math.isnan(entry[1]):
                out[leg] = LegScore(raw=None if entry is None else entry[0], normalized=None,
                                    rank=None if entry is None else entry[2],
                                    contribution=self.weights[leg] * self.floors[leg])
            else:
                raw, value, rank = entry
                out[leg] = LegScore(raw=raw, normalized=value, rank=rank, contribution=self.weights[leg] * value)
        return out


class _Breakdown(Mapping[str, LegScore]):
    """Each leg's share of one fused score, built when first read: a query fuses hundreds of candidates
    and shows a page of them, so building every breakdown up front was most of the cost of `fuse`."""

    __slots__ = ("_pid", "_tables", "_legs")

    def __init__(self, pid: str, tables: _LegTables) -> None:
        self._pid = pid
        self._tables = tables
        self._legs: dict[str, LegScore] | None = None

    def _built(self) -> dict[str, LegScore]:
        if self._legs is None:
            self._legs = self._tables.breakdown(self._pid)
        return self._legs

    def __getitem__(self, leg: str) -> LegScore:
        return self._built()[leg]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())

    def __repr__(self) -> str:
        return repr(self._built())
