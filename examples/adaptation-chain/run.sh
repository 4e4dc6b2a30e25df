#!/usr/bin/env bash
# The adaptation chain on a catalog of your own, as commands that run: judgments -> train encoder -> re-index
# with it -> train intent (for the new encoder) -> train ranker -> search, with `shopfusion eval` on held-out
# queries after every step.
#
#   bash examples/adaptation-chain/run.sh                      # on the shipped Icecat demo catalog
#   CATALOG=my/products.jsonl WORK=var/my-chain bash examples/adaptation-chain/run.sh
#
# Judgments here are made from the catalog's own titles by make_judgments.py (rule-derived, not human): they
# exercise the chain; use your own graded judgments (queries.jsonl + qrels.tsv) for real numbers.
# Environment: CATALOG, WORK, ENCODER_STEPS (default 300), INTENT_ARGS (extra `train intent` options, e.g.
# "--k 20 --max-test-per-label 10" for a quick run), RANKER_ARGS (extra `train ranker` options, e.g.
# "--rounds 20 --min-data-in-leaf 5"), SHOPFUSION (the command, default `shopfusion`).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CATALOG="${CATALOG:-$HERE/../icecat-demo/products.jsonl}"
WORK="${WORK:-var/adaptation-chain}"
ENCODER_STEPS="${ENCODER_STEPS:-300}"
INTENT_ARGS="${INTENT_ARGS:-}"
RANKER_ARGS="${RANKER_ARGS:-}"
SF="${SHOPFUSION:-shopfusion}"
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { echo; echo "== $*"; }
DATA="$WORK/data"
EVAL=(--queries "$DATA/test.queries.jsonl" --qrels "$DATA/test.qrels.tsv" --run hybrid --run lexical --run dense --json)

step "0. judgments (train / held-out test queries)"
"$PYTHON" "$HERE/make_judgments.py" "$CATALOG" "$DATA"

step "1. index with the packaged encoder, evaluate on the held-out queries"
$SF index "$CATALOG" --index "$WORK/base" --replace --no-progress --json > "$WORK/index-base.json"
$SF eval --index "$WORK/base" "${EVAL[@]}" > "$WORK/eval-1-base.json"

step "2. fine-tune the encoder on the training judgments"
$SF train encoder --catalog "$CATALOG" --queries "$DATA/train.queries.jsonl" --qrels "$DATA/train.qrels.tsv" \
    --positive-grade 2 --steps "$ENCODER_STEPS" --output "$WORK/encoder" --json > "$WORK/train-encoder.json"

step "3. re-index with it (the shipped intent model reads the packaged encoder's vectors: it falls back, with a warning)"
$SF index "$CATALOG" --index "$WORK/tuned" --model "$WORK/encoder" --replace --no-progress --json > "$WORK/index-tuned.json"
$SF eval --index "$WORK/tuned" "${EVAL[@]}" > "$WORK/eval-3-tuned.json"

step "4. train the intent model for the new encoder (the shipped, openly licensed examples)"
# shellcheck disable=SC2086
$SF train intent --data default --model "$WORK/encoder" --output "$WORK/intent" $INTENT_ARGS --json > "$WORK/train-intent.json"
$SF eval --index "$WORK/tuned" --intent-model "$WORK/intent" "${EVAL[@]}" > "$WORK/eval-4-intent.json"

step "5. train the learned ranker on the training judgments (features of the adapted index and intent model)"
# shellcheck disable=SC2086
$SF train ranker --index "$WORK/tuned" --intent-model "$WORK/intent" --queries "$DATA/train.queries.jsonl" \
    --qrels "$DATA/train.qrels.tsv" --output "$WORK/ranker" --cache-dir "$WORK/ranker-cache" $RANKER_ARGS \
    --json > "$WORK/train-ranker.json"
$SF eval --index "$WORK/tuned" --intent-model "$WORK/intent" --queries "$DATA/test.queries.jsonl" \
    --qrels "$DATA/test.qrels.tsv" --run fusion --run ranker --ranker "$WORK/ranker" --json > "$WORK/eval-5-ranker.json"

step "6. search with the adapted models"
$SF search "hp toner cartridge" --index "$WORK/tuned" --intent-model "$WORK/intent" --ranker "$WORK/ranker" --k 5 --explain

step "what each step changed (held-out queries, hybrid run)"
"$PYTHON" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
print(f"{'step':<34} {'nDCG@10':>8} {'R@100':>8} {'MRR':>8}   warnings")
for name, run in (("eval-1-base", "hybrid"), ("eval-3-tuned", "hybrid"), ("eval-4-intent", "hybrid"),
                  ("eval-5-ranker", "ranker")):
    report = json.loads((work / f"{name}.json").read_text())
    m = report["runs"][run]
    print(f"{name:<34} {m['ndcg@10']:8.4f} {m['recall@100']:8.4f} {m['mrr']:8.4f}   {len(report.get('warnings', []))}")
PY
