"""Queries and graded judgments for a catalog, made from its own product titles (an example data set for the
adaptation chain; NOT human judgments: the numbers it gives show the mechanics of the chain, not quality).

    python examples/adaptation-chain/make_judgments.py examples/icecat-demo/products.jsonl var/chain/data

For each product class below that at least `--min-products` titles name (`toner cartridge`, `notebook`, ...):
- the query `<class>` (plural-insensitive), with grade 2 for every product whose title names the class;
- for each brand with at least 2 such products, the query `<brand> <class>`: grade 3 for that brand's products
  of the class, grade 1 for other brands' products of the class.
Queries are split into `train` and `test` by a stable hash of the query id (30% test), written as
`{train,test}.queries.jsonl` (`id`, `text`) and `{train,test}.qrels.tsv` (`query_id product_id grade`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

CLASSES = ("toner cartridge", "ink cartridge", "notebook", "processor", "labels", "cable", "ups", "mouse",
           "keyboard", "monitor", "headphones", "switch", "power supply", "memory", "projector", "printer",
           "adapter", "battery", "case", "camera", "fuser", "drum", "paper", "lamp", "rack", "server", "ssd",
           "motherboard", "kvm", "power cord", "lens", "mount", "ribbon", "graphics card", "remote control")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog")
    parser.add_argument("output")
    parser.add_argument("--min-products", type=int, default=4)
    args = parser.parse_args()
    products = [json.loads(line) for line in Path(args.catalog).read_text(encoding="utf-8").splitlines() if line.strip()]
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for name in CLASSES:
        pattern = re.compile(rf"\b{re.escape(name)}s?\b", re.IGNORECASE)
        members = [p for p in products if pattern.search(str(p.get("title", "")))]
        if len(members) < args.min_products:
            continue
        qid = "c-" + name.replace(" ", "-")
        queries[qid] = name
        qrels[qid] = {str(p["id"]): 2 for p in members}
        by_brand: dict[str, list[str]] = defaultdict(list)
        for p in members:
            if p.get("brand"):
                by_brand[str(p["brand"])].append(str(p["id"]))
        for brand, ids in sorted(by_brand.items()):
            if len(ids) < 2:
                continue
            bid = f"b-{qid[2:]}-{re.sub(r'[^a-z0-9]+', '-', brand.lower())}"
            queries[bid] = f"{brand.lower()} {name}"
            qrels[bid] = {str(p["id"]): (3 if str(p["id"]) in set(ids) else 1) for p in members}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[str]] = {"train": [], "test": []}
    for qid in queries:
        bucket = int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        parts["test" if bucket < 0.3 else "train"].append(qid)
    for part, ids in parts.items():
        with (out / f"{part}.queries.jsonl").open("w", encoding="utf-8") as handle:
            for qid in ids:
                handle.write(json.dumps({"id": qid, "text": queries[qid]}) + "\n")
        with (out / f"{part}.qrels.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query_id\tproduct_id\tgrade\n")
            for qid in ids:
                for pid, grade in qrels[qid].items():
                    handle.write(f"{qid}\t{pid}\t{grade}\n")
    print(json.dumps({part: len(ids) for part, ids in parts.items()}))


if __name__ == "__main__":
    main()
