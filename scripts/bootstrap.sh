#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment and print its path.
#
#   scripts/bootstrap.sh            # core + dev extras (tests, Elasticsearch client, Celery, trainer)
#
# The environment lives outside the checkout, at ${SHOPFUSION_VENV:-$HOME/.cache/shopfusion/venv}, so that
# fresh clones (CI) reuse the large downloads (torch, CUDA libraries) instead of installing them again.
# Dependencies are reinstalled only when pyproject.toml changes; the project itself is always installed in
# editable mode from this checkout (fast, no dependency resolution).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SHOPFUSION_VENV:-$HOME/.cache/shopfusion/venv}"
PYTHON="${SHOPFUSION_PYTHON:-python3}"
log() { echo "bootstrap: $*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi

stamp="$VENV/.shopfusion-deps"
wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    log "installing dependencies (first run downloads torch and friends: a few minutes)"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" >&2
    echo "$wanted" > "$stamp"
else
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT" >&2
fi
echo "$VENV"
