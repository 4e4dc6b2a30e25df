"""What fusion to run for a query: the intent model's prediction, the fusion policy's row for it, and the
settings the user gave explicitly.

A `Policy` turns a query (and its embedding, already computed for the dense leg) into a `Decision`: the
predicted intent, the `PolicyRow` to apply (fusion method and weights, candidate depth per leg, whether
to search at all), the message for the shopper and the warnings for the operator. Precedence, lowest
first: the policy row for the predicted intent (or the `[search]` settings when there is no policy), then
fusion settings given explicitly in the config file or the environment, then per-call options;
`--explain` shows the row's key and every override with its source.

Fusion-policy directory (kind `fusion-policy`, written by `shopfusion train policy`): `shopfusion_card.json`
(which intent model its rows are keyed on: `extra.intent_model` = that model's `directory_hash`) and
`policy.json`::

    {"format": "shopfusion-fusion-policy", "version": 2,
     "default": {"fusion": {"method": "linear", "alpha": 0.4, ...}, "depth": 200},
     "rows": {"product_lookup.specific": {"fusion": {...}, "depth": 200, "queries": 812, "ndcg@10": 0.41},
              "service": {"fusion": {...}, "message": "..."}}}

A row keeps products unless it says `"search": false` explicitly (an opt-in for deployments that want to
withhold results for some intent); re-ranking never withholds the caller's candidates.

>>> row = PolicyRow(FusionConfig(alpha=0.3))
>>> StaticPolicy(row).decide("cordless drill", None).row.fusion.alpha
0.3
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ranker.fusion import FusionConfig
from ranker.intent import (
    SERVICE,
    IntentModel,
    IntentPrediction,
    RuleLayer,
    default_intent_model_dir,
    load_intent_model,
    predict_with_rules,
)
from shopfusion.artifacts import EncoderRef, check_encoder, read_card, read_versioned_json
from shopfusion.config import SearchSettings, Settings
from shopfusion.errors import ConfigError, IndexStateError
from shopfusion.types import Intent

log = logging.getLogger(__name__)

POLICY_FORMAT = "shopfusion-fusion-policy"
POLICY_VERSION = 2
POLICY_FILE = "policy.json"
SERVICE_MESSAGE = ("This looks like a customer-service question (orders, deliveries, returns, payments): our"
                   " help pages answer those. Products matching your words are shown below.")
FUSION_KEYS = ("fusion", "alpha", "normalization", "rrf_k", "depth")
"""`[search]` keys that override a policy row when given explicitly."""


@dataclass(frozen=True)
class PolicyRow:
    fusion: FusionConfig
    depth: int = 200
    search: bool = True
    """False only where a deployment opted in to withholding products for this intent."""
    message: str | None = None
    """Shown to the shopper next to the results (for example, for service questions)."""

    def to_dict(self) -> dict[str, Any]:
        return {"fusion": self.fusion.to_dict(), "depth": self.depth, "search": self.search,
                "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyRow:
        fusion = dict(data.get("fusion", {}))
        fusion.pop("weights", None)
        return cls(fusion=FusionConfig(**fusion), depth=int(data.get("depth", 200)),
                   search=bool(data.get("search", True)), message=data.get("message"))

    def override(self, **changes: Any) -> PolicyRow:
        """This row with some fusion settings replaced (`method`, `alpha`, `normalization`, `rrf_k`,
        `depth`); None keeps the row's value."""
        fusion_changes = {k: v for k, v in changes.items() if k in {"method", "alpha", "normalization", "rrf_k"}
                          and v is not None}
        row = replace(self, fusion=replace(self.fusion, **fusion_changes)) if fusion_changes else self
        if changes.get("depth") is not None:
            row = replace(row, depth=int(changes["depth"]))
        return row


@dataclass(frozen=True)
class Decision:
    """The fusion for one query and why: `intent` (with `policy` = the explain info), the row, the
    message for the shopper, warnings for the operator, and the raw prediction (for the learned ranker)."""

    intent: Intent | None
    row: PolicyRow
    prediction: IntentPrediction | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()


class Policy(Protocol):
    def decide(self, query: str, vector: np.ndarray | None) -> Decision: ...


class StaticPolicy:
    """The same row for every query, no intent."""

    def __init__(self, row: PolicyRow) -> None:
        self.row = row

    @classmethod
    def from_settings(cls, search: SearchSettings) -> StaticPolicy:
        return cls(static_row(search))

    def decide(self, query: str, vector: np.ndarray | None) -> Decision:
        return Decision(None, self.row)


def static_row(search: SearchSettings) -> PolicyRow:
    fusion = FusionConfig(method=search.fusion, alpha=search.alpha, normalization=search.normalization,
                          rrf_k=search.rrf_k)
    return PolicyRow(fusion=fusion, depth=search.depth)


@dataclass
class PolicyFile:
    """The contents of `policy.json`: a default row and rows per intent key, with their statistics."""

    default: PolicyRow
    rows: dict[str, PolicyRow] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per row: how many validation queries chose it and their nDCG@10 (for people, not for `decide`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": POLICY_FORMAT, "version": POLICY_VERSION, "default": self.default.to_dict(),
                "rows": {key: {**row.to_dict(), **self.stats.get(key, {})} for key, row in sorted(self.rows.items())}}

    @classmethod
    def load(cls, path: str | Path) -> PolicyFile:
        path = Path(path)
        data = read_versioned_json(path, what="fusion policy", fmt=POLICY_FORMAT, version=POLICY_VERSION,
                                   fix="retrain it with `shopfusion train policy`")
        if data["version"] < POLICY_VERSION:
            raise ConfigError(f"{path} is a fusion policy of version {data['version']}, from before intent models were"
                              " artifacts of their own: retrain it with `shopfusion train policy`")
        try:
            rows = {key: PolicyRow.from_dict(row) for key, row in data.get("rows", {}).items()}
            default = PolicyRow.from_dict(data["default"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: a policy row is malformed ({exc})") from exc
        row_keys = {"fusion", "depth", "search", "message"}
        stats = {key: {k: v for k, v in row.items() if k not in row_keys} for key, row in data.get("rows", {}).items()}
        return cls(default=default, rows=rows, stats=stats)

    def row_for(self, prediction: IntentPrediction) -> tuple[str, PolicyRow]:
        """The most specific row the file has for the prediction's keys, else `default`."""
        for key in prediction.keys:
            if key in self.rows:
                return key, self.rows[key]
        return "default", self.default


class IntentPolicy:
    """Predict the intent (model, else rules), pick the policy row, apply explicit settings, add the
    service message.

    `rows` is None when no fusion policy is configured: every query then gets `static`, the row of the
    `[search]` settings. `overrides` are the explicitly given fusion settings (key -> (value, source))."""

    def __init__(self, *, model: IntentModel | None, rows: PolicyFile | None, static: PolicyRow,
                 rules: RuleLayer | None = None, overrides: Mapping[str, tuple[Any, str]] | None = None,
                 warnings: tuple[str, ...] = (), info: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.rows = rows
        self.static = static
        self.rules = rules or (model.rules if model is not None else RuleLayer())
        self.overrides = dict(overrides or {})
        self.warnings = warnings
        self.info = dict(info or {})

    def predict(self, query: str, vector: np.ndarray | None) -> IntentPrediction:
        if self.model is not None:
            return self.model.predict(query, vector)
        return predict_with_rules(self.rules, query)

    def decide(self, query: str, vector: np.ndarray | None) -> Decision:
        prediction = self.predict(query, vector)
        if self.rows is not None:
            key, row = self.rows.row_for(prediction)
        else:
            key, row = "static", self.static
        changes = {("method" if name == "fusion" else name): value for name, (value, _) in self.overrides.items()}
        row = row.override(**changes)
        message = row.message or (SERVICE_MESSAGE if prediction.intent == SERVICE else None)
        info = {**row.to_dict(), "key": key, "source": prediction.source, "intent": prediction.intent,
                "specificity": prediction.specificity, **self.info}
        if self.overrides:
            info["overrides"] = {name: source for name, (_, source) in self.overrides.items()}
        intent = Intent(prediction.label, round(prediction.probability, 4), info)
        return Decision(intent, row, prediction, message, self.warnings)


def load_policy(settings: Settings, index_encoder: EncoderRef) -> Policy:
    """The policy of `settings.search` for an index encoded by `index_encoder`.

    - intent model: `default` (shipped; falls back to the rules with a warning when it cannot read this
      index's vectors), `none` (rules only), or a path (refused when trained on another encoder);
    - fusion rows: `default` (shipped), `none` (the `[search]` fusion for every query), or a path (refused
      when keyed on another intent model than the one in use);
    - explicit `[search]` fusion keys override the rows."""
    search = settings.search
    warnings: list[str] = []
    model = _intent_model(search.intent_model, index_encoder, warnings)
    rows = _policy_rows(search.policy, model, warnings)
    overrides = {key: (getattr(search, key), settings.source("search", key))
                 for key in FUSION_KEYS if settings.explicit("search", key)}
    info: dict[str, Any] = {"intent_model": model.describe() if model is not None else None,
                            "policy": search.policy}
    for warning in warnings:  # also in every Results.warnings (shown by the CLI, --json and the service)
        log.info("%s", warning)
    return IntentPolicy(model=model, rows=rows, static=static_row(search), overrides=overrides,
                        warnings=tuple(warnings), info=info)


def _intent_model(name: str, index_encoder: EncoderRef, warnings: list[str]) -> IntentModel | None:
    if name == "none":
        return None
    shipped = name == "default"
    path = default_intent_model_dir() if shipped else Path(name).expanduser()
    if shipped and not path.is_dir():
        warnings.append(f"no shipped intent model at {path}: intents come from the rules only")
        return None
    if not path.is_dir():
        raise ConfigError(f"intent model {name!r} not found: give `default`, `none`, or a directory written by"
                          " `shopfusion train intent --output DIR`")
    model = load_intent_model(path)
    if model.compatible(index_encoder):
        return model
    assert model.card is not None
    warning = check_encoder(model.card, index_encoder, what=f"the intent model {path}", strict=not shipped)
    warnings.append(f"{warning}: intents come from the rules only (train one for this encoder with"
                    " `shopfusion train intent`)")
    return None


def _policy_rows(name: str, model: IntentModel | None, warnings: list[str]) -> PolicyFile | None:
    if name in {"none", "static"}:
        return None
    shipped = name == "default"
    directory = default_policy_dir() if shipped else Path(name).expanduser()
    if directory.is_file():
        directory = directory.parent
    if not (directory / POLICY_FILE).is_file():
        if shipped:
            warnings.append(f"no shipped fusion policy at {directory}: the [search] fusion applies to every query")
            return None
        raise ConfigError(f"fusion policy {name!r} not found: give `default`, `none`, or a directory holding"
                          f" {POLICY_FILE} (written by `shopfusion train policy --output DIR`)")
    card = read_card(directory, "fusion-policy")
    rows = PolicyFile.load(directory / POLICY_FILE)
    keyed_on = card.extra.get("intent_model")
    in_use = model.identity if model is not None else None
    if rows.rows and keyed_on and keyed_on != in_use:  # a policy without intent rows reads no intent
        message = (f"the fusion policy {directory} was learned with intent model {keyed_on}, but the intent model"
                   f" in use is {in_use or 'none (rules only)'}")
        if not shipped:
            raise IndexStateError(f"{message}: set search.intent_model to the model it was learned with, or"
                                  " retrain the policy with `shopfusion train policy --intent-model ...`")
        warnings.append(f"{message}: its rows are still applied by label")
    return rows


def default_policy_dir() -> Path:
    """Where the package keeps its shipped fusion policy (`shopfusion/data/policy`)."""
    import shopfusion

    return Path(shopfusion.__file__).resolve().parent / "data" / "policy"
