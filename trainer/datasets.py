"""Loaders that turn the shared data files into training examples.

- `load_products`: a products.jsonl as `Product`s (the record's `source` kept as an attribute);
- `category_examples`: products -> (text, leaf type) examples, one domain per top-level category;
- `intent_examples`: CLINC150-style queries.jsonl -> (utterance, intent) examples, one domain per intent domain;
- `relevance_pairs`: queries.jsonl + qrels.tsv -> graded (query, product) pairs;
- `pseudo_queries`: label-free (pseudo-query, product) pairs built from a catalog's own product fields.

The data folder is `../shared/data` from the project root (`default_data_dir`); nothing here is copied
into the repository.

>>> p = Product(id="1", title="Tata Salt Iodised 1 kg", brand="Tata", category_path=("Foodgrains", "Salt", "Salt"))
>>> [q.query for q in pseudo_queries([p], seed=0)][:2]
['tata salt', 'salt iodised 1 kg']
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shopfusion.errors import TrainingError
from shopfusion.types import Product
from trainer.domains import LabeledText


def default_data_dir() -> Path:
    """`../shared/data` next to the project root (where benchmarks expect the shared datasets)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class QueryRecord:
    id: str
    text: str
    intent: str | None = None
    domain: str | None = None
    split: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class RelevancePair:
    """One judged (query, product) pair; `grade` as the qrels give it (Home Depot: 1 to 3)."""

    query_id: str
    query: str
    product_id: str
    grade: float


@dataclass(frozen=True)
class PseudoQuery:
    """A query built from a product's own fields, with the product it should retrieve."""

    query: str
    product_id: str
    kind: str


def _nonempty_lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: check the path (shared data lives in ../shared/data)")
    found = False
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                found = True
                yield number, line
    if not found:
        raise TrainingError(f"{path} is empty: give a file with one JSON record per line")


def load_products(path: str | Path, limit: int | None = None) -> list[Product]:
    """Products of a products.jsonl (`id` and `title` required); the record's `source` goes to attributes."""
    path = Path(path)
    products: list[Product] = []
    for number, line in _nonempty_lines(path):
        try:
            record = json.loads(line)
            attributes = {k: str(v) for k, v in (record.get("attributes") or {}).items() if v is not None}
            if record.get("source"):
                attributes["source"] = str(record["source"])
            products.append(
                Product(
                    id=str(record["id"]),
                    title=str(record["title"]),
                    description=record.get("description"),
                    brand=record.get("brand"),
                    category_path=tuple(record.get("category_path") or ()),
                    attributes=attributes,
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TrainingError(f"{path}, line {number}: not a product record ({exc}); fields `id` and"
                                " `title` are required") from exc
        if limit is not None and len(products) >= limit:
            break
    return products


def load_query_records(path: str | Path) -> list[QueryRecord]:
    path = Path(path)
    records = []
    for number, line in _nonempty_lines(path):
        try:
            r = json.loads(line)
            records.append(QueryRecord(id=str(r["id"]), text=str(r["text"]), intent=r.get("intent"),
                                       domain=r.get("domain"), split=r.get("split"),
                                       category=r.get("category")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TrainingError(f"{path}, line {number}: a query needs `id` and `text` ({exc})") from exc
    return records


def classification_text(product: Product, *, with_description: bool = False) -> str:
    """The text a category model sees: title and brand (never the category path, which is the label)."""
    parts = [product.title]
    if product.brand:
        parts.append(product.brand)
    if with_description and product.description:
        parts.append(product.description)
    return " | ".join(parts)


def document_text(product: Product, *, with_category: bool = False) -> str:
    """The text a retrieval experiment embeds: title, brand, description and attributes; the category
    path only when asked (category-name queries would otherwise match it verbatim)."""
    parts = [product.title]
    if product.brand:
        parts.append(product.brand)
    if with_category and product.category_path:
        parts.append(product.category_text)
    if product.description:
        parts.append(product.description)
    return " | ".join(parts)


def category_examples(
    products: Iterable[Product], *, level: int = -1, with_description: bool = False
) -> list[LabeledText]:
    """One example per product: label = the category at `level` (default the leaf type), domain = the root."""
    examples = []
    for p in products:
        if len(p.category_path) < 2:
            continue
        examples.append(LabeledText(classification_text(p, with_description=with_description),
                                    label=p.category_path[level], domain=p.category_path[0]))
    if not examples:
        raise TrainingError("no product has a category path of depth 2 or more: category models need them")
    return examples


def intent_examples(
    path: str | Path, *, splits: Sequence[str] | None = None, include_oos: bool = False
) -> list[LabeledText]:
    """CLINC150 utterances as (text, intent) examples grouped by intent domain."""
    out = []
    for r in load_query_records(path):
        if r.intent is None or r.domain is None:
            raise TrainingError(f"query {r.id!r} has no `intent`/`domain`: intent data needs both")
        if not include_oos and r.domain == "oos":
            continue
        if splits is not None and r.split not in splits:
            continue
        out.append(LabeledText(r.text, label=r.intent, domain=r.domain))
    if not out:
        raise TrainingError(f"{path}: no utterances left for splits {splits}")
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    """qrels.tsv (`query_id<TAB>product_id<TAB>grade`, header first) as {query_id: {product_id: grade}}."""
    path = Path(path)
    qrels: dict[str, dict[str, float]] = defaultdict(dict)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist")
    with path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise TrainingError(f"{path} is empty: expected a header query_id, product_id, grade")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                qrels[row[0]][row[1]] = float(row[2])
            except (IndexError, ValueError) as exc:
                raise TrainingError(f"{path}, line {number}: expected query_id, product_id, grade") from exc
    if not qrels:
        raise TrainingError(f"{path} has no judgments")
    return dict(qrels)


def relevance_pairs(queries_path: str | Path, qrels_path: str | Path) -> list[RelevancePair]:
    """Every judged pair whose query text is known."""
    queries = {r.id: r.text for r in load_query_records(queries_path)}
    pairs: list[RelevancePair] = []
    for qid, judged in load_qrels(qrels_path).items():
        if qid not in queries:
            continue
        pairs.extend(RelevancePair(qid, queries[qid], pid, grade) for pid, grade in judged.items())
    return pairs


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-&']+")
_NOISE = {"with", "and", "for", "the", "of", "in", "pack", "combo", "pc", "pcs", "set", "x", "g", "kg",
          "ml", "l", "gm", "gms", "ltr", "cm", "mm"}


def pseudo_queries(
    products: Sequence[Product],
    *,
    per_product: int = 2,
    seed: int = 0,
    min_words: int = 2,
    max_words: int = 4,
) -> list[PseudoQuery]:
    """Label-free training queries from each product's own fields, never its category path:

    - `brand+type`: the brand followed by the last content words of the title (the product type);
    - `span`: a random contiguous span of `min_words..max_words` title words;
    - `attribute`: an attribute value followed by a title word.
    """
    rng = random.Random(seed)
    out: list[PseudoQuery] = []
    for p in products:
        words = [w for w in _WORD.findall(p.title.split(" - ")[0].split("|")[0])]
        content = [w for w in words if w.lower() not in _NOISE]
        candidates: list[PseudoQuery] = []
        if p.brand and content:
            tail = [w for w in content if w.lower() not in p.brand.lower().split()][-2:]
            if tail:
                candidates.append(PseudoQuery(f"{p.brand} {' '.join(tail)}".lower(), p.id, "brand+type"))
        if len(words) >= min_words:
            n = rng.randint(min_words, min(max_words, len(words)))
            start = rng.randint(0, len(words) - n)
            candidates.append(PseudoQuery(" ".join(words[start:start + n]).lower(), p.id, "span"))
        values = [v for k, v in sorted(p.attributes.items())
                  if k not in {"source", "sale_price", "market_price", "rating"} and v and len(v) < 40]
        if values and content:
            candidates.append(PseudoQuery(f"{rng.choice(values)} {content[-1]}".lower(), p.id, "attribute"))
        seen: set[str] = set()
        for q in candidates:
            if q.query not in seen and len(out) < 10**9:
                seen.add(q.query)
                out.append(q)
            if len(seen) >= per_product:
                break
    return out


def category_name_queries(products: Sequence[Product]) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Evaluation queries from a catalog's leaf category names: the query is the leaf name, products of
    that leaf are relevant (grade 2) and products of the same parent category partially (grade 1).

    Returns (queries {qid: text}, qrels {qid: {product_id: grade}}). Pseudo-queries never use these names.
    """
    by_leaf: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for p in products:
        if len(p.category_path) >= 2:
            by_leaf[p.category_path].append(p.id)
    by_parent: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path, ids in by_leaf.items():
        by_parent[path[:-1]].extend(ids)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    seen: dict[str, str] = {}
    for path in sorted(by_leaf):
        name = path[-1]
        qid = seen.get(name.lower())
        if qid is None:
            qid = f"cat_q{len(queries)}"
            seen[name.lower()] = qid
            queries[qid] = name
            qrels[qid] = {}
        judged = qrels[qid]
        for pid in by_parent[path[:-1]]:
            judged.setdefault(pid, 1.0)
        for pid in by_leaf[path]:
            judged[pid] = 2.0
    return queries, qrels
