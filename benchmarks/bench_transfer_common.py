"""Shared harness of the transfer benchmarks (category: BigBasket, intent: CLINC150).

For each held-out domain: the other domains are the labelled source; the held-out domain gets k labelled
examples per class (k = 1, 5, 10, all) and is scored on a fixed test set. Every method of
`trainer.intent_trainer` runs from the same pretrained MiniLM weights, plus the baseline `untrained`
(a randomly re-initialised encoder of the same architecture, frozen, with a new head).

Frozen-encoder embeddings are cached under benchmarks/results/cache (gitignored). Results accumulate per
held-out domain in benchmarks/results/transfer_<name>.json, so one domain can run per invocation; the
table and the PNG are made from everything accumulated so far.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.domains import LabeledText, drop_rare_labels, group_by_domain, kshot_split  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "cache"
METHOD_ORDER = ("untrained", "head", "finetune", "l2sp", "dann", "mmd")


def cached_vectors(name: str, texts: Sequence[str], embed) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """text -> vector for a frozen encoder, persisted as npy + json under results/cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    vec_path, key_path = CACHE / f"{name}.npy", CACHE / f"{name}.keys.json"
    table: dict[str, np.ndarray] = {}
    if vec_path.is_file() and key_path.is_file():
        keys = json.loads(key_path.read_text(encoding="utf-8"))
        table = dict(zip(keys, np.load(vec_path), strict=True))
    missing = list(dict.fromkeys(t for t in texts if t not in table))
    if missing:
        vectors = embed(missing)
        table.update(zip(missing, vectors, strict=True))
        keys = list(table)
        np.save(vec_path, np.stack([table[k] for k in keys]).astype(np.float32))
        key_path.write_text(json.dumps(keys), encoding="utf-8")
    return table


def run_transfer(
    name: str,
    examples: Sequence[LabeledText],
    held_out: Sequence[str],
    *,
    ks: Sequence[int | None],
    methods: Sequence[str],
    test_per_label: int,
    test_sets: dict[str, list[LabeledText]] | None = None,
    source_size: int,
    head_steps: int,
    adapt_steps: int,
    max_seq_length: int,
    seed: int,
    encoder_lr: float = 1e-4,
    unlabeled_size: int = 300,
    on_progress: Callable[[list[dict]], object] | None = None,
    min_per_label: int | None = None,
) -> list[dict]:
    """Run every (held-out domain, k, method) and return result rows; `on_progress(rows)` after each k
    (the benchmarks save partial results there, so an interrupted run keeps what it measured)."""
    import torch

    from trainer.evaluators import ClassificationEvaluator
    from trainer.intent_trainer import IntentTrainer, TrainingArguments
    from trainer.models import MultiTaskClassifier, TextEncoder, reinitialise

    torch.set_num_threads(1)  # the 2 cores are shared: small ops are far faster single-threaded
    encoder = TextEncoder.from_path("default", max_seq_length=max_seq_length)
    pristine = copy.deepcopy(encoder.model.state_dict())
    untrained = TextEncoder(reinitialise(copy.deepcopy(encoder.model), seed), max_seq_length=max_seq_length)
    groups = group_by_domain(examples)
    rows: list[dict] = []
    for domain in held_out:
        target = groups[domain]
        # labels kept: enough examples for the largest k plus the test set (10 + test by default, so that
        # a run of `--k all` alone keeps the same labels and test set as the full k = 1, 5, 10, all run)
        need = min_per_label or (max([10, *(k or 1 for k in ks)]) + (0 if test_sets is not None else test_per_label))
        target = drop_rare_labels(target, need)
        test = None
        if test_sets is not None:
            labels = {e.label for e in target}
            test = [e for e in test_sets[domain] if e.label in labels]
            if test_per_label:  # a fixed random subset of the official test split, per label
                per_label: dict[str, list[LabeledText]] = {}
                for e in random.Random(seed).sample(test, len(test)):
                    per_label.setdefault(e.label, []).append(e)
                test = [e for items in per_label.values() for e in items[:test_per_label]]
        rng = random.Random(seed)
        source_all = [e for d, items in groups.items() if d != domain for e in items]
        source = rng.sample(source_all, min(source_size, len(source_all)))
        texts = [e.text for e in target] + [e.text for e in (test or [])] + [e.text for e in source]
        pre_cache = cached_vectors(f"{name}_minilm_seq{max_seq_length}", texts,
                                   lambda t: encoder.embed(t).cpu().numpy())
        raw_cache = cached_vectors(f"{name}_untrained_seq{max_seq_length}", texts,
                                   lambda t: untrained.embed(t).cpu().numpy())
        n_labels = len({e.label for e in target})
        for k in ks:
            split = kshot_split(target, k, test_per_label=test_per_label, seed=seed, test=test)
            assert split.test, "empty test set"
            evaluator = ClassificationEvaluator([e.text for e in split.test], [e.label for e in split.test],
                                                domain)
            pool = list(split.unlabeled)
            rng_pool = random.Random(seed)
            unlabeled = rng_pool.sample(pool, min(unlabeled_size, len(pool)))  # never test texts
            for method in methods:
                start = time.time()
                if method == "untrained":
                    model = MultiTaskClassifier(untrained)
                    args = TrainingArguments(method="head", head_steps=head_steps, seed=seed,
                                             show_progress=False, max_seq_length=max_seq_length)
                    cache = raw_cache
                else:
                    encoder.model.load_state_dict(pristine)
                    model = MultiTaskClassifier(encoder)
                    args = TrainingArguments(method=method, head_steps=head_steps,  # type: ignore[arg-type]
                                             adapt_steps=adapt_steps, seed=seed, show_progress=False,
                                             encoder_lr=encoder_lr,
                                             max_seq_length=max_seq_length)
                    cache = pre_cache
                trainer = IntentTrainer(model, args, target=domain, train=split.train,
                                        source=source if method in ("dann", "mmd") else (),
                                        unlabeled=[e.text for e in unlabeled], evaluator=evaluator,
                                        embedding_cache=cache)
                out = trainer.train()
                row = {"domain": domain, "k": "all" if k is None else k, "method": method,
                       "n_labels": n_labels, "n_train": len(split.train), "n_test": len(split.test),
                       **{m: round(v, 4) for m, v in out.metrics.items()},
                       "seconds": round(time.time() - start, 1)}
                rows.append(row)
                print(f"  {domain:28s} k={row['k']!s:4s} {method:9s} acc={row['accuracy']:.3f} "
                      f"f1={row['macro_f1']:.3f} ({row['seconds']}s)", flush=True)
            if on_progress is not None:
                on_progress(rows)
        encoder.model.load_state_dict(pristine)
    return rows


def merge_results(name: str, rows: list[dict], config: dict) -> dict:
    """Add rows to results/transfer_<name>.json, replacing earlier rows of the same (domain, method, k)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"transfer_{name}.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"rows": [], "config": {}}
    done = {(r["domain"], r["method"], r["k"]) for r in rows}
    data["rows"] = [r for r in data["rows"] if (r["domain"], r["method"], r["k"]) not in done] + rows
    data["config"].update({f"{d}/{m}/k={k}": config for d, m, k in done})
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return data


def report(name: str, data: dict, metric: str = "accuracy") -> str:
    """Table (rows: domain x method, columns: k) plus the mean over domains and the k=10 / all ratio."""
    rows = data["rows"]
    ks = [k for k in (1, 5, 10, "all") if any(r["k"] == k for r in rows)]
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    value = {(r["domain"], r["method"], r["k"]): r[metric] for r in rows}
    header = "| held-out domain | method | " + " | ".join(f"k={k}" for k in ks) + " | k=10/all |"
    lines = [f"{name}: {metric} on the held-out domain's test set", "", header,
             "|" + "---|" * (len(ks) + 3)]
    for domain in [*domains, "MEAN"]:
        for method in methods:
            if domain == "MEAN":
                vals = [np.mean([value[(d, method, k)] for d in domains if (d, method, k) in value])
                        if any((d, method, k) in value for d in domains) else float("nan") for k in ks]
            else:
                vals = [value.get((domain, method, k), float("nan")) for k in ks]
            ratio = ""
            if 10 in ks and "all" in ks:
                ratio = f"{vals[ks.index(10)] / vals[ks.index('all')]:.2f}" if vals[ks.index("all")] else ""
            lines.append(f"| {domain} | {method} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {ratio} |")
    return "\n".join(lines)


def plot(name: str, data: dict, metric: str = "accuracy") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    ks = [k for k in (1, 5, 10, "all") if any(r["k"] == k for r in rows)]
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(domains) + 1, figsize=(4 * (len(domains) + 1), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, domain in zip(axes, [*domains, "mean"], strict=True):
        for method in methods:
            ys = []
            for k in ks:
                vals = [r[metric] for r in rows if r["method"] == method and r["k"] == k
                        and (domain == "mean" or r["domain"] == domain)]
                ys.append(np.mean(vals) if vals else np.nan)
            ax.plot(range(len(ks)), ys, marker="o", label=method)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_title(domain[:30], fontsize=9)
        ax.set_xlabel("labelled examples per class (k)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{name} transfer: leave one domain out, k-shot")
    fig.tight_layout()
    path = RESULTS / f"transfer_{name}.png"
    fig.savefig(path, dpi=120)
    return path


def parse_k(values: Sequence[str]) -> list[int | None]:
    return [None if v == "all" else int(v) for v in values]
