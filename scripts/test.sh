#!/usr/bin/env bash
# The test command: set up the environment, start real Elasticsearch and Redis, run the whole suite.
#
#   bash scripts/test.sh                 # everything (unit, CLI, end-to-end, ES and Celery integration)
#   bash scripts/test.sh -k fusion -x    # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$(bash scripts/bootstrap.sh)"
export PATH="$VENV/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== starting Elasticsearch and Redis" >&2
eval "$(bash scripts/services.sh start)"
trap 'bash scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

echo "== ruff" >&2
ruff check shopfusion indexer ranker workers trainer tests benchmarks
echo "== mypy" >&2
mypy shopfusion indexer ranker workers trainer
echo "== pytest" >&2
python -m pytest "$@"
