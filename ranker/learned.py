"""A trained learned ranker: load the artifact, score candidates, explain scores by feature.

The artifact is a directory written by `shopfusion train ranker` (`trainer.ranker_trainer`):

- `ranker.txt`: the LambdaMART model in LightGBM's own text format (never a pickle);
- `shopfusion_card.json`: the model card (`shopfusion.artifacts`, kind `ranker`): the encoder the dense
  features came from, and in `extra` the feature names in model-column order, the feature-set version,
  the per-query normalisation, the lexical engine and analyzer, the intent model whose probabilities it
  read (its `directory_hash`, when intent features were used), the candidate depth and label gains;
- `README.md`: the card rendered for people.

Contributions are LightGBM's own (`pred_contrib`, SHAP values of the trees): for each hit, how much each
feature moved its score away from the model's average, summing to the score.

>>> from shopfusion.artifacts import ModelCard
>>> RankerSpec.from_card(ModelCard(kind="ranker", extra={"feature_names": ["lexical_score"],
...     "feature_set_version": 1})).normalization
'none'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.features import FEATURE_SET_VERSION, Normalization, model_matrix
from shopfusion.artifacts import ModelCard, read_card
from shopfusion.errors import ConfigError, require
from shopfusion.types import FeatureContribution

RANKER_FILE = "ranker.txt"
BIAS = "(average)"
"""The name under which the model's expected score appears among contributions."""


@dataclass(frozen=True)
class RankerSpec:
    """What a ranker needs from serving, read from its card."""

    feature_names: tuple[str, ...]
    normalization: Normalization = "none"
    feature_set_version: int = FEATURE_SET_VERSION
    lexical: Mapping[str, Any] = field(default_factory=dict)
    intent_model: str | None = None
    depth: int | None = None

    @classmethod
    def from_card(cls, card: ModelCard) -> RankerSpec:
        extra = card.extra
        names = extra.get("feature_names")
        if not isinstance(names, list | tuple) or not names:
            raise ConfigError("the ranker's card lists no `feature_names`: retrain it with `shopfusion train ranker`")
        normalization = extra.get("normalization", "none")
        if normalization not in ("none", "query"):
            raise ConfigError(f"the ranker's card has an unknown normalization {normalization!r}")
        return cls(tuple(str(n) for n in names), normalization, int(extra.get("feature_set_version", 0)),
                   dict(extra.get("lexical") or {}), extra.get("intent_model"),
                   int(extra["depth"]) if extra.get("depth") else None)

    def to_extra(self) -> dict[str, Any]:
        return {"feature_names": list(self.feature_names), "normalization": self.normalization,
                "feature_set_version": self.feature_set_version, "lexical": dict(self.lexical),
                "intent_model": self.intent_model, "depth": self.depth}


class LearnedRanker:
    """A loaded ranker. `score` takes full `ranker.features.extract` matrices (one query at a time)."""

    def __init__(self, booster: Any, card: ModelCard, path: Path | None = None) -> None:
        self.booster = booster
        self.card = card
        self.path = path
        self.spec = RankerSpec.from_card(card)
        if self.spec.feature_set_version != FEATURE_SET_VERSION:
            raise ConfigError(
                f"the ranker{f' at {path}' if path else ''} was trained on feature set version"
                f" {self.spec.feature_set_version}, this shopfusion computes version {FEATURE_SET_VERSION}:"
                " retrain it with `shopfusion train ranker`")
        model_names = list(booster.feature_name())
        if model_names != list(self.spec.feature_names):
            raise ConfigError(f"{RANKER_FILE} and its card disagree about the features ({len(model_names)} vs"
                              f" {len(self.spec.feature_names)}): the artifact is damaged; retrain it")

    @classmethod
    def load(cls, path: str | Path) -> LearnedRanker:
        directory = Path(path).expanduser()
        if directory.is_file() and directory.name in {RANKER_FILE, "shopfusion_card.json"}:
            directory = directory.parent
        model_file = directory / RANKER_FILE
        card = read_card(directory, kind="ranker")
        if not model_file.is_file():
            raise ConfigError(f"{directory} has no {RANKER_FILE}: give the directory written by"
                              " `shopfusion train ranker --output DIR`")
        lightgbm = require("lightgbm", "ranker")
        try:
            booster = lightgbm.Booster(model_file=str(model_file))
        except lightgbm.basic.LightGBMError as exc:
            raise ConfigError(f"cannot read {model_file}: {exc}") from exc
        return cls(booster, card, directory)

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "(in memory)"

    def matrix(self, features: np.ndarray) -> np.ndarray:
        return model_matrix(features, self.spec.feature_names, self.spec.normalization)

    def score(self, features: np.ndarray) -> np.ndarray:
        """One score per row of one query's full feature matrix; higher is better."""
        if not len(features):
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.booster.predict(self.matrix(features), num_threads=1), dtype=np.float64)

    def contributions(self, features: np.ndarray, rows: Sequence[int], top: int | None = None
                      ) -> list[tuple[FeatureContribution, ...]]:
        """Per row, each feature's contribution to the score (largest magnitude first, zero ones left
        out), then the model's average (`BIAS`); `top` keeps only the largest."""
        if not len(rows):
            return []
        matrix = self.matrix(features)[list(rows)]
        contrib = np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=1))
        out = []
        names = self.spec.feature_names
        for values, row in zip(contrib, matrix, strict=True):
            order = [j for j in np.argsort(-np.abs(values[:-1])) if values[j] != 0.0]
            if top is not None:
                order = order[:top]
            items = [FeatureContribution(names[j], float(row[j]), float(values[j])) for j in order]
            items.append(FeatureContribution(BIAS, None, float(values[-1])))
            out.append(tuple(items))
        return out

    def describe(self) -> dict[str, Any]:
        """How `--explain` and `--json` name the ranker."""
        encoder = self.card.encoder.model_id if self.card.encoder else None
        return {"path": self.name, "method": self.card.method, "encoder": encoder,
                "features": len(self.spec.feature_names), "normalization": self.spec.normalization,
                "trees": int(self.booster.num_trees())}


__all__ = ["BIAS", "RANKER_FILE", "LearnedRanker", "RankerSpec"]
