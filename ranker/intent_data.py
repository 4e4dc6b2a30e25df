"""Training examples for the intent model, assembled from real data plus a few documented seeds.

Sources, by label:

- `service`: CLINC150 utterances (crowd-written requests to a virtual assistant: order status, shopping
  list, card and payment questions, and 140 other non-shopping intents) and its out-of-scope utterances.
  None of them asks for a product, so all are "service or other": answered with a message, not products.
- `product_lookup`: real shopper queries (Home Depot, WANDS); their specificity is a weak label from the
  catalog: a part/model number or a catalog brand -> `specific`; a size, unit, colour or material ->
  `attribute`; else `broad` (`RuleLayer.specificity`).
- `product_information` and `comparison`: no public query log has them, so they come from the few
  templates below (`SEED_TEMPLATES`), written by us, filled with product-class names from WANDS
  (MIT). Train and held-out sets use disjoint templates *and* disjoint class names, so a held-out score
  measures generalisation, not template recall. They are kept out of every retrieval evaluation.
- `leg` (which retrieval leg wins): from judgments, per training query (`leg_labels`).

Catalog brands (`catalog_brands`) come from title prefixes: a word or word pair that starts many titles
and rarely appears elsewhere in them is taken for a brand (`Hampton Bay`, `BEHR`, `Rheem`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranker.intent import COMPARISON, PRODUCT_INFORMATION, PRODUCT_LOOKUP, SERVICE, RuleLayer
from shopfusion.errors import TrainingError


@dataclass(frozen=True)
class LabeledQuery:
    text: str
    intent: str
    specificity: str | None = None
    source: str = ""


# Hand-written templates ({x}, {y}: product-class names). Few on purpose; see the module docstring.
SEED_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        PRODUCT_INFORMATION: (
            "how to install {x}", "how do i clean {x}", "what size {x} do i need", "is the {x} waterproof",
            "how long does a {x} last", "can {x} be used outdoors", "{x} assembly instructions",
            "warranty on {x}", "what is the weight limit of the {x}", "does this {x} come assembled",
        ),
        COMPARISON: (
            "{x} vs {y}", "{x} or {y} which is better", "difference between {x} and {y}", "compare {x} and {y}",
            "{x} versus {y} for a small room", "is a {x} better than a {y}",
        ),
    },
    "heldout": {
        PRODUCT_INFORMATION: (
            "how much weight can a {x} hold", "how to assemble {x}", "what material is the {x} made of",
            "are {x} easy to maintain",
        ),
        COMPARISON: ("{x} vs. {y} pros and cons", "comparing {x} with {y}", "which is cheaper {x} or {y}"),
    },
}


def read_jsonl(path: str | Path) -> list[dict[str, object]]:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} not found: the shared data lives in ../shared/data")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def clinc_examples(path: str | Path, splits: Sequence[str], *, per_intent: int | None = None,
                   seed: int = 0) -> list[LabeledQuery]:
    """CLINC150 utterances of `splits` (e.g. `train`, `oos_train`) as `service` examples, at most
    `per_intent` per CLINC intent."""
    by_intent: dict[str, list[str]] = {}
    for record in read_jsonl(path):
        if record.get("split") in splits:
            by_intent.setdefault(str(record.get("intent")), []).append(str(record["text"]))
    if not by_intent:
        raise TrainingError(f"{path}: no CLINC150 utterances in splits {list(splits)}")
    rng = random.Random(seed)
    out: list[LabeledQuery] = []
    for intent in sorted(by_intent):
        texts = by_intent[intent]
        if per_intent is not None and len(texts) > per_intent:
            texts = rng.sample(texts, per_intent)
        out.extend(LabeledQuery(t, SERVICE, None, f"clinc150:{intent}") for t in texts)
    return out


def product_examples(texts: Iterable[str], rules: RuleLayer, source: str) -> list[LabeledQuery]:
    """Real shopper queries: product lookups whose specificity is the catalog weak label. Queries the
    rule layer reads as another intent keep that intent (a question in a product log is still one)."""
    out = []
    for text in texts:
        intent = rules.intent(text) or PRODUCT_LOOKUP
        out.append(LabeledQuery(text, intent, rules.specificity(text) if intent == PRODUCT_LOOKUP else None, source))
    return out


def seed_examples(class_names: Sequence[str], part: str = "train", *, per_template: int = 25,
                  seed: int = 0) -> list[LabeledQuery]:
    """`product_information` and `comparison` examples from the templates of `part`."""
    if part not in SEED_TEMPLATES:
        raise TrainingError(f"unknown seed part {part!r}: use {sorted(SEED_TEMPLATES)}")
    names = [n.lower() for n in class_names if n.strip()]
    if len(names) < 2:
        raise TrainingError("seed examples need at least two product-class names")
    rng = random.Random(seed)
    out: list[LabeledQuery] = []
    for intent, templates in SEED_TEMPLATES[part].items():
        for template in templates:
            for _ in range(per_template):
                x, y = rng.sample(names, 2)
                out.append(LabeledQuery(template.format(x=x, y=y), intent, None, f"seed:{part}"))
    return out


def split_class_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Disjoint halves of the class names (sorted, alternating) for train and held-out seeds."""
    unique = sorted({n.strip() for n in names if n and n.strip()})
    return unique[0::2], unique[1::2]


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&'\-]*")
_GENERIC = frozenset({"the", "a", "an", "and", "with", "for", "of", "in", "ft", "new", "pro", "premium", "classic",
                      "home", "ms", "md", "sea", "master", "builders", "progress", "filament", "trademark", "camp",
                      "classy", "harmony", "champion", "eye", "finishing", "weather", "smart", "step"})
"""Words that start many titles without naming a brand (determiners, units, generic adjectives)."""


def catalog_brands(titles: Iterable[str], *, min_count: int = 8, min_prefix_share: float = 0.6,
                   max_brands: int = 2000) -> list[str]:
    """Likely brand names: title prefixes (one or two words) that start at least `min_count` titles and
    appear at the start in at least `min_prefix_share` of the titles that contain them."""
    prefix: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for title in titles:
        words = [w.lower() for w in _WORD.findall(title)]
        if not words:
            continue
        grams = {words[0]} | ({" ".join(words[:2])} if len(words) > 1 else set())
        prefix.update(grams)
        seen = set(words) | {" ".join(words[i:i + 2]) for i in range(len(words) - 1)}
        anywhere.update(g for g in seen if g in prefix or g in grams)
    brands = []
    for gram, count in prefix.most_common():
        if count < min_count:
            break
        if len(gram) < 2 or count / max(anywhere[gram], 1) < min_prefix_share or set(gram.split()) & _GENERIC:
            continue
        brands.append(gram)
    # a two-word prefix is only a brand of its own when its first word is not already one
    single = {b for b in brands if " " not in b}
    brands = [b for b in brands if " " not in b or b.split()[0] not in single]
    return brands[:max_brands]


def brands_from_products(products: Iterable[Any], *, min_count: int = 2) -> list[str]:
    """A catalog's brands: its `brand` field where filled (named by at least `min_count` products), plus
    the title-prefix brands of `catalog_brands` (catalogs such as Home Depot's have titles only)."""
    named: Counter[str] = Counter()
    titles = []
    for product in products:
        titles.append(product.title)
        if product.brand and product.brand.strip():
            named[" ".join(product.brand.lower().split())] += 1
    explicit = [b for b, c in named.most_common() if c >= min_count and b not in _GENERIC]
    return sorted(set(explicit) | set(catalog_brands(titles)))


def leg_labels(lexical: Mapping[str, float], dense: Mapping[str, float], *, margin: float = 0.05) -> dict[str, str]:
    """Per query, which single leg scores better (nDCG@10) by more than `margin`; `either` otherwise."""
    out = {}
    for qid in lexical.keys() & dense.keys():
        diff = lexical[qid] - dense[qid]
        out[qid] = "lexical" if diff > margin else "dense" if diff < -margin else "either"
    return out
