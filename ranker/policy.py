"""Fusion policies: what fusion to run for a query.

A policy maps a query (and its embedding, already computed for the dense leg) to a `Decision`: the
predicted intent, if any, and the `PolicyRow` to apply: fusion method and weights, candidate depth per
leg, and whether to search at all. `StaticPolicy` applies one row to every query (the settings'
`[search]` section); intent-aware policies choose the row by predicted intent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from ranker.fusion import FusionConfig
from shopfusion.config import SearchSettings
from shopfusion.types import Intent


@dataclass(frozen=True)
class PolicyRow:
    fusion: FusionConfig
    depth: int = 200
    search: bool = True
    message: str | None = None
    """Shown instead of results when `search` is false (for example, an order-status question)."""

    def to_dict(self) -> dict[str, Any]:
        return {"fusion": self.fusion.to_dict(), "depth": self.depth, "search": self.search,
                "message": self.message}

    def override(self, **changes: Any) -> PolicyRow:
        """This row with some fusion settings replaced (per-call options win over the policy)."""
        fusion_changes = {k: v for k, v in changes.items() if k in {"method", "alpha", "normalization", "rrf_k"}
                          and v is not None}
        row = replace(self, fusion=replace(self.fusion, **fusion_changes)) if fusion_changes else self
        if changes.get("depth") is not None:
            row = replace(row, depth=int(changes["depth"]))
        return row


@dataclass(frozen=True)
class Decision:
    intent: Intent | None
    row: PolicyRow


class Policy(Protocol):
    def decide(self, query: str, vector: np.ndarray | None) -> Decision: ...


class StaticPolicy:
    """The same fusion for every query."""

    def __init__(self, row: PolicyRow) -> None:
        self.row = row

    @classmethod
    def from_settings(cls, search: SearchSettings) -> StaticPolicy:
        fusion = FusionConfig(method=search.fusion, alpha=search.alpha, normalization=search.normalization,
                              rrf_k=search.rrf_k)
        return cls(PolicyRow(fusion=fusion, depth=search.depth))

    def decide(self, query: str, vector: np.ndarray | None) -> Decision:
        return Decision(None, self.row)


def load_policy(search: SearchSettings) -> Policy:
    """The policy named by `search.policy`: `none`/`static` gives the static fusion of the settings;
    `default` the shipped intent policy when one is installed, else the static one; otherwise a path."""
    name = search.policy
    if name in {"none", "static"}:
        return StaticPolicy.from_settings(search)
    try:
        from ranker.intent_policy import load_intent_policy
    except ImportError:
        return StaticPolicy.from_settings(search)
    return load_intent_policy(name, search)
