"""The scale benchmark's catalogs: the real catalogs in ../shared/data combined, grown to a million products
with variants of real products (benchmark input only: written under a scratch directory, never into the
repository).

Sources (102,677 real products): Home Depot (54,667), BigBasket (27,554), Icecat (19,406), Flipkart (1,050).

- sizes up to the real total (10k, 100k): a seeded sample of the real products, the same share from each
  source as in the whole;
- larger sizes: every real product, then variant rounds until the size is reached. Variant `n` of a
  product is the `n`-th element of a seeded shuffle of that product's variant grid:
  colour x size x pack count (variants that change one thing first, then two, then three), where
  - colour: a colour word in the title is swapped for another (a title without one gets one appended),
  - size: the first quantity with a unit in the title (`500 g`, `12 in.`, `4 GB`, `2 L`, ...) is scaled
    by 0.5, 1.5, 2, 3 or 4 (formatted like the original),
  - pack count: `Pack of N` (N in 2, 3, 4, 6, 10, 12, 24), replacing one the title already has,
  and the variant's attributes say which (`variant_colour`, `variant_size`, `pack_count`); a price, when the
  product has one, is scaled by the pack count and size factor. Ids are `<id>~v<n>`. Descriptions, brands
  and categories stay the product's own, as on a retailer's site.

    python benchmarks/scale_catalog.py --size 1000000 --out /work/scratch/12/catalogs/scale-1m.jsonl
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = ("homedepot", "bigbasket", "icecat", "flipkart1050")

COLOURS = ("Black", "White", "Silver", "Grey", "Gray", "Red", "Blue", "Green", "Brown", "Beige", "Navy", "Gold",
           "Bronze", "Ivory", "Charcoal", "Walnut", "Chrome", "Pink", "Yellow", "Orange", "Purple", "Teal")
SIZE_FACTORS = (0.5, 1.5, 2.0, 3.0, 4.0)
PACKS = (2, 3, 4, 6, 10, 12, 24)
_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)
_SIZE_RE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)(\s*-?\s*)(in\.|ft\.|gal\.|qt\.|oz\.|lb\.|cm|mm|ml|ltr|kg|gm|gms|g|l|oz|lb|"
    r"gb|tb|w|v|inch|m)(?![\w])", re.IGNORECASE)
_PACK_RE = re.compile(r"\(?\bpack of \d+\)?", re.IGNORECASE)


def read_real() -> list[dict[str, Any]]:
    products = []
    for source in SOURCES:
        with (DATA / source / "products.jsonl").open(encoding="utf-8") as handle:
            products.extend(json.loads(line) for line in handle if line.strip())
    return products


def sample(products: list[dict[str, Any]], size: int, seed: int = 0) -> list[dict[str, Any]]:
    """`size` real products, the same share from each source as in the whole (seeded)."""
    rng = random.Random(seed)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for product in products:
        by_source.setdefault(str(product.get("source")), []).append(product)
    chosen: list[dict[str, Any]] = []
    for items in by_source.values():
        share = round(size * len(items) / len(products))
        chosen.extend(rng.sample(items, min(share, len(items))))
    rng.shuffle(chosen)
    return chosen[:size]


def _format_number(value: float, like: str) -> str:
    if "." in like or not value.is_integer():
        return f"{value:.1f}".rstrip("0").rstrip(".") if not value.is_integer() else str(int(value))
    return str(int(value))


def _price(product: dict[str, Any]) -> float | None:
    for value in (product.get("price"), (product.get("attributes") or {}).get("sale_price"),
                  (product.get("attributes") or {}).get("price")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def variant_grid(product: dict[str, Any]) -> list[tuple[str | None, float | None, int | None]]:
    """Every (colour, size factor, pack count) this product can vary by, without the (none, none, none)
    original: variants that change one thing first, then two, then three; seeded order within each."""
    title = str(product["title"])
    has_size = _SIZE_RE.search(title) is not None
    current = _COLOUR_RE.search(title)
    colours: list[str | None] = [None] + [c for c in COLOURS if not current or c.lower() != current.group(1).lower()]
    sizes: list[float | None] = [None] + (list(SIZE_FACTORS) if has_size else [])
    packs: list[int | None] = [None, *PACKS]
    grid = [combo for combo in itertools.product(colours, sizes, packs) if combo != (None, None, None)]
    seed = int(hashlib.sha1(str(product["id"]).encode()).hexdigest()[:8], 16)
    random.Random(seed).shuffle(grid)
    grid.sort(key=lambda combo: sum(part is not None for part in combo))  # one change first, as in a real range
    return grid


def make_variant(product: dict[str, Any], n: int, combo: tuple[str | None, float | None, int | None]
                 ) -> dict[str, Any]:
    colour, factor, pack = combo
    title = str(product["title"])
    attributes = dict(product.get("attributes") or {})
    if colour is not None:
        title = _COLOUR_RE.sub(colour, title, count=1) if _COLOUR_RE.search(title) else f"{title}, {colour}"
        attributes["variant_colour"] = colour
    if factor is not None:
        match = _SIZE_RE.search(title)
        if match is not None:
            number = float(match.group(1)) * factor
            size = f"{_format_number(number, match.group(1))}{match.group(2)}{match.group(3)}"
            title = title[: match.start()] + size + title[match.end():]
            attributes["variant_size"] = size
    if pack is not None:
        if _PACK_RE.search(title):
            title = _PACK_RE.sub(f"(Pack of {pack})", title, count=1)
        else:
            title = f"{title} (Pack of {pack})"
        attributes["pack_count"] = pack
    variant = dict(product)
    variant["id"] = f"{product['id']}~v{n}"
    variant["title"] = title
    variant["attributes"] = attributes
    price = _price(product)
    if price is not None:
        bundle = 0.92 if pack else 1.0  # a multipack is a little cheaper per unit
        variant["price"] = round(price * (pack or 1) * bundle * (factor or 1.0), 2)
    return variant


def grow(products: list[dict[str, Any]], size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Every real product (seeded order), then variant rounds, until `size` records."""
    order = list(products)
    random.Random(seed).shuffle(order)
    emitted = 0
    for product in order:
        if emitted >= size:
            return
        yield product
        emitted += 1
    grids = [variant_grid(p) for p in order]
    for n in itertools.count(1):
        progressed = False
        for product, grid in zip(order, grids, strict=True):
            if emitted >= size:
                return
            if n > len(grid):
                continue
            yield make_variant(product, n, grid[n - 1])
            emitted += 1
            progressed = True
        if not progressed:
            raise click.ClickException(f"the variant grids are exhausted at {emitted} products")


@click.command()
@click.option("--size", type=int, required=True, help="Products in the catalog.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JSONL to write (outside the repo).")
@click.option("--seed", type=int, default=0, show_default=True)
def main(size: int, out: str, seed: int) -> None:
    """Write a catalog of SIZE products (see the module docstring for how it is made)."""
    if Path(out).resolve().is_relative_to(ROOT):
        raise click.ClickException("write scale catalogs outside the repository (they hold evaluation-only data)")
    real = read_real()
    records = sample(real, size, seed) if size <= len(real) else grow(real, size, seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out + ".tmp", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    Path(out + ".tmp").replace(out)
    click.echo(json.dumps({"out": out, "products": count, "real": min(size, len(real))}), err=True)


if __name__ == "__main__":
    sys.exit(main())
