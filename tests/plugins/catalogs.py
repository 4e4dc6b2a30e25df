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

FACETED = [
    # Attribute spellings differ on purpose (case, spaces, Unicode, number form): filters and facets must
    # see one value for each.
    Product("f01", "Wireless mouse M185", "Compact wireless mouse", "Logitech", ("Computers", "Mice"), 19.99,
            {"colour": "Black", "weight": "75", "buttons": "3", "connection": "Wireless"}),
    Product("f02", "Wireless mouse M325", "Mouse with smooth scrolling", "Logitech", ("Computers", "Mice"), 24.5,
            {"Colour": "BLACK", "weight": "93.0", "buttons": "5", "connection": "wireless"}),
    Product("f03", "Optical mouse USB", "Wired optical mouse", "HP", ("Computers", "Mice"), 9.0,
            {"colour": "white", "weight": "90", "buttons": "3", "connection": "USB"}),
    Product("f04", "Gaming mouse RGB", "Wired gaming mouse with 8 buttons", "Razer", ("Computers", "Mice", "Gaming"),
            59.0, {"colour": "Dark\u00a0Grey", "weight": "101.5", "buttons": "8", "connection": "USB"}),
    Product("f05", "Wireless keyboard K270", "Full-size wireless keyboard", "Logitech", ("Computers", "Keyboards"),
            29.0, {"colour": "black ", "weight": "498", "connection": "Wireless"}),
    Product("f06", "Mechanical keyboard", "Gaming keyboard with red switches", "Razer",
            ("Computers", "Keyboards", "Gaming"), 129.0, {"colour": "dark grey", "weight": "1250"}),
    Product("f07", "USB-C hub 7-in-1", "Hub with HDMI and card reader", "Anker", ("Computers", "Accessories"),
            35.99, {"colour": "Silver", "ports": "7", "connection": "USB"}),
    Product("f08", "Laptop stand aluminium", "Adjustable stand for notebooks", "Rain Design",
            ("Computers", "Accessories"), 49.0, {"colour": "Silver", "weight": "1000", "material": "Aluminium"}),
    Product("f09", "Mouse pad XL", "Large cloth mouse pad for gaming", "Razer", ("Computers", "Accessories"),
            15.0, {"colour": "Black", "material": "Cloth"}),
    Product("f10", "Wireless mouse for kids", "Small wireless mouse in bright colours", "Trust", ("Toys",), None,
            {"colour": "Ｒｅｄ", "weight": "60", "connection": "Wireless"}),
    Product("f11", "Ergonomic vertical mouse", "Wireless vertical mouse", "Logitech", ("Computers", "Mice"), 99.0,
            {"colour": "Graphite", "weight": "135", "buttons": "6", "connection": "Wireless", "min_temp": "-20"}),
    Product("f12", "Outdoor thermometer", "Wireless outdoor sensor", None, ("Garden",), 25.0,
            {"min_temp": "-40.5", "connection": "Wireless"}),
    Product("f13", "Trackball mouse", "Wireless trackball", "Logitech", ("Computers", "Mice"), 25.0,
            {"colour": "Black", "weight": "145", "buttons": "5", "connection": "Wireless"}),
    Product("f14", "Mouse bungee", "Cable holder for a gaming mouse", "Razer", ("Computers", "Accessories"), 19.99,
            {}),
]
"""A small catalog with brands, category paths, prices and typed attributes (text and numeric)."""


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tiny_products() -> list[Product]:
    return list(TINY)


@pytest.fixture
def faceted_catalog(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "faceted.jsonl", [p.to_dict() for p in FACETED])


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


def shop_catalog() -> tuple[list[Product], dict[str, str], dict[str, dict[str, float]]]:
    """A made-up hardware catalog (brand x type x size, 108 products) and 120 queries with graded
    judgments (3 = the brand, type and size asked for; 2 = the right type; 1 = judged, wrong type), for
    training and testing the learned ranker. Deterministic."""
    import random

    rng = random.Random(7)
    brands = ["Makita", "Bosch", "DeWalt", "Stanley", "Gardena", "Philips"]
    kinds = {"drill": ("Tools", "Power Tools"), "hammer": ("Tools", "Hand Tools"), "saw": ("Tools", "Power Tools"),
             "hose": ("Garden", "Watering"), "bulb": ("Lighting", "Bulbs"), "ladder": ("Tools", "Ladders")}
    sizes = {"drill": ["12 V", "18 V", "20 V"], "hammer": ["16 oz", "20 oz", "24 oz"], "saw": ["7 in", "10 in", "12 in"],
             "hose": ["25 ft", "50 ft", "100 ft"], "bulb": ["40 W", "60 W", "75 W"], "ladder": ["4 ft", "6 ft", "8 ft"]}
    words = ["compact", "heavy duty", "professional", "classic"]
    products = []
    for kind, path in kinds.items():
        for brand in brands:
            for size in sizes[kind]:
                pid = f"s{len(products):03d}"
                adjective = rng.choice(words)
                products.append(Product(pid, f"{brand} {adjective} {kind} {size}",
                                        f"A {adjective} {kind} by {brand}, {size}.", brand, (*path, kind.title() + "s"),
                                        float(rng.randint(5, 300)), {"size": size}))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    for i in range(120):
        kind = rng.choice(list(kinds))
        brand = rng.choice(brands)
        size = rng.choice(sizes[kind])
        text = rng.choice([f"{brand} {kind} {size}", f"{kind} {size}", f"{brand.lower()} {kind}s {size.replace(' ', '')}"])
        qid = f"sq{i:03d}"
        queries[qid] = text
        judged: dict[str, float] = {}
        for p in products:
            title = p.title.lower()
            same_kind = f" {kind} " in f" {title} "
            exact = same_kind and size.lower() in title and (brand.lower() in title or brand.lower() not in text.lower())
            if exact:
                judged[p.id] = 3.0
            elif same_kind and rng.random() < 0.5:
                judged[p.id] = 2.0
            elif not same_kind and rng.random() < 0.03:
                judged[p.id] = 1.0
        qrels[qid] = judged
    return products, queries, qrels
