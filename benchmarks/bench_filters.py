"""Filters, facets and paging benchmark: the latency of filtered and faceted hybrid queries against
unfiltered ones in the same run, and whether a filtered hybrid query returns k hits whenever k products
match.

Catalogs (prepared under `--work`, never copied into the repository):

- `icecat`: the 19,406-product Icecat open catalog with its typed attributes, mapped as the shipped demo
  is (price from cents to units, `category_path` from the `product_type` attribute);
- `homedepot`: the 54,667-product Home Depot catalog (titles only). So that there is something to filter
  and count, this benchmark alone derives two fields from each title: `brand` = its first word (Home Depot
  titles start with the brand) and the attribute `title_number` = the first number in it.

Queries: Home Depot's shopper queries; for Icecat (no query log) the first three words of the titles of
a seeded sample of products. Per query, the filters are what a shopper clicks after seeing the unfiltered
results: the brand of the top hit, the price bucket the top hit is in (its facet value), an attribute
value of the top hit, and brand and attribute together.

Timings exclude query encoding (each query is encoded once before timing and the same vector serves every
variant), so the differences between variants are the cost of filtering and faceting; variants run
interleaved, query by query, and each pair with and without facets in alternating order (the second run
of the same query is slower in the lexical leg; a fixed order would charge that to one of the two). `facets@D` compares the same search with and without facets at depth `D`
per leg, where the relevant set holds about 1,000 products. Policy: static fusion (`search.policy =
"none"`), so every query searches.

    python benchmarks/bench_filters.py --work /work/scratch/13/bench            # both catalogs, tantivy
    python benchmarks/bench_filters.py --catalogs icecat --engines tantivy,elasticsearch
    python benchmarks/bench_filters.py --engines elasticsearch --attribute-fields 0   # the all-nested layout

Results are printed and saved as JSON under benchmarks/results/filters.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
FACETS = {"icecat": "brand,category,price,product_colour,weight", "homedepot": "brand,title_number"}
ATTRIBUTE = {"icecat": "product_colour", "homedepot": "title_number"}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


# -- catalogs -------------------------------------------------------------------------------------------
def prepare_icecat(source: Path, target: Path) -> Path:
    """Icecat as the demo maps it: price in currency units, category from `product_type`."""
    if target.is_file():
        return target
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        for line in lines:
            record = json.loads(line)
            attributes = dict(record.get("attributes") or {})
            cents = attributes.pop("price", None)
            record["price"] = None if cents is None else round(float(cents) / 100.0, 2)
            if attributes.get("product_type") and not record.get("category_path"):
                record["category_path"] = [str(attributes["product_type"])]
            record["attributes"] = attributes
            record.pop("source", None)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target


def prepare_homedepot(source: Path, target: Path) -> Path:
    """Home Depot with `brand` = the title's first word and `title_number` = its first number."""
    if target.is_file():
        return target
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        for line in lines:
            record = json.loads(line)
            title = record["title"]
            record["brand"] = title.split()[0] if title.split() else None
            number = _NUMBER.search(title)
            record["attributes"] = {"title_number": number.group(0)} if number else {}
            record.pop("source", None)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target


def queries_for(name: str, catalog: Path, n: int, seed: int = 13) -> list[str]:
    if name == "homedepot":
        texts = [json.loads(line)["text"] for line in (DATA / "homedepot" / "queries.jsonl").open(encoding="utf-8")]
        return list(dict.fromkeys(texts))[:n]
    titles = [json.loads(line)["title"] for line in catalog.open(encoding="utf-8")]
    sample = random.Random(seed).sample(titles, min(len(titles), n * 2))
    return list(dict.fromkeys(" ".join(t.split()[:3]) for t in sample))[:n]


def ensure_index(catalog: Path, index_dir: Path, settings: Any) -> None:
    """Index `catalog` unless `index_dir` already holds exactly it (by the catalog's SHA-256)."""
    from indexer.manifest import IndexDirectory
    from indexer.pipeline import run_index
    from shopfusion.artifacts import file_sha256

    current = IndexDirectory(index_dir).current()
    if current is not None and current.catalogs and current.catalogs[-1]["sha256"] == file_sha256(catalog) \
            and current.lexical["engine"] == settings.index.lexical:
        return
    print(f"indexing {catalog.name} into {index_dir} ({settings.index.lexical})", file=sys.stderr)
    started = time.perf_counter()
    summary = run_index(catalog, index_dir, settings=settings, replace=True, progress=sys.stderr.isatty())
    print(f"  {summary.total} products, embedded {summary.embedded}, reused {summary.reused_vectors},"
          f" {time.perf_counter() - started:.0f}s", file=sys.stderr)


# -- measuring ------------------------------------------------------------------------------------------
class CachedEncoder:
    """The searcher's encoder with query vectors computed once, so timings leave encoding out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, Any] = {}

    def encode_query(self, text: str) -> Any:
        if text not in self.cache:
            self.cache[text] = self.inner.encode_query(text)
        return self.cache[text]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "mean_ms": round(statistics.fmean(ordered), 2)}


def shopper_filters(name: str, top: Any, facets: Any) -> dict[str, Any]:
    """The filters a shopper would click after the unfiltered results: top hit's brand, price bucket,
    attribute value, and brand with attribute."""
    from shopfusion.types import AttributeFilter, Filters, attribute_values

    product = top.product
    chosen: dict[str, Any] = {}
    if product.brand:
        chosen["brand"] = Filters(brands=(product.brand,))
    if product.price is not None:
        for bucket in facets["price"].buckets if "price" in FACETS[name] else ():
            if (bucket.low is None or product.price >= bucket.low) and (bucket.high is None or product.price < bucket.high):
                chosen["price"] = Filters(price_min=bucket.low, price_below=bucket.high)
    value = attribute_values(product).get(ATTRIBUTE[name])
    if value is not None:
        if name == "homedepot":  # numeric: the decade the top hit's number is in
            number = float(value)
            attribute = AttributeFilter(ATTRIBUTE[name], min=number // 10 * 10, below=number // 10 * 10 + 10)
        else:
            attribute = AttributeFilter(ATTRIBUTE[name], (value,))
        chosen["attribute"] = Filters(attributes=(attribute,))
        if product.brand:
            chosen["brand+attribute"] = Filters(brands=(product.brand,), attributes=(attribute,))
    return chosen


def run_catalog(name: str, index_dir: Path, settings: Any, queries: list[str], k: int, facet_depth: int,
                engine: str) -> dict[str, Any]:
    import ranker.view
    from ranker.searcher import HybridSearcher, SearchOptions
    from ranker.view import ResultView

    searcher = HybridSearcher(index_dir, settings)
    searcher.encoder = CachedEncoder(searcher.encoder)  # type: ignore[assignment]
    facet_calls: list[float] = []
    count_facets = ranker.view.count_facets

    def timed_facets(*args: Any, **kwargs: Any) -> Any:  # the whole facet step: engine call and assembly
        started = time.perf_counter()
        try:
            return count_facets(*args, **kwargs)
        finally:
            facet_calls.append((time.perf_counter() - started) * 1000)

    ranker.view.count_facets = timed_facets  # type: ignore[assignment]
    faceted = ResultView(facets=FACETS[name])
    deeper = SearchOptions(depth=facet_depth)
    times: dict[str, list[float]] = {}
    sizes: list[int] = []
    guarantee = {"queries": 0, "k_matching": 0, "k_returned": 0, "fewer_matching": 0, "all_returned": 0,
                 "violations": 0}
    facet_store_deep: list[float] = []
    paired: list[float] = []

    def timed(variant: str, run: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        results = run()
        times.setdefault(variant, []).append((time.perf_counter() - started) * 1000)
        return results

    for text in queries:  # warm: encode, load the catalog and columns, fill the OS cache
        searcher.search(text, k=k, view=faceted)
    facet_calls.clear()
    for number, text in enumerate(queries):
        # each pair with and without facets runs in alternating order (odd queries: with facets first):
        # running the same query twice in a row, the second run was 0.5-0.9 ms slower in the lexical
        # leg, which a fixed order charges to one variant (README, issue 13)
        flip = number % 2 == 1
        if flip:
            with_facets = timed("faceted", lambda text=text: searcher.search(text, k=k, view=faceted))
        base = timed("unfiltered", lambda text=text: searcher.search(text, k=k))
        if not flip:
            with_facets = timed("faceted", lambda text=text: searcher.search(text, k=k, view=faceted))
        if not base.hits or base.hits[0].product is None:
            continue
        filters = shopper_filters(name, base.hits[0], with_facets.facets)
        variants = list(filters.items())
        random.Random(number).shuffle(variants)
        for label, chosen in variants:
            results = timed(f"filtered:{label}", lambda text=text, chosen=chosen: searcher.search(
                text, k=k, filters=chosen))
            matching = int(searcher.vectors.mask(chosen).sum())
            guarantee["queries"] += 1
            if matching >= k:
                guarantee["k_matching"] += 1
                guarantee["k_returned"] += len(results.hits) == k
            else:
                guarantee["fewer_matching"] += 1
                guarantee["all_returned"] += len(results.hits) == matching
            guarantee["violations"] += sum(1 for h in results.hits if h.product is None or not chosen.matches(h.product))
        if "brand" in filters:
            brand = filters["brand"]
            timed("filtered:brand+faceted", lambda text=text, brand=brand: searcher.search(
                text, k=k, filters=brand, view=faceted))
        calls = len(facet_calls)
        if flip:
            deep = timed(f"depth {facet_depth} + facets", lambda text=text: searcher.search(
                text, k=k, options=deeper, view=faceted))
        deep_plain = timed(f"depth {facet_depth}", lambda text=text: searcher.search(text, k=k, options=deeper))
        if not flip:
            deep = timed(f"depth {facet_depth} + facets", lambda text=text: searcher.search(
                text, k=k, options=deeper, view=faceted))
        facet_store_deep += facet_calls[calls:]
        assert deep_plain.page is not None and deep.facets is not None
        sizes.append(deep.facets.over)
        paired.append(times[f"depth {facet_depth} + facets"][-1] - times[f"depth {facet_depth}"][-1])
    searcher.close()
    ranker.view.count_facets = count_facets  # type: ignore[assignment]
    latency = {variant: summary(values) for variant, values in times.items()}
    return {
        "catalog": name, "engine": engine, "products": searcher.manifest.counts["products"], "queries": len(queries),
        "k": k, "depth": settings.search.depth, "facets": FACETS[name], "latency": latency,
        "vector_threads": settings.search.vector_threads,
        "facets_at_depth": {"depth": facet_depth, "relevant_set_median": statistics.median(sizes),
                            "relevant_set_mean": round(statistics.fmean(sizes), 1),
                            "p50_difference_ms": round(latency[f"depth {facet_depth} + facets"]["p50_ms"]
                                                       - latency[f"depth {facet_depth}"]["p50_ms"], 2),
                            "paired_added_median_ms": round(statistics.median(paired), 2),
                            "facet_step": summary(facet_store_deep)},
        "k_guarantee": guarantee,
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['catalog']} ({report['products']} products, {report['engine']}, vector_threads"
          f" {report['vector_threads']}), {report['queries']} queries,"
          f" k {report['k']}, depth {report['depth']} per leg; query encoding excluded")
    print(f"  {'variant':<28} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for variant, row in report["latency"].items():
        print(f"  {variant:<28} {row['n']:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['mean_ms']:>8.2f}")
    deep = report["facets_at_depth"]
    print(f"  facets at depth {deep['depth']}: relevant set median {deep['relevant_set_median']:.0f} products;"
          f" p50 with facets minus p50 without {deep['p50_difference_ms']:.2f} ms; per query, facets add"
          f" {deep['paired_added_median_ms']:.2f} ms (median); the facet step alone p50"
          f" {deep['facet_step']['p50_ms']:.2f} ms, p99 {deep['facet_step']['p99_ms']:.2f} ms")
    g = report["k_guarantee"]
    print(f"  filtered hybrid queries: {g['queries']}; with >= k matching: {g['k_returned']}/{g['k_matching']} returned"
          f" k; with fewer: {g['all_returned']}/{g['fewer_matching']} returned all; hits violating the filter:"
          f" {g['violations']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-filters",
                        help="where prepared catalogs and indexes go (outside the repository is best)")
    parser.add_argument("--catalogs", default="icecat,homedepot")
    parser.add_argument("--engines", default="tantivy", help="tantivy, elasticsearch or both (comma-separated)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--facet-depth", type=int, default=700,
                        help="depth per leg for the facets@depth comparison (about 1,000 products in the set)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default", help="encoder (hash:64 for a quick smoke run)")
    parser.add_argument("--es-url", default=os.environ.get("SHOPFUSION_TEST_ES_URL", "http://127.0.0.1:9200"),
                        help="Elasticsearch node for --engines elasticsearch (default: $SHOPFUSION_TEST_ES_URL)")
    parser.add_argument("--attribute-fields", type=int, default=None,
                        help="Elasticsearch: elasticsearch.attribute_fields for the index (default: the shipped"
                             " 1000; 0: every attribute nested, the layout before; its own index directory)")
    parser.add_argument("--vector-threads", type=int, default=None,
                        help="search.vector_threads (default: the shipped 1; 0: FAISS's own, one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS / "filters.json")
    args = parser.parse_args()

    from shopfusion.config import Settings

    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in args.catalogs.split(","):
        source = DATA / name / "products.jsonl"
        prepare = prepare_icecat if name == "icecat" else prepare_homedepot
        catalog = prepare(source, args.work / f"{name}.jsonl")
        queries = queries_for(name, catalog, args.queries)
        for engine in args.engines.split(","):
            settings = (Settings().replace("index", device=args.device, lexical=engine, model=args.model)
                        .replace("search", policy="none")
                        .replace("elasticsearch", hosts=(args.es_url,), analyzer="standard"))
            if args.vector_threads is not None:
                settings = settings.replace("search", vector_threads=args.vector_threads)
            suffix = "" if args.model == "default" else "-" + re.sub(r"[^a-z0-9]+", "", args.model)
            layout = ""
            if engine == "elasticsearch" and args.attribute_fields is not None:
                settings = settings.replace("elasticsearch", attribute_fields=args.attribute_fields)
                layout = f"-fields{args.attribute_fields}"
            index_dir = args.work / f"{name}-{engine}{layout}{suffix}"
            tantivy_dir = args.work / f"{name}-tantivy{suffix}"
            if engine != "tantivy" and not index_dir.exists() and tantivy_dir.exists():
                shutil.copytree(tantivy_dir, index_dir)  # re-indexing the copy reuses its vectors
            ensure_index(catalog, index_dir, settings)
            report = run_catalog(name, index_dir, settings, queries, args.k, args.facet_depth, engine + layout)
            print_report(report)
            reports.append(report)
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"runs": []}
    keep = [r for r in previous.get("runs", []) if (r["catalog"], r["engine"]) not in
            {(r2["catalog"], r2["engine"]) for r2 in reports}]
    args.out.write_text(json.dumps({"environment": environment, "runs": keep + reports}, indent=2) + "\n",
                        encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
