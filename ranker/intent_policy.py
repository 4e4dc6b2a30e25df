"""The intent-aware fusion policy: predicted intent -> fusion row, loaded from a small versioned file.

A policy directory holds `policy.json` (this module's format) and the intent model it names
(`intent_model.json` + `intent_model.safetensors`, see `ranker.intent`). The package ships one in
`shopfusion/data/policy/` (`search.policy = "default"`); `shopfusion train policy` writes new ones.

`policy.json`::

    {"format": "shopfusion-fusion-policy", "version": 1,
     "intent_model": "intent_model.json",
     "default": {"fusion": {"method": "linear", "alpha": 0.4, ...}, "depth": 200, "search": true},
     "rows": {"product_lookup.specific": {"fusion": {...}, "depth": 200, "search": true,
                                           "queries": 812, "ndcg@10": 0.41, "parent_ndcg@10": 0.40},
              "service": {"fusion": {...}, "search": false, "message": "..."}},
     "training": {...provenance...}, "metrics": {...}}

`decide` tries the prediction's keys from the most specific (`label|leg`, `label`, `intent`) and uses
the first row the file has, else `default`. Service intents get `search = false` and a message. When the
intent model cannot read the query vector (another encoder, another dimension) the policy warns once
and falls back to the rule layer for the intent and the static fusion of the settings for the row.

>>> from ranker.policy import PolicyRow
>>> from ranker.fusion import FusionConfig
>>> policy = IntentPolicy(PolicyFile(default=PolicyRow(FusionConfig(alpha=0.3))), model=None)
>>> policy.decide("where is my order", None).row.search
False
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.fusion import FusionConfig
from ranker.intent import SERVICE, IntentModel, IntentPrediction, RuleLayer, predict_with_rules
from ranker.policy import Decision, Policy, PolicyRow, StaticPolicy
from shopfusion.config import SearchSettings
from shopfusion.errors import ConfigError
from shopfusion.types import Intent

log = logging.getLogger(__name__)

POLICY_FORMAT = "shopfusion-fusion-policy"
POLICY_VERSION = 1
POLICY_FILE = "policy.json"
SERVICE_MESSAGE = ("This looks like a question for customer service (orders, deliveries, returns, payments),"
                   " not a product search: no products are shown. Rephrase it as a product search to see products.")


def row_from_dict(data: Mapping[str, Any]) -> PolicyRow:
    fusion = dict(data.get("fusion", {}))
    fusion.pop("weights", None)
    return PolicyRow(fusion=FusionConfig(**fusion), depth=int(data.get("depth", 200)),
                     search=bool(data.get("search", True)), message=data.get("message"))


@dataclass
class PolicyFile:
    """The contents of `policy.json`: a default row, rows per policy key, and where they came from."""

    default: PolicyRow
    rows: dict[str, PolicyRow] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per row: how many validation queries chose it and their nDCG@10 (for people, not for `decide`)."""
    intent_model: str | None = "intent_model.json"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        service = self.rows.get(SERVICE)
        if service is None or service.search:
            self.rows[SERVICE] = PolicyRow(self.default.fusion, self.default.depth, search=False,
                                           message=service.message if service and service.message else SERVICE_MESSAGE)

    def to_dict(self) -> dict[str, Any]:
        return {"format": POLICY_FORMAT, "version": POLICY_VERSION, "intent_model": self.intent_model,
                "default": self.default.to_dict(),
                "rows": {key: {**row.to_dict(), **self.stats.get(key, {})} for key, row in sorted(self.rows.items())},
                "training": self.training, "metrics": self.metrics}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / POLICY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PolicyFile:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read fusion policy {path}: {exc}") from exc
        if data.get("format") != POLICY_FORMAT:
            raise ConfigError(f"{path} is not a shopfusion fusion policy (format {data.get('format')!r})")
        if int(data.get("version", 0)) > POLICY_VERSION:
            raise ConfigError(f"{path} has policy format version {data['version']}; this shopfusion reads up to"
                              f" {POLICY_VERSION}: upgrade shopfusion or retrain with `shopfusion train policy`")
        try:
            rows = {key: row_from_dict(row) for key, row in data.get("rows", {}).items()}
            default = row_from_dict(data["default"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: a policy row is malformed ({exc})") from exc
        row_keys = {"fusion", "depth", "search", "message"}
        stats = {key: {k: v for k, v in row.items() if k not in row_keys} for key, row in data.get("rows", {}).items()}
        return cls(default=default, rows=rows, stats=stats, intent_model=data.get("intent_model"),
                   training=dict(data.get("training", {})), metrics=dict(data.get("metrics", {})))


class IntentPolicy:
    """Chooses the fusion row by predicted intent. `static` is the row used for product queries when
    the model cannot read the query vector (default: the policy file's `default` row)."""

    def __init__(self, policy: PolicyFile, model: IntentModel | None, *, static: PolicyRow | None = None,
                 rules: RuleLayer | None = None) -> None:
        self.policy = policy
        self.model = model
        self.static = static or policy.default
        self.rules = rules or (model.rules if model is not None else RuleLayer())
        self._warned = False

    def predict(self, query: str, vector: np.ndarray | None) -> tuple[IntentPrediction, bool]:
        """The prediction and whether the model (not only the rules) could read the vector."""
        if self.model is not None and self.model.compatible(vector):
            return self.model.predict(query, vector), True
        if vector is not None and not self._warned:
            if self.model is None:
                log.warning("no intent model loaded: intents come from rules only and product queries use"
                            " the static fusion of the settings")
            else:
                log.warning("the intent model was trained on %d-dim vectors from %s but the index encoder gives"
                            " %d-dim vectors: using rules for the intent and the static fusion of the settings;"
                            " train a policy for this encoder with `shopfusion train policy`",
                            self.model.dim, self.model.encoder, int(np.asarray(vector).shape[-1]))
            self._warned = True
        return predict_with_rules(self.rules, query), False

    def decide(self, query: str, vector: np.ndarray | None) -> Decision:
        prediction, modelled = self.predict(query, vector)
        key, row = "static", self.static
        if prediction.intent == SERVICE:
            key, row = SERVICE, self.policy.rows[SERVICE]
        elif modelled:
            key, row = "default", self.policy.default
            for candidate in prediction.keys:
                if candidate in self.policy.rows:
                    key, row = candidate, self.policy.rows[candidate]
                    break
        info = {**row.to_dict(), "key": key, "source": prediction.source, "intent": prediction.intent,
                "specificity": prediction.specificity, "leg": prediction.leg}
        return Decision(Intent(prediction.label, round(prediction.probability, 4), info), row)


def default_policy_dir() -> Path:
    """Where the package keeps its shipped policy (`shopfusion/data/policy`)."""
    import shopfusion

    return Path(shopfusion.__file__).resolve().parent / "data" / "policy"


def load_intent_policy(name: str, search: SearchSettings) -> Policy:
    """`default`: the shipped policy (the static fusion of `search` when none is installed); otherwise a
    policy directory or its `policy.json`. Product queries use the static fusion of `search` whenever
    the intent model cannot read the query vectors."""
    static = StaticPolicy.from_settings(search)
    if name == "default":
        path = default_policy_dir() / POLICY_FILE
        if not path.is_file():
            log.info("no default intent policy installed at %s: using the static fusion of the settings", path)
            return static
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            path = path / POLICY_FILE
        if not path.is_file():
            raise ConfigError(f"fusion policy {name!r} not found: give `default`, `none`, or a directory holding"
                              f" {POLICY_FILE} (written by `shopfusion train policy --out DIR`)")
    policy = PolicyFile.load(path)
    model = None
    if policy.intent_model:
        model = IntentModel.load(path.parent / policy.intent_model)
    return IntentPolicy(policy, model, static=static.row)
