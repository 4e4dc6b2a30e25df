"""The search width of an approximate vector index (IVF `nprobe`, HNSW `efSearch`), measured at build time.

Why: how much of exact search an approximate index recovers at a given width depends on the catalog. On
the 1M scale catalog (products and their near-duplicate variants), HNSW at efSearch 128 found 0.74 of the
exact top 10 and IVF at nprobe 16 0.89; on the 100k sample of real products HNSW at 128 found 0.97
(README, "Scale"). No constant is right for every catalog, so each build measures its own: the smallest
width whose recall@10 against exact search reaches `index.ann_target_recall`, up to `index.ann_max_width`.

How (`tune_width`):

- queries: pseudo-queries made from the catalog itself: the first four words of the titles of a seeded
  sample of `index.ann_tune_sample` products (`pseudo_query`), encoded like queries. Real queries are
  short texts far from every product vector (nearest-neighbour cosine about 0.63 for Home Depot queries
  at 1M), and their top 10 spread over many IVF lists and graph regions; a catalog's own vectors are the
  wrong stand-in: each sits among its own near-duplicates, found at any width (recall@10 0.997 at IVF
  nprobe 8 at 1M, self left out, while real queries got 0.80). Four-word title prefixes were measured the
  closest stand-in on the 1M catalog (Home Depot fit and validation queries only; `bench_scale.py
  probes`, README "Scale"): within about 0.01 of real queries at every IVF width from nprobe 32 up, and
  below them (the safe side) for HNSW; two and three words were harder than real queries, the catalog's
  own vectors far easier. Without a query encoder (`queries=None`) the sampled vectors themselves
  are used, each one's own row left out of both lists: optimistic, a last resort;
- the approximate search asks for `depth` results (the candidates the searcher asks each leg for) and
  keeps the first 10: HNSW's beam depends on the number asked for, so the width is measured as searches
  use it;
- a width reaches the target when the 95% lower confidence bound of its mean recall does (`CONFIDENCE_Z`):
  the sample is a sample, and the target is a promise about queries not in it;
- widths: doubling from `START` up to the cap, then bisection between the last width below the target and
  the first one above it, down to steps of an eighth: recall grows with the width (IVF scans a superset of
  lists, HNSW keeps a wider beam), so the first width that reaches the target is the smallest (within an
  eighth). When even the cap misses the target the cap is used and the result says so (`reached`).

The choice is recorded in the version's manifest (`vector.search`) and the searcher uses it, unless
`index.ivf_nprobe` / `index.hnsw_ef_search` is set explicitly (file, environment or call): a width the
user gives is applied as given and never tuned (`effective_width`).

>>> import numpy as np
>>> SearchWidth.from_dict({"kind": "ivf", "value": 24, "source": "tuned", "recall": 0.97}).describe()
'ivf nprobe 24 (tuned: recall@10 0.970 of exact)'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.stores.faiss_store import VectorKind
from shopfusion.types import Product

if TYPE_CHECKING:
    from shopfusion.config import IndexSettings, Settings

AUTO_APPROXIMATE: VectorKind = "ivf"
"""What `index.vector_index = "auto"` builds above `index.hnsw_threshold`. Measured on the 1M catalog
(README "Scale"): IVF reaches recall@10 0.95 of exact on real queries at nprobe about 100 with a dense leg
under 2 ms and builds in half the time of HNSW; HNSW (M 32, efConstruction 80) stays under 0.95 even at
efSearch 2048."""
START = {"ivf": 1, "hnsw": 16}
"""The first width tried: one inverted list; an HNSW beam a little over the 10 results compared."""
EXACT_CHUNK = 65_536
"""Catalog rows read and searched at once by the exact search (96 MB of 384-dim vectors)."""
PARAMETER = {"ivf": "nprobe", "hnsw": "efSearch"}
CONFIDENCE_Z = 1.645
"""A width reaches the target when the one-sided 95% lower confidence bound of its mean recall on the
sample does (mean - 1.645 standard errors), not its mean alone: at 1M the width whose mean just reached
0.95 on the pseudo-queries gave 0.9495 on the Home Depot validation queries (README "Scale")."""
SCORE_TOLERANCE = 1e-5
"""Inner products closer than this are ties (FAISS and numpy sum in different orders)."""
PSEUDO_QUERY_WORDS = 4
"""Words of a title a pseudo-query keeps: 2, 3 and 4 were compared against real queries (Home Depot fit and
validation queries, 1M catalog); 4 tracked them closest (README "Scale")."""
QueryEncoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class WidthTuning:
    """What `tune_width` aims for; `IndexSettings` gives the values (`tuning_from`)."""

    target: float = 0.95
    max_width: int = 1024
    sample: int = 1000
    depth: int = 200
    k: int = 10
    seed: int = 0


@dataclass(frozen=True)
class SearchWidth:
    """The width searches of one index version use, and where it came from.

    `source`: `tuned` (measured by the build), `config` (`index.ivf_nprobe` / `index.hnsw_ef_search` set
    explicitly), `default` (an index built before tuning, or tuning off). `recall`, `target`, `sample`,
    `tried` (width -> recall@10) and `seconds` describe a tuned width."""

    kind: VectorKind
    value: int | None = None
    source: str = "default"
    recall: float | None = None
    target: float | None = None
    reached: bool = True
    sample: int | None = None
    tried: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    probes: str | None = None
    """What recall was measured on: `pseudo-queries` (from titles) or `catalog vectors`."""
    recall_low: float | None = None
    """The lower confidence bound of `recall` (`CONFIDENCE_Z`): what has to reach the target."""

    @property
    def parameter(self) -> str | None:
        """`nprobe`, `efSearch`, or None for exact search."""
        return PARAMETER.get(self.kind)

    def describe(self) -> str:
        if self.parameter is None:
            return f"{self.kind} (exact search)"
        if self.value is None:
            return f"{self.kind} (no {self.parameter} recorded: index.{_width_key(self.kind)} applies)"
        text = f"{self.kind} {self.parameter} {self.value} ({self.source}"
        if self.recall is not None:
            text += f": recall@10 {self.recall:.3f} of exact"
            if self.recall_low is not None:
                text += f" (at least {self.recall_low:.3f} at 95% confidence)"
            if self.sample:
                text += f" on {self.sample} {self.probes or 'queries'}"
            if self.target is not None:
                text += f", target {self.target}" + ("" if self.reached else " not reached within the cap")
        return text + ")"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parameter": self.parameter}

    def widths(self, settings: IndexSettings) -> tuple[int, int]:
        """(`ef_search`, `nprobe`) for `FaissVectorIndex`: this width for its own kind, the settings'
        values for the other."""
        ef_search, nprobe = settings.hnsw_ef_search, settings.ivf_nprobe
        if self.value is not None and self.kind == "hnsw":
            ef_search = self.value
        elif self.value is not None and self.kind == "ivf":
            nprobe = self.value
        return ef_search, nprobe

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchWidth:
        """From a manifest's `vector.search` (unknown keys ignored: written by a later version)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def tuning_from(settings: Settings, kind: VectorKind) -> WidthTuning | None:
    """The tuning a build of `kind` runs: None for exact search, when `index.ann_target_recall` is 0, or
    when the user set this kind's width explicitly (it is then applied as given)."""
    index = settings.index
    if kind == "flat" or index.ann_target_recall <= 0 or settings.explicit("index", _width_key(kind)):
        return None
    return WidthTuning(target=index.ann_target_recall, max_width=index.ann_max_width, sample=index.ann_tune_sample,
                       depth=settings.search.depth)


def configured_width(settings: Settings, kind: VectorKind) -> SearchWidth:
    """The width the settings give for `kind` (`config` when set explicitly, else `default`)."""
    if kind == "flat":
        return SearchWidth(kind)
    key = _width_key(kind)
    return SearchWidth(kind, int(getattr(settings.index, key)), "config" if settings.explicit("index", key) else "default")


def effective_width(manifest_vector: Mapping[str, Any], settings: Settings) -> SearchWidth:
    """The width a searcher uses for a version: an explicit setting, else the width the build recorded
    (`vector.search` in the manifest), else the setting's default (versions built before tuning)."""
    kind: VectorKind = manifest_vector.get("kind", "flat")
    configured = configured_width(settings, kind)
    recorded = manifest_vector.get("search")
    if configured.source == "config" or not isinstance(recorded, Mapping) or recorded.get("value") is None:
        return configured
    return SearchWidth.from_dict(recorded)


def recorded_width(manifest_vector: Mapping[str, Any]) -> SearchWidth:
    """The width a version's build recorded (`kind` only for versions built before widths were recorded)."""
    recorded = manifest_vector.get("search")
    if isinstance(recorded, Mapping) and recorded.get("kind"):
        return SearchWidth.from_dict(recorded)
    return SearchWidth(manifest_vector.get("kind", "flat"))


def _width_key(kind: VectorKind) -> str:
    return "ivf_nprobe" if kind == "ivf" else "hnsw_ef_search"


# -- measuring ------------------------------------------------------------------------------------------
def set_width(index: Any, kind: VectorKind, width: int) -> None:
    """Apply a search width to a FAISS index of `kind`."""
    if kind == "ivf":
        index.nprobe = width
    elif kind == "hnsw":
        index.hnsw.efSearch = width


def sample_rows(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of a seeded sample (all rows when the catalog is smaller)."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def exact_neighbours(chunks: Iterable[np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the `k` highest inner products of each query over the catalog given as
    consecutive row `chunks` (so a million vectors are read from disk a piece at a time), best first,
    ties by row. Each chunk is searched by FAISS's brute-force `knn` (BLAS and a heap: 3.7 s for 1,000
    queries over 1M vectors on 2 cores, against 8.4 s for numpy's product and `argpartition`)."""
    from indexer.stores.faiss_store import faiss_module

    faiss = faiss_module()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    start = 0
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        take = min(k, len(chunk))
        if take:
            scores, rows = faiss.knn(queries, chunk, take, metric=faiss.METRIC_INNER_PRODUCT)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_rows = np.concatenate([best_rows, rows + start], axis=1)
            order = np.lexsort((best_rows, -best_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, order, axis=1)
            best_rows = np.take_along_axis(best_rows, order, axis=1)
        start += len(chunk)
    return best_scores, best_rows


def matrix_chunks(vectors: np.ndarray, size: int = EXACT_CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), size):
        yield vectors[start:start + size]


def file_chunks(path: Path, size: int = EXACT_CHUNK) -> Iterator[np.ndarray]:
    """The rows of a float32 `.npy` matrix, `size` at a time, read (not mapped: the pages are not kept)."""
    offset, count, dim = npy_layout(path)
    with path.open("rb") as handle:
        handle.seek(offset)
        for start in range(0, count, size):
            n = min(size, count - start)
            yield np.fromfile(handle, dtype=np.float32, count=n * dim).reshape(n, dim)


def npy_layout(path: Path) -> tuple[int, int, int]:
    """(data offset, rows, columns) of a 2-d `.npy` file (only its header is read)."""
    mapped = np.load(path, mmap_mode="r")
    layout = int(mapped.offset), int(mapped.shape[0]), int(mapped.shape[1])
    del mapped
    return layout


def recalls_at(exact: tuple[np.ndarray, np.ndarray], found: tuple[np.ndarray, np.ndarray], k: int,
               exclude: np.ndarray | None = None) -> np.ndarray:
    """Each query's share of its exact top `k` that the approximate top `k` recovers, both given as
    (scores, rows). Equal scores count as equal: an approximate hit scoring at least the exact `k`-th
    score (within float rounding) is a hit, so duplicate vectors (the same text twice in a catalog) do
    not count as misses because the two searches broke the tie differently. With `exclude`, each query's
    own row is taken out of both lists first; FAISS's -1 padding never counts."""
    exact_scores, exact_rows = exact
    found_scores, found_rows = found
    out = np.ones(len(exact_rows))
    for i in range(len(exact_rows)):
        own = -1 if exclude is None else int(exclude[i])
        truth = exact_scores[i][(exact_rows[i] != own) & (exact_rows[i] >= 0)][:k]
        if len(truth):
            keep = (found_rows[i] != own) & (found_rows[i] >= 0)
            scores = found_scores[i][keep][:k]
            out[i] = min(int(np.sum(scores >= truth[-1] - SCORE_TOLERANCE)), len(truth)) / len(truth)
    return out


def recall_at(exact: tuple[np.ndarray, np.ndarray], found: tuple[np.ndarray, np.ndarray], k: int,
              exclude: np.ndarray | None = None) -> float:
    """The mean of `recalls_at`."""
    return float(np.mean(recalls_at(exact, found, k, exclude))) if len(exact[1]) else 1.0


def lower_bound(recalls: np.ndarray) -> float:
    """The one-sided `CONFIDENCE_Z` lower confidence bound of the mean recall (normal approximation)."""
    if len(recalls) < 2:
        return float(np.mean(recalls)) if len(recalls) else 1.0
    return float(np.mean(recalls) - CONFIDENCE_Z * np.std(recalls, ddof=1) / np.sqrt(len(recalls)))


def pseudo_query(product: Product) -> str:
    """A query-like text for a product: the first `PSEUDO_QUERY_WORDS` words of its title."""
    return " ".join(product.title.split()[:PSEUDO_QUERY_WORDS])


def tune_width(index: Any, kind: VectorKind, vectors: np.ndarray | Path, tuning: WidthTuning, *,
               queries: np.ndarray | None = None) -> SearchWidth:
    """The smallest width of `index` (built over `vectors`: a matrix, or a `.npy` file read in chunks)
    whose recall@`k` against exact search reaches `tuning.target` on `queries` (the pseudo-queries of
    the sampled rows; without them, the sampled rows' own vectors, each one's own row left out of both
    lists); `index` is left at the width chosen. See the module docstring."""
    started = time.perf_counter()
    use_own = queries is None
    if isinstance(vectors, Path):
        from indexer.stores.faiss_builder import read_rows

        offset, count, dim = npy_layout(vectors)
        rows = sample_rows(count, tuning.sample, tuning.seed)
        if queries is None:
            queries = read_rows(vectors, offset, dim, rows)
        chunks: Iterable[np.ndarray] = file_chunks(vectors)
    else:
        count = len(vectors)
        rows = sample_rows(count, tuning.sample, tuning.seed)
        if queries is None:
            queries = np.asarray(vectors[rows], dtype=np.float32)
        chunks = matrix_chunks(vectors)
    own = rows if use_own else None
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = exact_neighbours(chunks, queries, tuning.k + (1 if own is not None else 0))
    cap = max(1, min(tuning.max_width, int(index.nlist)) if kind == "ivf" else tuning.max_width)
    depth = min(max(tuning.depth, tuning.k) + 1, count)
    tried: dict[int, float] = {}
    bounds: dict[int, float] = {}

    def reaches(width: int) -> bool:
        """Whether `width` reaches the target with confidence (the lower bound of its recall)."""
        if width not in tried:
            set_width(index, kind, width)
            recalls = recalls_at(exact, index.search(queries, depth), tuning.k, exclude=own)
            tried[width], bounds[width] = round(float(np.mean(recalls)), 4), round(lower_bound(recalls), 4)
        return bounds[width] >= tuning.target

    low, width = 0, min(START[kind], cap)
    while not reaches(width) and width < cap:
        low, width = width, min(width * 2, cap)
    reached = reaches(width)
    if reached and low:  # bisection: `low` misses the target, `width` reaches it
        while width - low > max(1, low // 8):
            middle = (low + width) // 2
            if reaches(middle):
                width = middle
            else:
                low = middle
    set_width(index, kind, width)
    return SearchWidth(kind, width, "tuned", tried[width], tuning.target, reached, len(queries),
                       {str(w): r for w, r in sorted(tried.items())}, round(time.perf_counter() - started, 3),
                       "pseudo-queries" if own is None else "catalog vectors", bounds[width])
