"""Tiny models the tests train themselves with the real trainer (hashing encoder: no download, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

INTENT_TEXTS = {
    "product_lookup.specific": ["makita dhp482 drill", "bosch gsb 18v", "dewalt dcd791 driver", "philips hue e27"],
    "product_lookup.attribute": ["18v cordless drill", "25 m garden hose", "white led bulb", "16 oz claw hammer"],
    "product_lookup.broad": ["drill", "garden watering", "lighting ideas", "hand tools"],
    "product_information": ["how to drill into tiles", "how do i fix a hose", "what bulb fits a lamp",
                            "how long does a battery last"],
    "comparison": ["drill vs driver", "compare hose reels", "led or halogen which is better",
                   "difference between hammers"],
    "service": ["where is my order", "cancel my order", "refund my purchase", "track my package"],
}


def write_intent_data(path: Path) -> Path:
    """A JSONL in the layout `shopfusion train intent-data` writes (each label: 3 train, 1 test)."""
    lines = []
    for label, texts in INTENT_TEXTS.items():
        for i, text in enumerate(texts):
            lines.append({"text": text, "intent": label, "domain": "shop", "split": "test" if i == 3 else "train"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def train_tiny_intent_model(output: Path, encoder: str = "hash:32", *extra: str) -> Path:
    """`shopfusion train intent` (method head, few steps) on `write_intent_data`; returns the model dir."""
    from trainer.cli import train

    output.parent.mkdir(parents=True, exist_ok=True)
    data = write_intent_data(output.parent / f"{output.name}-data.jsonl")
    result = CliRunner().invoke(train, ["intent", "--data", str(data), "--model", encoder, "--head-steps", "60",
                                        "--output", str(output), "--json", *extra])
    assert result.exit_code == 0, result.output
    return output
