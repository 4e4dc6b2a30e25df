"""Query intent: the taxonomy, a rule layer, and a small model on the query embedding.

Taxonomy (what the user wants, and for product searches how precisely they know it):

| label                        | example                          | what the fusion policy does            |
|------------------------------|----------------------------------|----------------------------------------|
| `product_lookup.specific`    | `ge pb911sjss`, `behr deckover`  | item, brand or part number: lexical-heavy |
| `product_lookup.attribute`   | `3/4 in. copper elbow`           | constrained by size, colour, material  |
| `product_lookup.broad`       | `patio ideas`, `something to sit on` | exploratory: dense-heavy           |
| `product_information`        | `how to install a ceiling fan`   | searches, with its own fusion          |
| `comparison`                 | `ryobi vs dewalt drill`          | searches, with its own fusion          |
| `service`                    | `where is my order`              | no product search: a message instead   |

Prediction runs in two layers, rules first: the rule layer catches what patterns do well and with high
precision (part and model numbers, "vs"/"compare", order/cart/refund phrases); the model
(softmax-regression heads over the L2-normalised query embedding the dense leg has already computed,
plus a few surface features) decides the rest. Question openers ("how to", "what size") mark product
information unless the model is confident the query is a service or other non-product request
("what is my balance"). A prediction costs well under a millisecond.

Besides the label, the model has an optional `leg` head trained on judgments (which retrieval leg wins
on a query: `lexical`, `dense` or `either`); the policy may refine a label's fusion row by it (see
`IntentPrediction.keys`).

Weights are saved as safetensors next to a small JSON file (labels, feature spec, encoder identity,
brand list, thresholds); nothing is pickled.

>>> rules = RuleLayer(brands={"behr"})
>>> rules.intent("ryobi vs dewalt drill")
'comparison'
>>> rules.specificity("ge pb911sjss range"), rules.specificity("3/4 in. copper elbow")
('specific', 'attribute')
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopfusion.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

PRODUCT_LOOKUP = "product_lookup"
PRODUCT_INFORMATION = "product_information"
COMPARISON = "comparison"
SERVICE = "service"
INTENTS: tuple[str, ...] = (PRODUCT_LOOKUP, PRODUCT_INFORMATION, COMPARISON, SERVICE)
SPECIFICITIES: tuple[str, ...] = ("specific", "attribute", "broad")
LEGS: tuple[str, ...] = ("lexical", "dense", "either")
LABELS: tuple[str, ...] = tuple(f"{PRODUCT_LOOKUP}.{s}" for s in SPECIFICITIES) + INTENTS[1:]

MODEL_FORMAT = "shopfusion-intent-model"
MODEL_VERSION = 1
DEFAULT_SERVICE_THRESHOLD = 0.9
"""The model must be this sure before a query is answered with a message instead of products."""


def intent_label(intent: str, specificity: str | None) -> str:
    """The taxonomy label: `product_lookup.<specificity>` for product lookups, else the intent itself."""
    if intent == PRODUCT_LOOKUP:
        return f"{PRODUCT_LOOKUP}.{specificity or 'broad'}"
    return intent


@dataclass(frozen=True)
class IntentPrediction:
    """What one query wants. `probability` is that of `intent` (1.0 when a rule decided it);
    `source` says who decided: `rule`, `model` or `rules-only` (no usable model)."""

    intent: str
    specificity: str | None
    probability: float
    source: str
    leg: str | None = None

    @property
    def label(self) -> str:
        return intent_label(self.intent, self.specificity)

    @property
    def keys(self) -> tuple[str, ...]:
        """Policy keys from the most to the least specific: `label|leg`, `label`, `intent`."""
        keys = [f"{self.label}|{self.leg}"] if self.leg else []
        keys.append(self.label)
        if self.intent != self.label:
            keys.append(self.intent)
        return tuple(keys)


# -- rules ------------------------------------------------------------------------------------------
_SERVICE = [re.compile(p) for p in (
    r"\b(where|status|track|tracking|cancel|change|return|refund)\b.*\bmy (order|package|delivery|purchase|shipment)s?\b",
    r"\border (status|number|history|tracking)\b",
    r"\b(track|cancel|return) (an|my|the|this) (order|package|item|purchase)\b",
    r"\b(my|the) (shopping )?(cart|basket|shopping list)\b",
    r"\b(add|put|remove|delete)\b.*\b(to|from|in|on) (my )?(cart|basket|shopping list)\b",
    r"\b(refund|reimburse|chargeback)s?\b",
    r"\bcustomer (service|support|care)\b",
    r"\b(talk|speak|chat) (to|with) (a |an )?(human|agent|person|representative)\b",
    r"\b(store|opening) hours\b",
    r"\b(my|reset( my)?) (account|password|login)\b",
    r"\b(gift card|rewards?) balance\b",
    r"\breturn policy\b",
)]
_COMPARISON = [re.compile(p) for p in (
    r"\bvs\.?\b", r"\bversus\b", r"\bcompar(e|ed|ing|ison)\b", r"\bdifference(s)? between\b",
    r"\bwhich (one )?is (better|best|cheaper|stronger)\b", r"\b(better|cheaper|stronger) than\b",
)]
_INFORMATION = [re.compile(p) for p in (
    r"^(how|why|what|when|which)\s+\w+\s+\w+",
    r"^(can|could|does|do|is|are|should|will|would) (i|you|we|it|they|this|that|these|those|my)\s+\w+",
    r"\bhow (to|do|does|much|many|long|often)\b",
    r"\b(instructions|installation guide|user manual|owner'?s manual|warranty|spec sheet)\b",
    r"\bwhat (is|are|size|sizes|kind|type)\b",
)]
_UNITS = (r"in|inch|inches|ft|feet|foot|yd|gal|gallon|gallons|qt|quart|oz|lb|lbs|pound|pounds|mm|cm|m|"
          r"v|volt|volts|w|watt|watts|amp|amps|a|btu|psi|sq|cu|ml|l|liter|litre|pc|pk|pack|piece|count|"
          r"gauge|ga|grit|hp|mah|ah|kw|cfm|gpm|lumen|lumens|k|tb|gb|hz|ghz|inch|x")
_ATTRIBUTE = [re.compile(p) for p in (
    rf"\b\d+(\.\d+)?\s*(-\s*)?({_UNITS})\b\.?",
    r"\b\d+\s*/\s*\d+\b",                 # fractions: 3/4
    r"\b\d+(\.\d+)?\s*[x\u00d7*]\s*\d+",  # dimensions: 2x4, 36 x 80
    r"\b\d+(\.\d+)?\s*(\"|'|in\.|ft\.)",
    r"\b(white|black|brown|gray|grey|silver|gold|bronze|brass|chrome|nickel|copper|red|blue|green|"
    r"yellow|beige|tan|ivory|almond|clear|oak|cedar|pine|maple|walnut|cherry|stainless|steel|aluminum|"
    r"plastic|vinyl|pvc|wood|wooden|metal|iron|glass|ceramic|porcelain|marble|granite|concrete|"
    r"rubber|leather|fabric|velvet|linen|cotton|wool|matte|satin|gloss|glossy|semi-gloss|flat|"
    r"cordless|corded|gas|electric|outdoor|indoor|waterproof|led|small|large|tall|short|round|square|"
    r"rectangular|oval|queen|king|twin|full)\b",
)]
_DIMENSION = re.compile(r"\d\s*[x\u00d7*/]\s*\d|\d+x$|^x\d")
_QUANTITY = re.compile(rf"^\d+(\.\d+)?-?({_UNITS})\.?$")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9\-#./]*")


def tokens(query: str) -> list[str]:
    return [t.strip("./-") or t for t in _TOKEN.findall(query.lower())]


def part_numbers(query: str) -> list[str]:
    """Tokens that look like part or model numbers (`pb911sjss`, `t55.521.224`, `hvr200`, `808501`): at
    least three digits with a letter, two of each, or six digits or more; never a quantity with a unit
    (`12v`, `150ft`) or a dimension (`2x4`, `3/4in`)."""
    found = []
    for token in tokens(query):
        if _DIMENSION.search(token) or _QUANTITY.match(token):
            continue
        digits = sum(c.isdigit() for c in token)
        letters = sum(c.isalpha() for c in token)
        if (letters >= 1 and digits >= 3) or (letters >= 2 and digits >= 2) or (not letters and digits >= 6):
            found.append(token)
    return found


@dataclass(frozen=True)
class RuleLayer:
    """High-precision patterns. `brands`: lower-cased brand names from the catalog (single or
    multi-word); a query naming one is `specific`."""

    brands: frozenset[str] = frozenset()

    def __init__(self, brands: Iterable[str] = ()) -> None:
        object.__setattr__(self, "brands", frozenset(" ".join(b.lower().split()) for b in brands if b.strip()))

    def intent(self, query: str) -> str | None:
        """`service`, `comparison` or `product_information` when a pattern says so; else None."""
        text = " ".join(query.lower().split())
        if any(p.search(text) for p in _SERVICE):
            return SERVICE
        if any(p.search(text) for p in _COMPARISON):
            return COMPARISON
        if any(p.search(text) for p in _INFORMATION):
            return PRODUCT_INFORMATION
        return None

    def brand(self, query: str) -> str | None:
        words = tokens(query)
        for n in (3, 2, 1):
            for i in range(len(words) - n + 1):
                candidate = " ".join(words[i:i + n])
                if candidate in self.brands:
                    return candidate
        return None

    def has_attribute(self, query: str) -> bool:
        text = query.lower()
        return any(p.search(text) for p in _ATTRIBUTE)

    def specificity(self, query: str) -> str:
        """Weak label from patterns alone: part number or known brand, then attributes, else broad."""
        if part_numbers(query) or self.brand(query):
            return "specific"
        if self.has_attribute(query):
            return "attribute"
        return "broad"

    def surface(self, query: str) -> np.ndarray:
        """Cheap features of the query string that the `leg` head sees next to the embedding."""
        words = tokens(query)
        n = max(len(words), 1)
        digits = sum(any(c.isdigit() for c in w) for w in words)
        return np.array([
            min(len(words), 12) / 12.0,
            float(digits > 0),
            digits / n,
            float(bool(part_numbers(query))),
            float(self.has_attribute(query)),
            float(self.brand(query) is not None),
            min(len(query), 80) / 80.0,
        ], dtype=np.float32)


SURFACE_FEATURES = ("tokens", "any_digit", "digit_share", "part_number", "attribute", "brand", "chars")


# -- model ------------------------------------------------------------------------------------------
@dataclass
class SoftmaxHead:
    """Multinomial logistic regression: `softmax(x @ weight + bias)` over `labels`."""

    labels: tuple[str, ...]
    weight: np.ndarray
    bias: np.ndarray
    features: tuple[str, ...] = ("embedding",)
    """`embedding` and optionally `surface` (RuleLayer.surface), concatenated in this order."""

    def proba(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.weight + self.bias
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    @classmethod
    def fit(cls, x: np.ndarray, y: Sequence[str], labels: Sequence[str], *, features: Sequence[str] = ("embedding",),
            l2: float = 1e-3, steps: int = 300, lr: float = 0.1, balanced: bool = True, seed: int = 0) -> SoftmaxHead:
        """Full-batch Adam on class-weighted cross-entropy with an L2 penalty; deterministic."""
        labels = tuple(labels)
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({label for label in y if label not in index})
        if unknown:
            raise TrainingError(f"labels {unknown} are not among {list(labels)}")
        if len(y) != len(x) or not len(y):
            raise TrainingError(f"need as many labels as rows and at least one ({len(x)} rows, {len(y)} labels)")
        target = np.array([index[label] for label in y])
        counts = np.bincount(target, minlength=len(labels)).astype(np.float64)
        if balanced:
            sample_w = (len(target) / (len(labels) * np.maximum(counts, 1)))[target]
        else:
            sample_w = np.ones(len(target))
        sample_w = sample_w / sample_w.sum()
        rng = np.random.default_rng(seed)
        w = rng.normal(0.0, 0.01, size=(x.shape[1], len(labels)))
        b = np.zeros(len(labels))
        onehot = np.eye(len(labels))[target]
        m = [np.zeros_like(w), np.zeros_like(b)]
        v = [np.zeros_like(w), np.zeros_like(b)]
        x64 = x.astype(np.float64)
        for step in range(1, steps + 1):
            logits = x64 @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - onehot) * sample_w[:, None]
            grads = [x64.T @ g + l2 * w, g.sum(axis=0)]
            for i, (param, grad) in enumerate(zip((w, b), grads, strict=True)):
                m[i] = 0.9 * m[i] + 0.1 * grad
                v[i] = 0.999 * v[i] + 0.001 * grad * grad
                param -= lr * (m[i] / (1 - 0.9 ** step)) / (np.sqrt(v[i] / (1 - 0.999 ** step)) + 1e-8)
        return cls(labels, w.astype(np.float32), b.astype(np.float32), tuple(features))


@dataclass
class IntentModel:
    """Rules plus heads: `intent` (required), `specificity` and `leg` (optional).

    `dim` and `encoder` name the embedding the heads were trained on; `predict` falls back to rules only,
    with a warning, when a vector of another dimension comes in."""

    heads: dict[str, SoftmaxHead]
    dim: int
    encoder: str
    rules: RuleLayer = field(default_factory=RuleLayer)
    service_threshold: float = DEFAULT_SERVICE_THRESHOLD
    metadata: dict[str, Any] = field(default_factory=dict)
    _warned: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if "intent" not in self.heads:
            raise ConfigError("an intent model needs an `intent` head")

    def compatible(self, vector: np.ndarray | None) -> bool:
        return vector is not None and vector.ndim == 1 and vector.shape[0] == self.dim

    def predict(self, query: str, vector: np.ndarray | None) -> IntentPrediction:
        """Rules first, then the heads; rules only when `vector` is missing or of another dimension."""
        if not self.compatible(vector):
            if vector is not None and not self._warned:
                log.warning("the intent model expects %d-dim vectors from %s but got shape %s: using rules only"
                            " (train one for this encoder with `shopfusion train policy`)",
                            self.dim, self.encoder, getattr(vector, "shape", None))
                self._warned = True
            return predict_with_rules(self.rules, query)
        assert vector is not None
        emb = vector.astype(np.float32, copy=False)
        surface: np.ndarray | None = None

        def features(head: SoftmaxHead) -> np.ndarray:
            nonlocal surface
            if "surface" not in head.features:
                return emb
            if surface is None:
                surface = self.rules.surface(query)
            return np.concatenate([emb, surface])

        ruled = self.rules.intent(query)
        if ruled in (SERVICE, COMPARISON):
            intent, probability, source = ruled, 1.0, "rule"
        else:
            p = self.heads["intent"].proba(features(self.heads["intent"]))
            order = [int(i) for i in np.argsort(-p)]
            labels = self.heads["intent"].labels
            intent, probability, source = labels[order[0]], float(p[order[0]]), "model"
            if intent == SERVICE and probability < self.service_threshold:
                # not sure enough to withhold products: take the best product-side intent
                intent, probability = next((labels[i], float(p[i])) for i in order if labels[i] != SERVICE)
            if ruled is not None and intent != SERVICE:
                # a question opener makes a product query an information request, not a service one
                intent, probability, source = ruled, 1.0, "rule"
        specificity = None
        if intent == PRODUCT_LOOKUP:
            specificity = "specific" if part_numbers(query) or self.rules.brand(query) else None
            if specificity is None and "specificity" in self.heads:
                head = self.heads["specificity"]
                specificity = head.labels[int(np.argmax(head.proba(features(head))))]
            specificity = specificity or self.rules.specificity(query)
        leg = None
        if "leg" in self.heads and intent != SERVICE:
            head = self.heads["leg"]
            leg = head.labels[int(np.argmax(head.proba(features(head))))]
        return IntentPrediction(intent, specificity, probability, source, leg)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path, name: str = "intent_model") -> Path:
        """Write `<name>.safetensors` (weights) and `<name>.json` (everything else); returns the JSON path."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for head_name, head in self.heads.items():
            tensors[f"{head_name}.weight"] = np.ascontiguousarray(head.weight, dtype=np.float32)
            tensors[f"{head_name}.bias"] = np.ascontiguousarray(head.bias, dtype=np.float32)
        save_file(tensors, str(directory / f"{name}.safetensors"))
        meta = {
            "format": MODEL_FORMAT, "version": MODEL_VERSION, "weights": f"{name}.safetensors",
            "dim": self.dim, "encoder": self.encoder, "service_threshold": self.service_threshold,
            "heads": {n: {"labels": list(h.labels), "features": list(h.features)} for n, h in self.heads.items()},
            "surface_features": list(SURFACE_FEATURES),
            "brands": sorted(self.rules.brands),
            "metadata": self.metadata,
        }
        path = directory / f"{name}.json"
        path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> IntentModel:
        """Load from the JSON file written by `save` (the weights file sits next to it)."""
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read intent model {path}: {exc}") from exc
        if meta.get("format") != MODEL_FORMAT or int(meta.get("version", 0)) > MODEL_VERSION:
            raise ConfigError(f"{path} is not a shopfusion intent model of version <= {MODEL_VERSION}"
                              f" (format {meta.get('format')!r}, version {meta.get('version')!r})")
        weights_path = path.parent / meta["weights"]
        if not weights_path.is_file():
            raise ConfigError(f"intent model weights {weights_path} are missing: copy them next to {path.name}")
        tensors = load_file(str(weights_path))
        heads = {}
        for head_name, spec in meta["heads"].items():
            heads[head_name] = SoftmaxHead(tuple(spec["labels"]), tensors[f"{head_name}.weight"],
                                           tensors[f"{head_name}.bias"], tuple(spec.get("features", ["embedding"])))
        return cls(heads=heads, dim=int(meta["dim"]), encoder=str(meta["encoder"]),
                   rules=RuleLayer(meta.get("brands", ())),
                   service_threshold=float(meta.get("service_threshold", DEFAULT_SERVICE_THRESHOLD)),
                   metadata=dict(meta.get("metadata", {})))


def predict_with_rules(rules: RuleLayer, query: str) -> IntentPrediction:
    """The rule layer alone: rule intents, else a product lookup with the rule specificity."""
    intent = rules.intent(query)
    if intent is not None:
        return IntentPrediction(intent, None, 1.0, "rules-only")
    return IntentPrediction(PRODUCT_LOOKUP, rules.specificity(query), 1.0, "rules-only")


def head_features(rules: RuleLayer, queries: Sequence[str], vectors: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """The input matrix of a head for many queries (the training-time twin of `IntentModel.predict`)."""
    if "surface" not in features:
        return vectors.astype(np.float32, copy=False)
    surface = np.stack([rules.surface(q) for q in queries]) if queries else np.zeros((0, len(SURFACE_FEATURES)))
    return np.concatenate([vectors.astype(np.float32, copy=False), surface.astype(np.float32)], axis=1)


def accuracy_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-label precision, recall and F1 (macro-averaged over labels present)."""
    out: dict[str, Any] = {"n": len(y_true),
                           "accuracy": float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)]))
                           if y_true else 0.0, "labels": {}}
    f1s = []
    for label in labels:
        tp = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a == label and b == label)
        fp = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a != label and b == label)
        fn = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a == label and b != label)
        support = tp + fn
        if support == 0 and fp == 0:
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out["labels"][label] = {"support": support, "precision": round(precision, 4), "recall": round(recall, 4),
                                "f1": round(f1, 4)}
        if support:
            f1s.append(f1)
    out["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    return out


def label_counts(labels: Iterable[str]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))
