"""Intent transfer on CLINC150: leave one intent domain out, k-shot on the held-out domain.

Source = the other 9 domains' train utterances (labelled with their intents; out-of-scope left out);
target = the held-out domain's 15 intents with k = 1, 5, 10, all (100) train utterances per intent;
test = 15 random utterances per intent of the domain's official test split. Methods as in bench_transfer_category.

    nice -n 10 python benchmarks/bench_transfer_intent.py --held-out banking
    nice -n 10 python benchmarks/bench_transfer_intent.py --report-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer_common import METHOD_ORDER, merge_results, parse_k, plot, report, run_transfer  # noqa: E402

DEFAULT_HELD_OUT = ("banking", "kitchen_and_dining", "travel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/clinc150"))
    parser.add_argument("--held-out", action="append", help="intent domain (repeatable)")
    parser.add_argument("--k", nargs="+", default=["1", "5", "10", "all"])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    parser.add_argument("--test-per-label", type=int, default=15,
                        help="test utterances per intent drawn from the official test split (0: all 30)")
    parser.add_argument("--source-size", type=int, default=3000)
    parser.add_argument("--head-steps", type=int, default=300)
    parser.add_argument("--adapt-steps", type=int, default=40)
    parser.add_argument("--encoder-lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    if not args.report_only:
        from trainer.datasets import intent_examples

        path = Path(args.data) / "queries.jsonl"
        train = intent_examples(path, splits=["train"])
        test = intent_examples(path, splits=["test"])
        test_sets: dict[str, list] = {}
        for e in test:
            test_sets.setdefault(e.domain, []).append(e)
        held_out = args.held_out or list(DEFAULT_HELD_OUT)
        config = {k: v for k, v in vars(args).items() if k not in {"report_only", "held_out"}}
        rows = run_transfer("intent", train, held_out, ks=parse_k(args.k), methods=args.methods,
                            test_per_label=args.test_per_label, test_sets=test_sets, source_size=args.source_size,
                            head_steps=args.head_steps, adapt_steps=args.adapt_steps,
                            max_seq_length=args.max_seq_length, seed=args.seed,
                            encoder_lr=args.encoder_lr,
                            on_progress=lambda partial: merge_results("intent", partial, config))
        data = merge_results("intent", rows, config)
    else:
        import json

        from bench_transfer_common import RESULTS

        data = json.loads((RESULTS / "transfer_intent.json").read_text(encoding="utf-8"))
    print(report("CLINC150 intent transfer", data, "accuracy"))
    print()
    print(report("CLINC150 intent transfer", data, "macro_f1"))
    print(f"\nplot: {plot('intent', data)}")


if __name__ == "__main__":
    main()
