"""Category transfer on BigBasket: leave one top-level category out, classify its products into leaf types.

Source = products of the other top-level categories (labelled with their own leaf types); target = the
held-out category with k = 1, 5, 10, all labelled products per leaf type; test = 8 fixed products per
type (types with fewer than k_max + 8 products are dropped). Methods: untrained encoder + head (baseline),
head, finetune, l2sp, dann, mmd (see trainer.intent_trainer). Text = title | brand (never the category).

    nice -n 10 python benchmarks/bench_transfer_category.py --held-out Beverages
    nice -n 10 python benchmarks/bench_transfer_category.py --report-only

Reads ../shared/data/bigbasket (evaluation only; nothing is copied into the repository).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer_common import METHOD_ORDER, merge_results, parse_k, plot, report, run_transfer  # noqa: E402

DEFAULT_HELD_OUT = ("Beverages", "Snacks & Branded Foods", "Cleaning & Household")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/bigbasket"))
    parser.add_argument("--held-out", action="append", help="top-level category (repeatable)")
    parser.add_argument("--k", nargs="+", default=["1", "5", "10", "all"])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    parser.add_argument("--test-per-label", type=int, default=8)
    parser.add_argument("--source-size", type=int, default=3000)
    parser.add_argument("--head-steps", type=int, default=300)
    parser.add_argument("--adapt-steps", type=int, default=40)
    parser.add_argument("--encoder-lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    if not args.report_only:
        from trainer.datasets import category_examples, load_products

        examples = category_examples(load_products(Path(args.data) / "products.jsonl"))
        held_out = args.held_out or list(DEFAULT_HELD_OUT)
        config = {k: v for k, v in vars(args).items() if k not in {"report_only", "held_out"}}
        rows = run_transfer("category", examples, held_out, ks=parse_k(args.k), methods=args.methods,
                            test_per_label=args.test_per_label, source_size=args.source_size,
                            head_steps=args.head_steps, adapt_steps=args.adapt_steps,
                            max_seq_length=args.max_seq_length, seed=args.seed,
                            encoder_lr=args.encoder_lr,
                            on_progress=lambda partial: merge_results("category", partial, config))
        data = merge_results("category", rows, config)
    else:
        import json

        from bench_transfer_common import RESULTS

        data = json.loads((RESULTS / "transfer_category.json").read_text(encoding="utf-8"))
    print(report("BigBasket category transfer", data, "accuracy"))
    print()
    print(report("BigBasket category transfer", data, "macro_f1"))
    print(f"\nplot: {plot('category', data)}")


if __name__ == "__main__":
    main()
