"""Query intent at serving time: the taxonomy, a rule layer, and the trained intent model (loaded, never
trained here: `shopfusion train intent` writes it, see `trainer.intent_export`).

Taxonomy (what the user wants, and for product searches how precisely they know it):

| label                        | example                          | what search does                         |
|------------------------------|----------------------------------|------------------------------------------|
| `product_lookup.specific`    | `ge pb911sjss`, `behr deckover`  | item, brand or part number               |
| `product_lookup.attribute`   | `3/4 in. copper elbow`           | constrained by size, colour, material    |
| `product_lookup.broad`       | `patio ideas`, `something to sit on` | exploratory                          |
| `product_information`        | `how to install a ceiling fan`   | products, with its own fusion row        |
| `comparison`                 | `ryobi vs dewalt drill`          | products, with its own fusion row        |
| `service`                    | `where is my order`              | products AND a message pointing to help  |

No label hides products: a query that looks like a service question still gets its products, with
`Results.message` beside them. Withholding is an explicit opt-in policy row (`search = false`).

Prediction runs in two layers: high-precision rules first (part and model numbers, "vs"/"compare",
"where is my order"), then the model: dense heads over the L2-normalised query embedding. The heads read
the index encoder's query vector (computed once for the dense leg) unless the model carries its own
fine-tuned encoder (`encoder/` in its directory), which then encodes the query itself. A model trained on
another encoder's vectors than the index's cannot read them: `IntentModel.compatible` says so and the
caller refuses or falls back visibly (`shopfusion.artifacts.check_encoder`).

The intent-model directory (kind `intent-model`, see `shopfusion.artifacts`): `shopfusion_card.json`
(labels, head layout, rules, encoder reference), `heads.safetensors` (`layer<i>.weight` `[out, in]`,
`layer<i>.bias`; GELU between layers) and, for models whose encoder was trained, `encoder/`.

>>> rules = RuleLayer(brands={"behr"})
>>> rules.intent("ryobi vs dewalt drill")
'comparison'
>>> rules.specificity("ge pb911sjss range"), rules.specificity("3/4 in. copper elbow")
('specific', 'attribute')
>>> rules.intent("the cart wheels") is None
True
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopfusion.artifacts import EncoderRef, ModelCard, directory_hash, read_card
from shopfusion.errors import ConfigError

log = logging.getLogger(__name__)

PRODUCT_LOOKUP = "product_lookup"
PRODUCT_INFORMATION = "product_information"
COMPARISON = "comparison"
SERVICE = "service"
INTENTS: tuple[str, ...] = (PRODUCT_LOOKUP, PRODUCT_INFORMATION, COMPARISON, SERVICE)
SPECIFICITIES: tuple[str, ...] = ("specific", "attribute", "broad")
LABELS: tuple[str, ...] = tuple(f"{PRODUCT_LOOKUP}.{s}" for s in SPECIFICITIES) + INTENTS[1:]
"""The taxonomy labels, in the order the learned ranker's `intent_<label>` features use."""

HEADS_FILE = "heads.safetensors"
OWN_ENCODER_DIR = "encoder"
DEFAULT_SERVICE_THRESHOLD = 0.9
"""The model must be this sure before a query gets the customer-service message."""


def intent_label(intent: str, specificity: str | None) -> str:
    """The taxonomy label: `product_lookup.<specificity>` for product lookups, else the intent itself."""
    if intent == PRODUCT_LOOKUP:
        return f"{PRODUCT_LOOKUP}.{specificity or 'broad'}"
    return intent


def split_label(label: str) -> tuple[str, str | None]:
    """`product_lookup.attribute` -> (`product_lookup`, `attribute`); any other label -> (label, None)."""
    head, _, tail = label.partition(".")
    if head == PRODUCT_LOOKUP and tail in SPECIFICITIES:
        return PRODUCT_LOOKUP, tail
    return label, None


@dataclass(frozen=True)
class IntentPrediction:
    """What one query wants. `probability` is that of the label (1.0 when a rule decided it); `source`
    says who decided: `rule`, `model` or `rules-only` (no usable model); `probabilities` are the model's
    class probabilities (empty when only rules ran), what the learned ranker reads."""

    intent: str
    specificity: str | None
    probability: float
    source: str
    probabilities: Mapping[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return intent_label(self.intent, self.specificity)

    @property
    def keys(self) -> tuple[str, ...]:
        """Policy keys from the most to the least specific: `label`, then `intent`."""
        return (self.label,) if self.intent == self.label else (self.label, self.intent)

    def taxonomy_probabilities(self) -> dict[str, float]:
        """Probabilities over `LABELS` (0 for labels the model does not have)."""
        return {label: float(self.probabilities.get(label, 0.0)) for label in LABELS}


# -- rules ------------------------------------------------------------------------------------------
# High precision only: a rule that fires on a product query ("the cart wheels", "customer service
# headset", "store hours sign") puts a wrong message next to its results, so these need context words.
_SERVICE = [re.compile(p) for p in (
    r"\b(where|status|track|tracking|cancel|change|return|refund)\b.*\bmy (order|package|delivery|purchase|shipment)s?\b",
    r"\border (status|history|tracking)\b",
    r"\b(track|cancel|return) (an|my|this) (order|package|purchase)\b",
    r"\bmy (shopping )?(cart|basket|shopping list)\b",
    r"\b(add|put|remove|delete)\b.*\b(to|from|in|on) (my )?(shopping )?(cart|basket|shopping list)\b",
    r"\b(refund|reimburse|chargeback)s?\b",
    r"\b(call|contact|reach|email|talk to|speak (to|with))\b.*\bcustomer (service|support|care)\b",
    r"\bcustomer (service|support|care) (number|phone|email|chat|hours)\b",
    r"\b(talk|speak|chat) (to|with) (a |an )?(human|agent|person|representative)\b",
    r"\b(your|the store'?s?) (store |opening )?hours\b",
    r"\bwhen (do|does|are) (you|the store|your stores?) (open|close)\b",
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


def predict_with_rules(rules: RuleLayer, query: str) -> IntentPrediction:
    """The rule layer alone: rule intents, else a product lookup with the rule specificity."""
    intent = rules.intent(query)
    if intent is not None:
        return IntentPrediction(intent, None, 1.0, "rules-only")
    return IntentPrediction(PRODUCT_LOOKUP, rules.specificity(query), 1.0, "rules-only")


# -- the model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseHead:
    """Linear layers with GELU between them, then softmax over `labels` (the trainer's classification
    head without its dropout): `layers[i] = (weight [out, in], bias [out])`."""

    labels: tuple[str, ...]
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    def __post_init__(self) -> None:
        if not self.layers or self.layers[-1][0].shape[0] != len(self.labels):
            raise ConfigError(f"an intent head must end in {len(self.labels)} outputs, one per label")

    @property
    def dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def proba(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T + bias
            if i < len(self.layers) - 1:
                h = _gelu(h)
        h = h - h.max(axis=-1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(axis=-1, keepdims=True)


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU torch's `nn.GELU()` computes."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


class IntentModel:
    """A loaded intent model: rules, a dense head, and optionally its own encoder (loaded on first use).

    `encoder` is what the head reads: the index encoder's vectors (compare with `compatible`) or, when
    `own_encoder` is set, vectors of that fine-tuned encoder, computed here from the query text."""

    def __init__(self, head: DenseHead, *, encoder: EncoderRef, rules: RuleLayer | None = None,
                 service_threshold: float = DEFAULT_SERVICE_THRESHOLD, card: ModelCard | None = None,
                 own_encoder: Path | None = None, identity: str = "") -> None:
        self.head = head
        self.encoder = encoder
        self.rules = rules or RuleLayer()
        self.service_threshold = service_threshold
        self.card = card
        self.own_encoder_path = own_encoder
        self.identity = identity
        """`directory_hash` of the model directory: what a fusion policy or a ranker trained with it names."""
        self._own: Any = None
        self._lock = threading.Lock()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.head.labels

    @property
    def has_own_encoder(self) -> bool:
        return self.own_encoder_path is not None

    def compatible(self, index_encoder: EncoderRef) -> bool:
        """Whether the head can read the index's query vectors (always, with its own encoder)."""
        return self.has_own_encoder or self.encoder.same_as(index_encoder)

    def own_vector(self, query: str) -> np.ndarray:
        if self._own is None:
            with self._lock:
                if self._own is None:
                    from shopfusion.encoders import load_encoder

                    assert self.own_encoder_path is not None
                    self._own = load_encoder(str(self.own_encoder_path))
        return np.asarray(self._own.encode_query(query), dtype=np.float32)

    def predict(self, query: str, vector: np.ndarray | None) -> IntentPrediction:
        """Rules first, then the head. `vector` is the index encoder's query vector (ignored when the
        model has its own encoder); without a readable vector only the rules run."""
        if self.has_own_encoder:
            vector = self.own_vector(query)
        if vector is None or vector.ndim != 1 or vector.shape[0] != self.head.dim:
            return predict_with_rules(self.rules, query)
        p = self.head.proba(vector)
        labels = self.head.labels
        probabilities = {label: float(v) for label, v in zip(labels, p, strict=True)}
        ruled = self.rules.intent(query)
        if ruled in (SERVICE, COMPARISON):
            intent, specificity = ruled, None
            probability, source = 1.0, "rule"
        else:
            order = [int(i) for i in np.argsort(-p)]
            best = labels[order[0]]
            if best == SERVICE and p[order[0]] < self.service_threshold:
                # not sure enough to call it a service question: take the best other label
                best = next((labels[i] for i in order if labels[i] != SERVICE), best)
            intent, specificity = split_label(best)
            probability, source = probabilities[best], "model"
            if ruled is not None and intent != SERVICE:
                # a question opener makes a product query an information request
                intent, specificity, probability, source = ruled, None, 1.0, "rule"
        if intent == PRODUCT_LOOKUP and (part_numbers(query) or self.rules.brand(query)):
            specificity = "specific"
        return IntentPrediction(intent, specificity, probability, source, probabilities)

    def describe(self) -> dict[str, Any]:
        """What `--explain` shows about the model."""
        return {"encoder": self.encoder.model_id, "own_encoder": self.has_own_encoder, "labels": len(self.labels),
                "id": self.identity, "method": self.card.method if self.card else None}


def load_intent_model(path: str | Path) -> IntentModel:
    """Load an intent-model directory written by `shopfusion train intent`."""
    from safetensors.numpy import load_file

    directory = Path(path).expanduser()
    card = read_card(directory, "intent-model")
    extra = card.extra
    weights = directory / HEADS_FILE
    if not weights.is_file():
        raise ConfigError(f"intent model {directory} lacks {HEADS_FILE}: copy the whole directory")
    try:
        tensors = load_file(str(weights))
        layers = tuple((tensors[f"layer{i}.weight"], tensors[f"layer{i}.bias"]) for i in range(int(extra["layers"])))
        labels = tuple(str(label) for label in extra["labels"])
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"intent model {directory} is malformed ({exc}): retrain it with `shopfusion train intent`")\
            from exc
    if card.encoder is None:
        raise ConfigError(f"intent model {directory} does not name the encoder it was trained on: retrain it")
    own = directory / OWN_ENCODER_DIR if extra.get("own_encoder") else None
    if own is not None and not own.is_dir():
        raise ConfigError(f"intent model {directory} needs its encoder in {own}: copy the whole directory")
    rules = RuleLayer(extra.get("brands", ()))
    return IntentModel(DenseHead(labels, layers), encoder=card.encoder, rules=rules, card=card, own_encoder=own,
                       service_threshold=float(extra.get("service_threshold", DEFAULT_SERVICE_THRESHOLD)),
                       identity=directory_hash(directory))


def default_intent_model_dir() -> Path:
    """Where the package keeps its shipped intent model (`shopfusion/data/intent`)."""
    import shopfusion

    return Path(shopfusion.__file__).resolve().parent / "data" / "intent"


def accuracy_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-label precision, recall and F1 (macro-averaged over labels present)."""
    pairs = list(zip(y_true, y_pred, strict=True))
    out: dict[str, Any] = {"n": len(pairs), "accuracy": float(np.mean([a == b for a, b in pairs])) if pairs else 0.0,
                           "labels": {}}
    f1s = []
    for label in labels:
        tp = sum(1 for a, b in pairs if a == label and b == label)
        fp = sum(1 for a, b in pairs if a != label and b == label)
        fn = sum(1 for a, b in pairs if a == label and b != label)
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
