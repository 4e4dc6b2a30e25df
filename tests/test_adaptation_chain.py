"""The README's adaptation chain, run end to end by its example script on a slice of the shipped (openly
licensed) Icecat demo catalog, with tiny training steps, so that the chain cannot break silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_adaptation_chain_runs_end_to_end(tmp_path: Path) -> None:
    lines = (ROOT / "examples" / "icecat-demo" / "products.jsonl").read_text(encoding="utf-8").splitlines()
    catalog = tmp_path / "slice.jsonl"
    catalog.write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    env = {**os.environ, "CATALOG": str(catalog), "WORK": str(tmp_path / "work"), "ENCODER_STEPS": "2",
           "INTENT_ARGS": "--k 5 --max-test-per-label 3 --head-steps 10",
           "RANKER_ARGS": "--rounds 10 --min-data-in-leaf 5 --num-leaves 7",
           "SHOPFUSION": f"{sys.executable} -m shopfusion.cli", "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["bash", str(ROOT / "examples" / "adaptation-chain" / "run.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = tmp_path / "work"
    base, tuned, intent = (json.loads((work / f"eval-{n}.json").read_text())
                           for n in ("1-base", "3-tuned", "4-intent"))
    assert base["models"]["encoder"].startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert tuned["models"]["encoder"] != base["models"]["encoder"]  # re-indexed with the fine-tuned encoder
    assert any("rules only" in w for w in tuned["warnings"])  # the shipped intent model cannot read it
    assert not intent["warnings"] and intent["models"]["intent_model"]["encoder"] == tuned["models"]["encoder"]
    assert "what each step changed" in done.stdout and "intent model:" in done.stdout
    ranked = json.loads((work / "eval-5-ranker.json").read_text())  # the learned ranker, trained on the chain's models
    assert list(ranked["runs"]) == ["fusion", "ranker"] and ranked["models"]["ranker"]["path"] == str(work / "ranker")
    assert "ranker:" in done.stdout
