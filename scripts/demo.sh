#!/usr/bin/env bash
# The main job on the embedded default (tantivy + FAISS CPU + in-process embedding, no server):
# index the shipped Icecat demo catalog and search it.
#
#   bash scripts/demo.sh                       # index examples/icecat-demo, then search "wireless mouse"
#   bash scripts/demo.sh "usb c hub" --explain # any query, with search options
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$(bash scripts/bootstrap.sh)"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
INDEX="${SHOPFUSION_DEMO_INDEX:-var/demo-index}"
QUERY="${1:-wireless mouse}"
shift || true

"$VENV/bin/shopfusion" index examples/icecat-demo/products.jsonl --index "$INDEX" --progress
"$VENV/bin/shopfusion" search "$QUERY" --index "$INDEX" --k 10 "$@"
