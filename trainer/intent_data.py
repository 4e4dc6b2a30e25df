"""Training examples for the intent taxonomy, assembled from openly licensed data plus a few documented
seeds (`taxonomy_examples`; `shopfusion train intent-data` writes them as JSONL for `train intent`).

Sources, by label:

- `service`: CLINC150 utterances (CC BY 3.0; crowd-written requests to a virtual assistant: order status,
  shopping list, card and payment questions, and 140 other non-shopping intents) and its out-of-scope
  utterances. None of them asks for a product: they are "service or other" (products plus a message).
- `product_lookup.<specificity>`: real shopper queries (WANDS, MIT), pseudo-queries made from product
  fields of an openly licensed catalog (Icecat), and category names (the Best Buy taxonomy, CC0); their
  specificity is a weak label from the rules: a part/model number or a catalog brand -> `specific`; a
  size, unit, colour or material -> `attribute`; else `broad` (`RuleLayer.specificity`).
- `product_information` and `comparison`: no public query log has them, so they come from the few
  templates below (`SEED_TEMPLATES`), written by us, filled with product-class names. Train and held-out
  sets use disjoint templates *and* disjoint class names, so a held-out score measures generalisation,
  not template recall. They are kept out of every retrieval evaluation.

Every example has a `split` (`train` or `test`): CLINC150's own splits, alternate halves of WANDS and of
the catalog's products, disjoint halves of the class names.

Catalog brands (`catalog_brands`) come from title prefixes: a word or word pair that starts many titles
and rarely appears elsewhere in them is taken for a brand (`Hampton Bay`, `BEHR`, `Rheem`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranker.intent import COMPARISON, PRODUCT_INFORMATION, PRODUCT_LOOKUP, SERVICE, RuleLayer, intent_label
from shopfusion.errors import TrainingError


@dataclass(frozen=True)
class LabeledQuery:
    text: str
    intent: str
    specificity: str | None = None
    source: str = ""
    split: str = "train"

    @property
    def label(self) -> str:
        return intent_label(self.intent, self.specificity)

    def to_record(self, domain: str = "shop") -> dict[str, str]:
        """The JSONL record `shopfusion train intent` reads."""
        return {"text": self.text, "intent": self.label, "domain": domain, "split": self.split, "source": self.source}


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
        raise TrainingError(f"{path} not found: check the path")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def clinc_examples(path: str | Path, splits: Sequence[str], *, per_intent: int | None = None,
                   seed: int = 0, split: str = "train") -> list[LabeledQuery]:
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
        out.extend(LabeledQuery(t, SERVICE, None, f"clinc150:{intent}", split) for t in texts)
    return out


def product_examples(texts: Iterable[str], rules: RuleLayer, source: str, split: str = "train") -> list[LabeledQuery]:
    """Shopper queries: product lookups whose specificity is the catalog weak label. Queries the rule
    layer reads as another intent keep that intent (a question in a product log is still one)."""
    out = []
    for text in texts:
        intent = rules.intent(text) or PRODUCT_LOOKUP
        out.append(LabeledQuery(text, intent, rules.specificity(text) if intent == PRODUCT_LOOKUP else None, source,
                                split))
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
                out.append(LabeledQuery(template.format(x=x, y=y), intent, None, f"seed:{part}",
                                        "train" if part == "train" else "test"))
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


_NOT_A_PRODUCT = re.compile(
    r"\b(faq|faqs|shipping|delivery|tips|rundown|test|top-rated|deals?|sale|gift ideas|plans?|terms|conditions|"
    r"protect|support|services?|membership|rewards|trade|in-store|pickup|financing|credit|outlet|clearance|"
    r"new arrivals|best sellers?|featured|shop|ideas|geek squad|mdot|offers?|awards|black friday)\b", re.IGNORECASE)


def product_class(name: str) -> bool:
    """Whether a category name reads as a class of products (`Over the Range Microwaves`), not a store page
    (`Trade In FAQs`, `Free Shipping`) or a model name with numbers (`Galaxy S6 Cases`)."""
    words = name.split()
    return 0 < len(words) <= 4 and not any(c.isdigit() for c in name) and not _NOT_A_PRODUCT.search(name)


_ATTRIBUTE_KEYS = ("product_colour", "colour", "material", "display_diagonal", "internal_memory", "cable_length",
                   "capacity", "screen_size", "power", "size")
_UNITS = {"display_diagonal": '"', "internal_memory": " gb", "cable_length": " m"}


def catalog_queries(products: Sequence[Any], rng: random.Random) -> list[tuple[str, str]]:
    """Shopper-like queries from product fields, one per product: `{brand} {model}` (a known item),
    `{attribute value} {type}` (a constrained lookup) or `{type}` (a broad one). The product type is the
    catalog's `product_type` attribute or the title words before the first model number."""
    out = []
    for product in products:
        words = [w for w in _WORD.findall(product.title)]
        type_words = [w for w in words if w.lower() not in {(product.brand or "").lower()}][:3]
        kind_of = str(product.attributes.get("product_type") or " ".join(type_words[-2:])).lower()
        if not kind_of:
            continue
        model = next((t for t in product.title.split()[1:4] if any(c.isdigit() for c in t)), None)
        values = [(k, str(product.attributes[k])) for k in _ATTRIBUTE_KEYS if product.attributes.get(k)]
        choice = rng.random()
        if choice < 0.34 and product.brand and model:
            out.append((f"{product.brand} {model}".lower(), "model"))
        elif choice < 0.67 and values:
            key, value = rng.choice(values)
            value = value[:-2] if value.endswith(".0") else value
            out.append((f"{value}{_UNITS.get(key, '')} {kind_of}".lower(), "attribute"))
        else:
            out.append((kind_of, "type"))
    return out


def taxonomy_examples(*, clinc: str | Path | None = None, wands: str | Path | None = None,
                      catalogs: Sequence[str | Path] = (), taxonomy: str | Path | None = None,
                      clinc_per_intent: int = 40, per_catalog: int = 3000, categories: int = 1500,
                      seed_per_template: int = 25, seed: int = 0) -> tuple[list[LabeledQuery], list[str]]:
    """Labelled examples of every taxonomy label from the given sources, and the catalog brands the rule
    layer uses. Paths are the caller's (nothing here knows where data lives).

    - `clinc`: CLINC150 `queries.jsonl` (`text`, `intent`, `split`) -> `service`;
    - `wands`: WANDS `queries.jsonl` (`text`, `category`) -> product lookups; its class names fill seeds;
    - `catalogs`: product catalogs (read with the indexer's readers and validation) -> pseudo-queries from
      product fields (`trainer.datasets.pseudo_queries`) and the brands of the rule layer;
    - `taxonomy`: a category tree (`categories.jsonl` with `name`) -> broad product lookups and class names.
    """
    rng = random.Random(seed)
    products = []
    for catalog in catalogs:
        from trainer.datasets import read_products

        products.extend(read_products(catalog).products)
    brands = brands_from_products(products) if products else []
    rules = RuleLayer(brands)
    out: list[LabeledQuery] = []
    class_names: list[str] = []
    if clinc is not None:
        out += clinc_examples(clinc, ["train", "val", "oos_train", "oos_val"], per_intent=clinc_per_intent, seed=seed)
        out += clinc_examples(clinc, ["test", "oos_test"], per_intent=max(clinc_per_intent // 4, 1), seed=seed,
                              split="test")
    if wands is not None:
        records = read_jsonl(wands)
        out += product_examples([str(r["text"]) for r in records[0::2]], rules, "wands")
        out += product_examples([str(r["text"]) for r in records[1::2]], rules, "wands", "test")
        class_names += [str(r.get("category") or "") for r in records]
    if products:
        sample = rng.sample(products, min(per_catalog, len(products)))
        queries = catalog_queries(sample, rng)
        for i, (text, kind) in enumerate(queries):
            out += product_examples([text], rules, f"catalog:{kind}", "test" if i % 5 == 0 else "train")
    if taxonomy is not None:
        names = sorted({n for n in (str(r.get("name") or "").strip() for r in read_jsonl(taxonomy)) if product_class(n)})
        picked = rng.sample(names, min(categories, len(names)))
        out += product_examples([n.lower() for n in picked[0::2]], rules, "taxonomy")
        out += product_examples([n.lower() for n in picked[1::2]], rules, "taxonomy", "test")
        class_names += [n for n in picked if rules.specificity(n) == "broad"]
    if class_names:
        train_names, test_names = split_class_names(class_names)
        if len(train_names) >= 2 and len(test_names) >= 2:
            out += seed_examples(train_names, "train", per_template=seed_per_template, seed=seed)
            out += seed_examples(test_names, "heldout", per_template=max(seed_per_template // 2, 2), seed=seed)
    if not out:
        raise TrainingError("no intent examples: give at least one of --clinc, --wands, --catalog, --taxonomy")
    return out, brands
