"""How indexing time, memory, disk and query latency grow with the catalog: 10k, 100k and 1M products.

Catalogs: `benchmarks/scale_catalog.py` (the real catalogs in ../shared/data combined; grown to 1M with
colour / size / pack-count variants of real products). Everything large lives under `--workdir`
(outside the repository). Each measurement runs in a fresh child process, so its peak RSS is its own.

    W=/work/scratch/12/scale
    python benchmarks/bench_scale.py catalogs --workdir $W                      # scale-{10k,100k,1m}.jsonl
    python benchmarks/bench_scale.py embed --workdir $W --size 1m --max-texts 100000   # repeat: resumable
    python benchmarks/bench_scale.py surrogate-vectors --workdir $W --size 1m        # see below
    python benchmarks/bench_scale.py index --workdir $W --size 100k --vectors       # precomputed vectors
    python benchmarks/bench_scale.py index --workdir $W --size 100k                 # the ONNX int8 encoder
    python benchmarks/bench_scale.py ann --workdir $W --size 1m                     # flat / HNSW / IVF builds
    python benchmarks/bench_scale.py query --workdir $W --size 1m                   # latency, recall@10
    python benchmarks/bench_scale.py probes --workdir $W --size 1m --split train    # what the tuning measures on
    python benchmarks/bench_scale.py plot

- `embed`: `indexer.precompute.embed_catalog` (ONNX int8) into `$W/vectors` (one file for every size:
  the smaller catalogs are samples of the real products the 1M one holds), a chunk at a time; each chunk's
  numbers are appended to `$W/embed-log.jsonl`. `--executor celery` uses Celery workers.
- `surrogate-vectors`: the 1M catalog's variants get their product's real vector plus calibrated noise
  instead of an encoder run each (the encoder's 1M cost is its measured rate times the texts); real
  products keep real vectors. For the non-encoder costs and vector index behaviour only.
- `index`: `run_index` with the shipped defaults and `index.backend = onnx-int8`; `--vectors` takes the
  precomputed vectors (the encoder is then out of the measurement), without it the encoder runs in-process.
  Reported: wall time per phase (`IndexSummary.phases`), peak RSS overall (`ru_maxrss`) and per phase
  (sampled every 50 ms, phases from the pipeline's DEBUG log), products/s with and without the embed
  phase, and the size on disk of each part of the version. `--lexical elasticsearch --executor celery`
  runs the scale-out path. `--code DIR` runs another checkout of shopfusion (the before/after comparison;
  it gets the precomputed vectors through an executor, as it has no `vectors=`).
- `ann`: builds each vector index kind from the version's `vectors.npy` (what `VectorIndexBuilder.commit`
  does), timed, with its peak RSS, into `$W/index-<size>/ann/<kind>`.
- `query`: p50/p99 of query encoding, the lexical leg, the dense leg per kind, and hybrid search as the
  shipped defaults run it (per kind), over real Home Depot queries; recall@10 of HNSW and IVF against
  exact search (computed in one batch), with an efSearch / nprobe sweep. `--split test` takes the test part
  of the fixed Home Depot split (benchmarks/splits.py); `live` is the version's own index at the width its
  build recorded (the shipped defaults); `hnsw@128` a fixed width.
- `probes`: recall@10 by width on real queries (fit/validation) and on the stand-ins the build-time width
  tuning could use (title prefixes, the catalog's own vectors): how `PSEUDO_QUERY_WORDS` was chosen.
Results merge into benchmarks/results/scale.json; `plot` draws benchmarks/results/scale.png.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
KINDS = ("flat", "hnsw", "ivf")
WORKDIR = click.option("--workdir", type=click.Path(file_okay=False), required=True,
                       help="Where catalogs, vectors and indexes go (outside the repository).")
SIZE = click.option("--size", type=click.Choice(list(SIZES)), required=True)


# -- measuring ------------------------------------------------------------------------------------------
class RssSampler:
    """Samples this process's resident set every `interval` seconds in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with open("/proc/self/statm") as handle:
            while not self._stop.is_set():
                handle.seek(0)
                self.samples.append((time.perf_counter(), int(handle.read().split()[1]) * self._page))
                self._stop.wait(self.interval)

    def peak_between(self, start: float, end: float) -> float:
        """Largest sample in [start, end]; for a window shorter than the interval, the sample just
        before it ended (what the process held then)."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        if not inside:
            inside = [rss for t, rss in self.samples if t <= end][-1:]
        return round(max(inside) / 2**20, 1) if inside else 0.0


class PhaseLog(logging.Handler):
    """Collects the pipeline's `phase <name>: start|end` DEBUG records with their times."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("phase "):
            name, _, what = message[6:].partition(": ")
            self.events.append((time.perf_counter(), name, what))


def phase_windows(events: list[tuple[float, str, str]], started: float, ended: float) -> dict[str, tuple[float, float]]:
    """Contiguous windows for the memory table: each logged phase, and `build` for the chunk loop between
    the product store fill and the final commits (where lexical and vector writes interleave)."""
    windows: dict[str, tuple[float, float]] = {}
    open_at: dict[str, float] = {}
    last_end = started
    for t, name, what in events:
        if what == "start":
            if t - last_end > 0.05 and name in ("store", "lexical") and "build" not in windows:
                windows["build"] = (last_end, t)
            open_at[name] = t
        elif name in open_at:
            key = name if name not in windows else f"{name} (final)"
            windows[key] = (open_at.pop(name), t)
            last_end = t
    windows["whole run"] = (started, ended)
    return windows


def disk_sizes(version_dir: Path) -> dict[str, float]:
    def size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    parts = {p.name: round(size(p) / 2**20, 1) for p in sorted(version_dir.iterdir())}
    parts["total"] = round(size(version_dir) / 2**20, 1)
    return parts


def percentiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def merge_result(key: str, value: dict[str, Any], out: Path = RESULTS) -> None:
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, sort_keys=True))


def environment() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def settings_for(lexical: str, executor: str, vector_index: str = "auto") -> Any:
    from shopfusion.config import load_settings

    settings = load_settings()
    return settings.replace("index", backend="onnx-int8", device="cpu", lexical=lexical, executor=executor,
                            vector_index=vector_index)


def paths(workdir: str, size: str) -> dict[str, Path]:
    root = Path(workdir)
    return {"catalog": root / "catalogs" / f"scale-{size}.jsonl", "vectors": root / "vectors",
            "index": root / f"index-{size}", "log": root / "embed-log.jsonl"}


def child(args: list[str]) -> dict[str, Any]:
    """Run `bench_scale.py <args>` in a fresh process; it prints one JSON document last."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise click.ClickException(f"child {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@click.group()
def cli() -> None:
    """Scale benchmark: indexing and query costs at 10k, 100k and 1M products."""


# -- catalogs and vectors ---------------------------------------------------------------------------------
@cli.command()
@WORKDIR
def catalogs(workdir: str) -> None:
    """Write the 10k, 100k and 1M catalogs (see benchmarks/scale_catalog.py)."""
    from benchmarks.scale_catalog import grow, read_real, sample

    real = read_real()
    for size, count in SIZES.items():
        out = paths(workdir, size)["catalog"]
        out.parent.mkdir(parents=True, exist_ok=True)
        records = sample(real, count) if count <= len(real) else grow(real, count)
        with open(str(out) + ".tmp", "w", encoding="utf-8") as handle:
            n = 0
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        Path(str(out) + ".tmp").replace(out)
        click.echo(f"{out}: {n} products, {out.stat().st_size / 2**20:.0f} MiB", err=True)


@cli.command()
@WORKDIR
@SIZE
@click.option("--max-texts", type=int, default=100_000, show_default=True, help="Texts this chunk.")
@click.option("--executor", type=click.Choice(["local", "celery"]), default="local", show_default=True)
@click.option("--out", "out_dir", default=None, help="Another vector file (default: the shared one, $W/vectors).")
def embed(workdir: str, size: str, max_texts: int, executor: str, out_dir: str | None) -> None:
    """Embed one chunk of the catalog's texts into the shared vector file (ONNX int8); resumable."""
    from indexer.precompute import embed_catalog

    p = paths(workdir, size)
    summary = embed_catalog(p["catalog"], out_dir or p["vectors"], settings=settings_for("tantivy", executor),
                            max_texts=max_texts, progress=sys.stderr.isatty())
    line = {"size": size, "executor": executor, **summary.to_dict(), **environment()}
    if out_dir:
        merge_result(f"embed/{size}/{executor}/{summary.embedded}", line)
    with p["log"].open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    click.echo(json.dumps(line))


@cli.command("seed-vectors")
@WORKDIR
@SIZE
def seed_vectors(workdir: str, size: str) -> None:
    """Copy the vectors of `index-<size>` (built with the encoder) into the shared vector file, so the
    texts it embedded are not embedded again by `embed` (the identity must match)."""
    from indexer.stores.faiss_builder import text_hash_rows
    from indexer.vectorfile import VectorFile

    p = paths(workdir, size)
    manifest = json.loads((p["index"] / "manifest.json").read_text())
    identity = f"{manifest['model_id']} {manifest['backend_id']}"
    target = VectorFile(p["vectors"], identity=identity, dim=int(manifest["dim"]), create=True)
    source = _version_dir(p["index"]) / "vectors"
    keys = text_hash_rows(source)
    vectors = np.load(source / "vectors.npy", mmap_mode="r")
    fresh = np.flatnonzero(target.find(keys) < 0)
    _, first = np.unique(keys[fresh], return_index=True)
    rows = np.sort(fresh[first])
    for start in range(0, len(rows), 50_000):
        chunk = rows[start:start + 50_000]
        target.append([k.decode() for k in keys[chunk]], np.asarray(vectors[chunk]))
    click.echo(json.dumps({"copied": int(len(rows)), "vector_file_rows": target.count(), "identity": identity}))


@cli.command("surrogate-vectors")
@WORKDIR
@SIZE
@click.option("--calibration", type=int, default=2000, show_default=True, help="Variants embedded for real.")
def surrogate_vectors(workdir: str, size: str, calibration: int) -> None:
    """Complete the vector file for a grown catalog without embedding every variant (1M texts take about
    1.5 hours of ONNX int8 on 2 cores): real products get their real vectors (embedded here when the file
    lacks them), each variant `<id>~v<n>` gets its product's vector perturbed by isotropic noise scaled so
    that the mean cosine to the product matches what `--calibration` variants embedded for real measure.
    Only the non-encoder costs and the vector index behaviour at 1M are measured on them, never quality."""
    from indexer.pipeline import vector_identity
    from indexer.readers import read_catalog
    from indexer.validation import validate
    from indexer.vectorfile import VectorFile
    from shopfusion.encoders import load_encoder
    from shopfusion.types import Product

    p = paths(workdir, size)
    encoder = load_encoder("default", "cpu", "onnx-int8")
    target = VectorFile(p["vectors"], identity=vector_identity(encoder), dim=encoder.dim, create=True)
    started = time.perf_counter()
    keys: list[str] = []
    bases: list[str] = []
    real_key: dict[str, str] = {}
    real_text: dict[str, str] = {}
    probe: list[tuple[str, str]] = []  # (base id, variant text) embedded for the calibration
    seen: set[str] = set()
    for record in read_catalog(p["catalog"]):
        product = validate(record)
        if not isinstance(product, Product):
            continue
        key = product.text_hash()
        base, _, variant = product.id.partition("~v")
        if not variant:
            real_key[base] = key
            real_text[key] = product.embedding_text()
        elif len(probe) < calibration and int(key[:8], 16) % 400 == 0:
            probe.append((base, product.embedding_text()))
        if key in seen:
            continue
        seen.add(key)
        keys.append(key)
        bases.append(base if variant else "")
    missing_real = [k for k, row in zip(real_text, target.find(list(real_text)), strict=True) if row < 0]
    for start in range(0, len(missing_real), 2000):
        chunk = missing_real[start:start + 2000]
        target.append(chunk, encoder.encode([real_text[k] for k in chunk]))
    real_text.clear()
    base_vectors = target.read(target.find([real_key[b] for b, _ in probe]))
    probe_vectors = encoder.encode([t for _, t in probe])
    cosine = float(np.mean(np.sum(base_vectors * probe_vectors, axis=1)))
    sigma = float(np.sqrt((1.0 / cosine**2 - 1.0) / encoder.dim))
    rng = np.random.default_rng(0)
    rows = target.find(keys)
    todo = [i for i in np.flatnonzero(rows < 0) if bases[i] in real_key]  # a rejected product: none
    for start in range(0, len(todo), 50_000):
        chunk = todo[start:start + 50_000]
        vectors = target.read(target.find([real_key[bases[i]] for i in chunk]))
        vectors = vectors + rng.normal(0.0, sigma, vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        target.append([keys[i] for i in chunk], vectors)
    check = target.read(target.find([keys[i] for i in todo[:2000]]))
    bases_check = target.read(target.find([real_key[bases[i]] for i in todo[:2000]]))
    result = {"texts": len(keys), "without_vector": int(np.sum(target.find(keys) < 0)), "embedded_real": len(missing_real), "surrogate": len(todo),
              "calibration_variants": len(probe), "variant_cosine_to_product_measured": round(cosine, 4),
              "surrogate_cosine_to_product": round(float(np.mean(np.sum(check * bases_check, axis=1))), 4),
              "noise_sigma": round(sigma, 5), "seconds": round(time.perf_counter() - started, 1),
              "vector_file_rows": target.count(), **environment()}
    merge_result(f"surrogate/{size}", result)
    click.echo(json.dumps(result))


# -- indexing ---------------------------------------------------------------------------------------------
@cli.command()
@WORKDIR
@SIZE
@click.option("--vectors/--encoder", "use_vectors", default=True, show_default=True,
              help="Take the precomputed vectors, or run the ONNX int8 encoder in-process.")
@click.option("--lexical", type=click.Choice(["tantivy", "elasticsearch"]), default="tantivy", show_default=True)
@click.option("--executor", type=click.Choice(["local", "celery"]), default="local", show_default=True)
@click.option("--code", type=click.Path(file_okay=False), help="Another shopfusion checkout to run instead.")
@click.option("--label", default=None, help="Result key (default: from the options).")
@click.option("--keep/--no-keep", default=True, show_default=True, help="Keep the index (query and ann use it).")
@click.option("--vector-index", type=click.Choice(["auto", "flat", "hnsw", "ivf"]), default="auto", show_default=True)
def index(workdir: str, size: str, use_vectors: bool, lexical: str, executor: str, code: str | None,
          label: str | None, keep: bool, vector_index: str) -> None:
    """Index one catalog from scratch in a child process; record phases, memory and disk."""
    p = paths(workdir, size)
    label = label or "-".join(filter(None, ["vectors" if use_vectors else "encoder", lexical, executor,
                                            "before" if code else None]))
    target = p["index"] if keep and not code else Path(workdir) / f"index-{size}-{label}"
    if target.exists():
        shutil.rmtree(target)
    args = ["_index", "--catalog", str(p["catalog"]), "--index", str(target), "--lexical", lexical,
            "--executor", executor, "--vector-index", vector_index]
    if use_vectors:
        args += ["--vectors", str(p["vectors"])]
    if code:
        args += ["--code", str(Path(code).resolve())]
    result = child(args)
    result.update({"size": SIZES[size], "label": label, "environment": environment()})
    merge_result(f"index/{size}/{label}", result)
    click.echo(json.dumps(result, indent=2))
    if not keep:
        shutil.rmtree(target, ignore_errors=True)


@cli.command("_index", hidden=True)
@click.option("--catalog", required=True)
@click.option("--index", "index_dir", required=True)
@click.option("--vectors", default=None)
@click.option("--lexical", default="tantivy")
@click.option("--executor", default="local")
@click.option("--code", default=None, help="Another checkout to import shopfusion from (it predates `vectors=`).")
@click.option("--vector-index", default="auto")
def index_child(catalog: str, index_dir: str, vectors: str | None, lexical: str, executor: str,
                code: str | None, vector_index: str) -> None:
    before = code is not None
    if code is not None:
        sys.path.insert(0, code)
    import indexer.pipeline as pipeline

    if code is not None and not pipeline.__file__.startswith(code):
        raise click.ClickException(f"imported {pipeline.__file__}, not the checkout in {code}")

    handler = PhaseLog()
    logging.getLogger("indexer.pipeline").addHandler(handler)
    logging.getLogger("indexer.pipeline").setLevel(logging.DEBUG)
    settings = settings_for(lexical, executor, vector_index) if not before else _before_settings(lexical)
    kwargs: dict[str, Any] = {"settings": settings}
    if vectors and before:
        kwargs["executor"] = VectorFileExecutor(Path(vectors))
    elif vectors:
        kwargs["vectors"] = vectors
    with RssSampler() as sampler:
        started = time.perf_counter()
        summary = pipeline.run_index(catalog, index_dir, **kwargs)
        ended = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = ended - started
    phases = dict(getattr(summary, "phases", {}) or {})
    embed_seconds = phases.get("embed", 0.0)
    windows = phase_windows(handler.events, started, ended)
    version_dir = Path(index_dir) / "versions" / summary.version
    result = {
        "products": summary.total, "seconds": round(seconds, 2), "phases": phases,
        "products_per_second": round(summary.total / seconds, 1),
        "products_per_second_without_embed": round(summary.total / max(seconds - embed_seconds, 1e-9), 1),
        "embedded": summary.embedded, "peak_rss_mb": round(peak, 1),
        "peak_rss_mb_by_phase": {name: sampler.peak_between(a, b) for name, (a, b) in windows.items()},
        "disk_mb": disk_sizes(version_dir), "backend": getattr(summary, "backend", "torch"),
        "vector_kind": json.loads((Path(index_dir) / "manifest.json").read_text())["vector"]["kind"],
        "vector_search": getattr(summary, "vector_index", None),
    }
    print(json.dumps(result))


def _before_settings(lexical: str) -> Any:
    from shopfusion.config import load_settings

    return load_settings().replace("index", device="cpu", lexical=lexical)


class VectorFileExecutor:
    """Serves vectors from a vector file through the executor interface, for code that has no `vectors=`
    (the before/after comparison). Reads the files directly, so it runs against any checkout."""

    name = "vector-file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dim = int(json.loads((path / "identity.json").read_text())["dim"])
        keys = np.fromfile(path / "keys.bin", dtype="S32")
        self.order = np.argsort(keys)
        self.keys = keys[self.order]

    def map(self, model: str, batches: Any, **_: Any) -> Any:
        from workers.executor import EmbedResult

        width = 4 * self.dim
        with open(self.path / "vectors.bin", "rb") as handle:
            for batch in batches:
                wanted = np.array([k.encode() for k in batch.keys], dtype="S32")
                rows = self.order[np.searchsorted(self.keys, wanted)]
                out = np.empty((len(rows), self.dim), dtype=np.float32)
                for i, row in enumerate(rows):
                    out[i] = np.frombuffer(os.pread(handle.fileno(), width, int(row) * width), dtype=np.float32)
                yield EmbedResult(batch.batch_id, batch.keys, out)

    def close(self) -> None:
        pass


# -- vector index kinds -------------------------------------------------------------------------------------
@cli.command()
@WORKDIR
@SIZE
@click.option("--kinds", default=",".join(KINDS), show_default=True,
              help="Kinds to build; `hnsw:efc40` (efConstruction) and `ivf:1024` (lists) are variants.")
def ann(workdir: str, size: str, kinds: str) -> None:
    """Build each vector index kind from the current version's vectors (child process per kind)."""
    p = paths(workdir, size)
    for kind in kinds.split(","):
        result = child(["_ann", "--index", str(p["index"]), "--kind", kind])
        result["environment"] = environment()
        merge_result(f"ann/{size}/{kind}", result)
        click.echo(json.dumps(result))


@cli.command("_ann", hidden=True)
@click.option("--index", "index_dir", required=True)
@click.option("--kind", required=True)
def ann_child(index_dir: str, kind: str) -> None:
    from indexer.stores.faiss_builder import build_approximate
    from shopfusion.config import IndexSettings

    source = _version_dir(Path(index_dir)) / "vectors"
    target = Path(index_dir) / "ann" / kind.replace(":", "-")
    kind, _, variant = kind.partition(":")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("vectors.npy", "ids.json", "text_hashes.bin"):
        (target / name).symlink_to(source / name)
    meta = json.loads((source / "meta.json").read_text())
    meta["kind"] = kind
    (target / "meta.json").write_text(json.dumps(meta))
    count = int(meta["count"])
    started = time.perf_counter()
    if kind != "flat":
        import faiss

        ef_construction = int(variant[3:]) if variant.startswith("efc") else 80
        nlist = int(variant) if kind == "ivf" and variant else None
        index = build_approximate(target / "vectors.npy", kind, hnsw_m=IndexSettings().hnsw_m,  # type: ignore[arg-type]
                                  ef_construction=ef_construction, nlist=nlist)
        faiss.write_index(index, str(target / f"{kind}.faiss"))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_mb = (target / f"{kind}.faiss").stat().st_size / 2**20 if kind != "flat" else 0.0
    print(json.dumps({"kind": kind, "variant": variant, "count": count, "build_seconds": round(seconds, 2),
                      "peak_rss_mb": round(peak, 1), "index_file_mb": round(size_mb, 1)}))


def _version_dir(index_dir: Path) -> Path:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    return index_dir / "versions" / manifest["version"]


# -- queries ------------------------------------------------------------------------------------------------
SPLITS = ("all", "fit", "validation", "train", "test")


@cli.command()
@WORKDIR
@SIZE
@click.option("--queries", "n_queries", type=int, default=500, show_default=True,
              help="Queries drawn (seeded) from the split; 0: every query of it.")
@click.option("--kinds", default=",".join(KINDS), show_default=True,
              help="`live` (the version's own index at its recorded width: the shipped defaults), a kind"
                   " built by `ann` (`hnsw`, `ivf:2000`), `@W` for a fixed width (`hnsw@128`).")
@click.option("--split", type=click.Choice(SPLITS), default="all", show_default=True,
              help="Home Depot queries of one part of the fixed split (benchmarks/splits.py).")
@click.option("--sweep/--no-sweep", default=True, show_default=True, help="Recall and p50 at other widths.")
@click.option("--label", default=None, help="Result key suffix (default: the split).")
def query(workdir: str, size: str, n_queries: int, kinds: str, split: str, sweep: bool, label: str | None) -> None:
    """Latency per leg and hybrid (shipped defaults), per vector index kind; recall@10 against exact."""
    args = ["_query", "--index", str(paths(workdir, size)["index"]), "--queries", str(n_queries),
            "--kinds", kinds, "--split", split]
    result = child(args + ([] if sweep else ["--no-sweep"]))
    result["environment"] = environment()
    key = f"query/{size}" if split == "all" and label is None else f"query/{size}/{label or split}"
    merge_result(key, result)
    click.echo(json.dumps(result, indent=2))


def split_queries(split: str, n_queries: int) -> list[str]:
    """Home Depot query texts of one part of the fixed split, a seeded sample of `n_queries` (0: all)."""
    from benchmarks.splits import part
    from shopfusion.evaluation import load_queries

    queries = load_queries(DATA / "homedepot" / "queries.jsonl")
    wanted = {"train": ("fit", "validation")}.get(split, (split,))
    texts = [text for qid, text in queries.items() if split == "all" or part(qid) in wanted]
    if n_queries and n_queries < len(texts):
        rng = np.random.default_rng(0)
        texts = [texts[i] for i in rng.choice(len(texts), size=n_queries, replace=False)]
    return texts


@cli.command("_query", hidden=True)
@click.option("--index", "index_dir", required=True)
@click.option("--queries", "n_queries", type=int, default=500)
@click.option("--kinds", default=",".join(KINDS))
@click.option("--split", default="all")
@click.option("--sweep/--no-sweep", default=True)
def query_child(index_dir: str, n_queries: int, kinds: str, split: str, sweep: bool) -> None:
    from indexer.stores.ann_tuning import exact_neighbours, file_chunks
    from indexer.stores.faiss_store import FaissVectorIndex
    from ranker.searcher import HybridSearcher
    from shopfusion.config import load_settings

    def rss_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    sample = split_queries(split, n_queries)
    before = rss_mb()
    settings = load_settings()  # the shipped defaults; the backend follows the index (auto)
    searcher = HybridSearcher(index_dir, settings)
    for text in sample[:20]:
        searcher.search(text)
    loaded = rss_mb()
    out: dict[str, Any] = {"queries": len(sample), "split": split, "products": searcher.manifest.counts["products"],
                           "index_kind": searcher.manifest.vector["kind"], "backend": searcher.encoder.backend,
                           "live_width": searcher.width.to_dict(),
                           "searcher_rss_mb": round(loaded - before, 1), "legs": {}, "hybrid": {}, "recall@10": {}}
    vectors = []
    times: list[float] = []
    for text in sample:
        started = time.perf_counter()
        vectors.append(searcher.encoder.encode_query(text))
        times.append((time.perf_counter() - started) * 1000)
    out["legs"]["encode"] = percentiles(times)
    depth = settings.search.depth
    times = []
    for text in sample:
        started = time.perf_counter()
        searcher.lexical.search(text, depth)
        times.append((time.perf_counter() - started) * 1000)
    out["legs"]["lexical"] = percentiles(times)
    version_vectors = _version_dir(Path(index_dir)) / "vectors"
    started = time.perf_counter()
    _, exact_rows = exact_neighbours(file_chunks(version_vectors / "vectors.npy"), np.stack(vectors), 10)
    ids = searcher.vectors.ordered_ids()
    exact = [[ids[int(r)] for r in row] for row in exact_rows]
    out["exact_batch_seconds"] = round(time.perf_counter() - started, 2)
    own = searcher.vectors
    for spec in kinds.split(","):
        name, _, width_text = spec.partition("@")
        kind = name.partition(":")[0]
        if name == "live":
            index, kind = own, own.kind
        else:
            directory = Path(index_dir) / "ann" / name.replace(":", "-")
            if name == own.kind and not (directory / "meta.json").is_file():
                directory = version_vectors
            if not (directory / "meta.json").is_file():
                continue
            index = FaissVectorIndex(directory, ef_search=settings.index.hnsw_ef_search,
                                     nprobe=settings.index.ivf_nprobe)
        if width_text:
            _set_width(index, kind, int(width_text))
        index.search(vectors[0], depth)
        times, tops = [], []
        for vector in vectors:
            started = time.perf_counter()
            hits = index.search(vector, depth)
            times.append((time.perf_counter() - started) * 1000)
            tops.append([h.product_id for h in hits[:10]])
        out["legs"][f"dense {spec}"] = percentiles(times)
        searcher.vectors = index
        times = []
        for text in sample:
            started = time.perf_counter()
            searcher.search(text)
            times.append((time.perf_counter() - started) * 1000)
        out["hybrid"][spec] = percentiles(times)
        if kind != "flat":
            out["recall@10"][spec] = _recall(exact, tops)
            if sweep:
                out[f"sweep {spec}"] = _sweep(index, vectors, exact, kind)
        searcher.vectors = own
        if index is not own:
            del index
    print(json.dumps(out))


def _set_width(index: Any, kind: str, width: int) -> None:
    if kind == "hnsw":
        index.ef_search = width
        index.index.hnsw.efSearch = width
    elif kind == "ivf":
        index.nprobe = width
        index.index.nprobe = width


def _recall(exact: list[list[str]], approx: list[list[str]]) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(exact, approx, strict=True)])), 4)


def _sweep(index: Any, vectors: list[np.ndarray], exact: list[list[str]], kind: str) -> dict[str, Any]:
    """Recall@10 and dense-leg p50 at other efSearch (HNSW) or nprobe (IVF) values (the index is left at
    the width it had)."""
    out = {}
    values = (32, 64, 128, 256, 512, 1024) if kind == "hnsw" else (8, 16, 32, 64, 96, 128, 192, 256)
    kept = index.ef_search if kind == "hnsw" else index.nprobe
    for value in values:
        _set_width(index, kind, value)
        times, tops = [], []
        for vector in vectors:
            started = time.perf_counter()
            hits = index.search(vector, 200)
            times.append((time.perf_counter() - started) * 1000)
            tops.append([h.product_id for h in hits[:10]])
        out[str(value)] = {"recall@10": _recall(exact, tops), **percentiles(times)}
    _set_width(index, kind, kept)
    return out


# -- what the width tuning measures on ----------------------------------------------------------------------
@cli.command()
@WORKDIR
@SIZE
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True,
              help="Real queries to compare with: choose on fit/validation (`train`), never on test.")
@click.option("--queries", "n_queries", type=int, default=1000, show_default=True)
@click.option("--sample", type=int, default=1000, show_default=True, help="Catalog rows sampled (seeded).")
@click.option("--words", default="2,3,4", show_default=True, help="Title words a pseudo-query keeps.")
@click.option("--kinds", default="ivf,hnsw", show_default=True, help="Index kinds: the version's own or `ann` builds.")
def probes(workdir: str, size: str, split: str, n_queries: int, sample: int, words: str, kinds: str) -> None:
    """Recall@10 against exact by width, on real queries and on what the build-time tuning could measure
    instead (title prefixes of sampled products, the sampled vectors themselves): which stand-in tracks
    real queries?"""
    result = child(["_probes", "--index", str(paths(workdir, size)["index"]), "--catalog",
                    str(paths(workdir, size)["catalog"]), "--split", split, "--queries", str(n_queries),
                    "--sample", str(sample), "--words", words, "--kinds", kinds])
    result["environment"] = environment()
    merge_result(f"probes/{size}/{split}", result)
    click.echo(json.dumps(result, indent=2))


@cli.command("_probes", hidden=True)
@click.option("--index", "index_dir", required=True)
@click.option("--catalog", required=True)
@click.option("--split", default="train")
@click.option("--queries", "n_queries", type=int, default=1000)
@click.option("--sample", type=int, default=1000)
@click.option("--words", default="2,3,4")
@click.option("--kinds", default="ivf,hnsw")
def probes_child(index_dir: str, catalog: str, split: str, n_queries: int, sample: int, words: str,
                 kinds: str) -> None:
    from indexer.stores.ann_tuning import exact_neighbours, file_chunks, recall_at, sample_rows
    from shopfusion.encoders import load_encoder

    manifest = json.loads((Path(index_dir) / "manifest.json").read_text())
    source = _version_dir(Path(index_dir)) / "vectors"
    ids = json.loads((source / "ids.json").read_text())
    rows = sample_rows(len(ids), sample, 0)
    wanted = {ids[int(r)]: i for i, r in enumerate(rows)}
    titles = [""] * len(rows)
    with open(catalog, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("id") in wanted:
                titles[wanted[record["id"]]] = str(record.get("title", ""))
    encoder = load_encoder("default", "cpu", manifest.get("backend", "torch"))
    real = split_queries(split, n_queries)
    sets: dict[str, np.ndarray] = {"real queries": np.stack([encoder.encode_query(t) for t in real])}
    for n in (int(w) for w in words.split(",")):
        sets[f"title {n} words"] = encoder.encode([" ".join(t.split()[:n]) for t in titles])
    matrix = np.load(source / "vectors.npy", mmap_mode="r")
    sets["catalog vectors, self left out"] = np.asarray(matrix[rows], dtype=np.float32)
    del matrix
    started = time.perf_counter()
    names = list(sets)
    exact = {name: exact_neighbours(file_chunks(source / "vectors.npy"), sets[name],
                                    11 if name.startswith("catalog") else 10) for name in names}
    out: dict[str, Any] = {"queries": len(real), "split": split, "sample": len(rows),
                           "exact_seconds": round(time.perf_counter() - started, 1), "recall@10": {}}
    import faiss

    ladders = {"ivf": (8, 16, 32, 64, 96, 128, 192, 256, 512), "hnsw": (128, 256, 512, 1024, 2048)}
    for kind in kinds.split(","):
        path = Path(index_dir) / "ann" / kind / f"{kind}.faiss"
        if not path.is_file():
            path = source / f"{kind}.faiss"
        if not path.is_file():
            continue
        index = faiss.read_index(str(path))
        for width in ladders[kind]:
            if kind == "ivf":
                index.nprobe = width
            else:
                index.hnsw.efSearch = width
            row = {}
            for name in names:
                own = rows if name.startswith("catalog") else None
                row[name] = round(recall_at(exact[name], index.search(sets[name], 201), 10, exclude=own), 4)
            out["recall@10"][f"{kind} {width}"] = row
            print(kind, width, row, file=sys.stderr, flush=True)
        del index
    print(json.dumps(out))


# -- plot ---------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", type=click.Path(dir_okay=False), default=str(RESULTS.with_suffix(".png")), show_default=True)
def plot(out: str) -> None:
    """Indexing time per phase, peak RSS and query latency against catalog size (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(RESULTS.read_text())
    sizes = [s for s in SIZES if f"index/{s}/vectors-tantivy-local" in data]
    xs = [SIZES[s] for s in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    runs = [data[f"index/{s}/vectors-tantivy-local"] for s in sizes]
    for phase in ("read", "plan", "store", "lexical", "vectors", "publish"):
        axes[0].plot(xs, [r["phases"].get(phase, 0.0) for r in runs], marker="o", label=phase)
    axes[0].plot(xs, [r["seconds"] for r in runs], marker="o", color="black", label="whole run (precomputed vectors)")
    encoder_runs = [(SIZES[s], data[f"index/{s}/encoder-tantivy-local"]) for s in SIZES
                    if f"index/{s}/encoder-tantivy-local" in data]
    if encoder_runs:
        axes[0].plot([x for x, _ in encoder_runs], [r["seconds"] for _, r in encoder_runs], marker="s",
                     linestyle="--", color="grey", label="whole run with the ONNX int8 encoder")
    earlier = [(SIZES[s], data[f"index/{s}/vectors-tantivy-local-commit-per-1000"]) for s in SIZES
               if f"index/{s}/vectors-tantivy-local-commit-per-1000" in data]
    if earlier:
        axes[0].plot([x for x, _ in earlier], [r["phases"]["read"] for _, r in earlier], marker="x",
                     linestyle="--", color="C0", label="read, staging committed per 1,000 rows (before the fix)")
    axes[0].plot(xs, [x / 5000 for x in xs], linestyle=":", color="red", label="5,000 products/s")
    axes[0].set(xscale="log", yscale="log", xlabel="products", ylabel="seconds", title="indexing time by phase")
    axes[0].legend(fontsize=7)
    axes[1].plot(xs, [r["peak_rss_mb"] / 1024 for r in runs], marker="o", label="indexing, precomputed vectors")
    before = [(SIZES[s], data[f"index/{s}/vectors-tantivy-local-before"]) for s in SIZES
              if f"index/{s}/vectors-tantivy-local-before" in data]
    if before:
        axes[1].plot([x for x, _ in before], [r["peak_rss_mb"] / 1024 for _, r in before], marker="x",
                     linestyle="--", label="indexing, before this change")
    axes[1].axhline(6, color="red", linestyle=":", label="6 GiB goal")
    axes[1].set(xscale="log", xlabel="products", ylabel="GiB", title="peak RSS")
    axes[1].legend(fontsize=7)
    queries = [(SIZES[s], data[f"query/{s}"]) for s in SIZES if f"query/{s}" in data]
    for kind in KINDS:
        points = [(x, q["hybrid"][kind]["p50_ms"]) for x, q in queries if kind in q["hybrid"]]
        if points:
            axes[2].plot([x for x, _ in points], [y for _, y in points], marker="o", label=f"hybrid p50, {kind}")
    points = [(x, q["legs"]["lexical"]["p50_ms"]) for x, q in queries]
    if points:
        axes[2].plot([x for x, _ in points], [y for _, y in points], marker="^", label="lexical leg p50")
    axes[2].axhline(20, color="red", linestyle=":", label="20 ms goal")
    axes[2].set(xscale="log", yscale="log", xlabel="products", ylabel="ms", title="query latency")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    click.echo(f"saved {out}")


if __name__ == "__main__":
    cli()
