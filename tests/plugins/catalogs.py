"""Small catalogs the tests make themselves, and settings that use the fast hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopfusion.config import Settings
from shopfusion.types import Product

TINY = [
    Product("p01", "Makita cordless drill 18V", "Compact drill driver with two batteries", "Makita",
            ("Tools", "Power Tools", "Drills"), 129.0, {"voltage": "18V"}),
    Product("p02", "Bosch hammer drill 750W", "Corded hammer drill for masonry", "Bosch",
            ("Tools", "Power Tools", "Drills"), 89.5, {"power": "750W"}),
    Product("p03", "DeWalt drill bit set 20 pieces", "Titanium bits for wood and metal", "DeWalt",
            ("Tools", "Accessories"), 24.99, {"pieces": "20"}),
    Product("p04", "Garden hose 25 m with spray nozzle", "Kink-free hose for the garden", "Gardena",
            ("Garden", "Watering"), 35.0, {"length": "25 m"}),
    Product("p05", "Oscillating sprinkler", "Waters rectangular lawns up to 250 square meters", "Gardena",
            ("Garden", "Watering"), 19.0, {}),
    Product("p06", "Cordless leaf blower 36V", "Battery leaf blower for the garden", "Makita",
            ("Garden", "Power Tools"), 199.0, {"voltage": "36V"}),
    Product("p07", "Claw hammer 16 oz", "Steel claw hammer with rubber grip", "Stanley",
            ("Tools", "Hand Tools"), 14.5, {"weight": "16 oz"}),
    Product("p08", "Screwdriver set 8 pieces", "Phillips and slotted screwdrivers", "Stanley",
            ("Tools", "Hand Tools"), 12.0, {}),
    Product("p09", "LED ceiling light 24W", "Warm white LED panel for the kitchen", "Philips",
            ("Lighting", "Ceiling"), 45.0, {"color temperature": "3000K"}),
    Product("p10", "Smart LED bulb E27", "Dimmable bulb controlled by an app", "Philips",
            ("Lighting", "Bulbs"), 15.0, {"socket": "E27"}),
    Product("p11", "Outdoor wall lantern", "Black lantern for porches and entrances", "Philips",
            ("Lighting", "Outdoor"), None, {}),
    Product("p12", "Cordless impact driver 18V", "High torque driver for long screws", "DeWalt",
            ("Tools", "Power Tools", "Drivers"), 149.0, {"voltage": "18V"}),
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tiny_products() -> list[Product]:
    return list(TINY)


@pytest.fixture
def tiny_catalog(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "catalog.jsonl", [p.to_dict() for p in TINY])


@pytest.fixture
def hash_settings() -> Settings:
    """Settings with the deterministic hashing encoder: no model to load, results stable."""
    return Settings().replace("index", model="hash:32")


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    from shopfusion.encoders import load_encoder

    encoder = load_encoder("default", "cpu")
    encoder.encode(["warm up"])
    return encoder
