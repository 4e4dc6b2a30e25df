"""Domains and few-shot splits: how labelled examples are grouped, split and validated before training.

A *domain* is a group of examples that share a label space: by default the root of a product's
`category_path` (BigBasket "Beverages"), or the catalog `source`, or any key the caller names. Transfer
experiments hold one domain out, train on the others, and adapt with `k` labelled examples per class.

>>> data = [LabeledText(f"t{i}", label=str(i % 2), domain="a") for i in range(6)]
>>> split = kshot_split(data, k=2, test_per_label=1, seed=0)
>>> len(split.train), len(split.test)
(4, 2)
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shopfusion.errors import TrainingError
from shopfusion.types import Product

GroupBy = Literal["category_root", "source"]


@dataclass(frozen=True)
class LabeledText:
    """One training example: a text, its class label and the domain it belongs to."""

    text: str
    label: str
    domain: str


@dataclass(frozen=True)
class KShotSplit:
    """`train`: at most `k` examples per label; `test`: disjoint held-out examples; `unlabeled`: the
    remaining examples of the domain with their labels hidden from training (used by DANN / MMD)."""

    train: tuple[LabeledText, ...]
    test: tuple[LabeledText, ...]
    unlabeled: tuple[LabeledText, ...]
    k: int | None


def domain_of(product: Product, group_by: GroupBy | Callable[[Product], str] = "category_root") -> str:
    """The domain key of a product: its category root, its `source` attribute, or a caller's function."""
    if callable(group_by):
        return group_by(product)
    if group_by == "category_root":
        if not product.category_path:
            raise TrainingError(
                f"product {product.id!r} has no category_path, so it has no category-root domain:"
                " fill category_path or group by `source`"
            )
        return product.category_path[0]
    if group_by == "source":
        source = product.attributes.get("source")
        if not source:
            raise TrainingError(f"product {product.id!r} has no `source`: group by `category_root` instead")
        return source
    raise TrainingError(f"unknown grouping {group_by!r}: use `category_root`, `source` or a function")


def group_by_domain(examples: Iterable[LabeledText]) -> dict[str, list[LabeledText]]:
    """Examples per domain, domains in first-seen order."""
    groups: dict[str, list[LabeledText]] = defaultdict(list)
    for example in examples:
        groups[example.domain].append(example)
    return dict(groups)


def leave_one_out(
    examples: Sequence[LabeledText], held_out: str
) -> tuple[list[LabeledText], list[LabeledText]]:
    """(source examples of every other domain, target examples of `held_out`)."""
    groups = group_by_domain(examples)
    if held_out not in groups:
        raise TrainingError(
            f"domain {held_out!r} not found; known domains: {', '.join(sorted(groups)) or '(none)'}"
        )
    source = [e for d, items in groups.items() if d != held_out for e in items]
    return source, groups[held_out]


def validate_examples(
    examples: Sequence[LabeledText],
    *,
    min_per_label: int = 1,
    min_labels: int = 2,
    labels: Sequence[str] | None = None,
    what: str = "training data",
) -> None:
    """Raise `TrainingError` (saying how to fix it) for data a trainer cannot learn from: no examples,
    fewer than `min_labels` classes, a class with fewer than `min_per_label` examples, or a label
    outside the declared `labels`."""
    if not examples:
        raise TrainingError(f"{what} is empty: give at least {min_labels * min_per_label} labelled examples")
    empty = [i for i, e in enumerate(examples) if not e.text.strip()]
    if empty:
        raise TrainingError(f"{what}: example {empty[0]} has an empty text; drop it or fill it")
    counts = Counter(e.label for e in examples)
    if labels is not None:
        unknown = sorted(set(counts) - set(labels))
        if unknown:
            raise TrainingError(
                f"{what}: unknown label {unknown[0]!r} (not among the {len(labels)} declared labels);"
                " add it to the label list or fix the example"
            )
    if len(counts) < min_labels:
        raise TrainingError(
            f"{what} has {len(counts)} label(s); a classifier needs at least {min_labels}:"
            " add examples of other labels or merge this domain with another"
        )
    few = sorted((n, label) for label, n in counts.items() if n < min_per_label)
    if few:
        n, label = few[0]
        raise TrainingError(
            f"{what}: label {label!r} has {n} example(s), fewer than the {min_per_label} needed;"
            f" add examples, lower k, or drop labels with fewer than {min_per_label} examples"
            " (`drop_rare_labels`)"
        )


def drop_rare_labels(examples: Sequence[LabeledText], min_count: int) -> list[LabeledText]:
    """Keep only examples whose label has at least `min_count` examples in its domain."""
    counts = Counter((e.domain, e.label) for e in examples)
    return [e for e in examples if counts[(e.domain, e.label)] >= min_count]


def kshot_split(
    examples: Sequence[LabeledText],
    k: int | None,
    *,
    test_per_label: int = 10,
    seed: int = 0,
    test: Sequence[LabeledText] | None = None,
) -> KShotSplit:
    """Split one domain into k labelled examples per label, a test set and an unlabeled pool.

    `k=None` means all labelled examples that are not in the test set. With an explicit `test` (a
    dataset's own test split) every given example is a training candidate. Deterministic in `seed`;
    the test set does not depend on `k`, so results for different `k` compare on the same examples.
    """
    if k is not None and k < 1:
        raise TrainingError(f"k must be at least 1 (or None for all labels), got {k}")
    rng = random.Random(seed)
    by_label: dict[str, list[LabeledText]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    need = (k or 1) + (0 if test is not None else test_per_label)
    validate_examples(examples, min_per_label=need, what=f"domain {examples[0].domain!r}" if examples else "")
    train: list[LabeledText] = []
    held: list[LabeledText] = list(test) if test is not None else []
    pool: list[LabeledText] = []
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        if test is None:
            held.extend(items[:test_per_label])
            items = items[test_per_label:]
        chosen = items if k is None else items[:k]
        train.extend(chosen)
        pool.extend(items[len(chosen):])
    if test is not None:
        unknown = {e.label for e in held} - set(by_label)
        if unknown:
            raise TrainingError(f"test label {sorted(unknown)[0]!r} never occurs in the training examples")
    return KShotSplit(train=tuple(train), test=tuple(held), unlabeled=tuple(pool), k=k)
