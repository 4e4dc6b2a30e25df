"""Loaders that turn catalogs, queries and judgments into training examples.

- `read_products`: a catalog (JSONL, CSV or Parquet) through the indexer's readers and validation, exactly
  as `shopfusion index` reads it: bad records go to a rejects file with their line and reason, the last
  record of a repeated id wins, and the products are the ones the index would hold;
- `category_examples`: products -> (text, leaf type) examples, one domain per top-level category;
- `intent_examples`: queries.jsonl with `text`, `intent` (and `domain`, `split`) -> labelled examples;
- `relevance_pairs`: queries + qrels (`shopfusion.evaluation`'s one loader) -> graded (query, product) pairs;
- `pseudo_queries`: label-free (pseudo-query, product) pairs built from a catalog's own product fields.

Every path is an argument: nothing here knows where data lives, and nothing is copied into the package.
Retrieval training embeds `Product.embedding_text()`, the text the index embeds.

>>> p = Product(id="1", title="Tata Salt Iodised 1 kg", brand="Tata", category_path=("Foodgrains", "Salt", "Salt"))
>>> [q.query for q in pseudo_queries([p], seed=0)][:2]
['tata salt', 'salt iodised 1 kg']
"""

from __future__ import annotations

import contextlib
import gzip
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
        raise TrainingError(f"{path} does not exist: check the path")
    found = False
    opened = gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")  # noqa: SIM115
    with opened as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                found = True
                yield number, line
    if not found:
        raise TrainingError(f"{path} is empty: give a file with one JSON record per line")


@dataclass(frozen=True)
class CatalogRead:
    """The products of a catalog as the index would hold them, and what was rejected (and where)."""

    products: list[Product]
    rejected: int
    duplicates: int
    rejects_file: Path | None


def read_products(path: str | Path, *, rejects: str | Path | None = None, limit: int | None = None,
                  max_field_chars: int = 100_000) -> CatalogRead:
    """Read and validate a catalog with `indexer.readers` and `indexer.validation` (the same code
    `shopfusion index` runs): rejected records are written to `rejects` (JSONL: source, line, reason,
    raw) when given, never dropped silently; a repeated id keeps its last record."""
    from indexer.readers import read_catalog
    from indexer.validation import validate
    from shopfusion.errors import CatalogError
    from shopfusion.types import Reject

    path = Path(path)
    try:
        records = read_catalog(path)
    except CatalogError as exc:
        raise TrainingError(str(exc)) from exc
    products: dict[str, Product] = {}
    rejected = duplicates = 0
    with contextlib.ExitStack() as stack:
        sink = None
        if rejects is not None:
            Path(rejects).parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(Path(rejects).open("w", encoding="utf-8"))
        for record in records:
            result = validate(record, max_field_chars)
            if isinstance(result, Reject):
                rejected += 1
                if sink is not None:
                    sink.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                continue
            if result.id in products:
                duplicates += 1
                del products[result.id]  # the last record wins, in its own position
            products[result.id] = result
            if limit is not None and len(products) >= limit:
                break
    if not products:
        raise TrainingError(f"{path} holds no valid product ({rejected} rejected"
                            + (f", see {rejects}" if rejects else "") + "): every product needs `id` and `title`")
    return CatalogRead(list(products.values()), rejected, duplicates, Path(rejects) if rejects else None)


def load_products(path: str | Path, limit: int | None = None) -> list[Product]:
    """The valid products of a catalog (`read_products` without a rejects file)."""
    return read_products(path, limit=limit).products


def load_query_records(path: str | Path) -> list[QueryRecord]:
    """Query records of a JSONL file (`text` required; `id` defaults to the line number)."""
    path = Path(path)
    records = []
    for number, line in _nonempty_lines(path):
        try:
            r = json.loads(line)
            records.append(QueryRecord(id=str(r.get("id", f"line{number}")), text=str(r["text"]), intent=r.get("intent"),
                                       domain=r.get("domain"), split=r.get("split"),
                                       category=r.get("category")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TrainingError(f"{path}, line {number}: a query needs `text` ({exc})") from exc
    return records


def classification_text(product: Product, *, with_description: bool = False) -> str:
    """The text a category model sees: title and brand (never the category path, which is the label)."""
    parts = [product.title]
    if product.brand:
        parts.append(product.brand)
    if with_description and product.description:
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
    """Labelled queries (`text`, `intent`, optional `domain`: default `default`) of the given splits;
    CLINC150's out-of-scope domain `oos` only with `include_oos`."""
    return [e for e, _ in _intent_records(path, splits, include_oos)]


def default_intent_examples() -> Path:
    """The labelled intent examples shipped with the package (openly licensed sources; see the
    ATTRIBUTION.md beside them): what the shipped intent model was trained on."""
    import shopfusion

    return Path(shopfusion.__file__).resolve().parent / "data" / "intent_examples" / "examples.jsonl.gz"


def intent_splits(path: str | Path, *, include_oos: bool = False) -> tuple[list[LabeledText], list[LabeledText]]:
    """(training, held-out) examples: records whose `split` names a test split (`test`, `oos_test`) are
    held out, every other record trains."""
    records = _intent_records(path, None, include_oos)
    return ([e for e, split in records if "test" not in split], [e for e, split in records if "test" in split])


def _intent_records(path: str | Path, splits: Sequence[str] | None, include_oos: bool) -> list[tuple[LabeledText, str]]:
    out = []
    for r in load_query_records(path):
        if r.intent is None:
            raise TrainingError(f"query {r.id!r} of {path} has no `intent`: intent data needs a label per query")
        domain = r.domain or "default"
        if not include_oos and domain == "oos":
            continue
        if splits is not None and r.split not in splits:
            continue
        out.append((LabeledText(r.text, label=str(r.intent), domain=domain), r.split or ""))
    if not out:
        raise TrainingError(f"{path}: no labelled queries left" + (f" for splits {list(splits)}" if splits else ""))
    return out


def relevance_pairs(queries_path: str | Path, qrels_path: str | Path) -> list[RelevancePair]:
    """Every judged pair whose query text is known."""
    from shopfusion.evaluation import load_qrels

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
