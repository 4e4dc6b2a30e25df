"""The Python client: index a catalog, search it, re-rank another engine's results, evaluate, verify.

>>> from shopfusion import Client
>>> client = Client("var/demo-index")                             # doctest: +SKIP
>>> client.index("examples/icecat-demo/products.jsonl").total     # doctest: +SKIP
2000
>>> client.search("wireless mouse", k=3).hits[0].product.title    # doctest: +SKIP
'Logitech M185 mouse RF Wireless Optical 1000 DPI Ambidextrous'

The CLI is a thin layer over this class; settings come from the same TOML file and environment
variables (`shopfusion.config`), and keyword arguments override them per call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shopfusion.config import Settings, load_settings
from shopfusion.types import Candidate, Filters, Results

if TYPE_CHECKING:
    from indexer.attributes import AttributeCatalog
    from indexer.manifest import Manifest
    from indexer.pipeline import IndexSummary
    from indexer.repair import RepairReport
    from indexer.verify import VerifyReport
    from indexer.versions import VersionInfo
    from ranker.policy import Policy
    from ranker.searcher import HybridSearcher, Mode
    from workers.executor import Executor

EvalMode = Literal["corpus", "pool"]


class Client:
    """One index directory. Cheap to construct: the index and the model load on first search."""

    def __init__(self, index_dir: str | os.PathLike[str], *, settings: Settings | None = None,
                 config: str | os.PathLike[str] | None = None, policy: Policy | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.settings = settings or load_settings(config)
        self._policy = policy
        self._searcher: HybridSearcher | None = None

    @property
    def searcher(self) -> HybridSearcher:
        if self._searcher is None:
            from ranker.searcher import HybridSearcher

            self._searcher = HybridSearcher(self.index_dir, self.settings, policy=self._policy)
        return self._searcher

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def index(self, catalog: str | os.PathLike[str], *, rejects: str | os.PathLike[str] | None = None,
              max_rejects: int | None = None, replace: bool = False, fmt: str | None = None,
              executor: Executor | None = None, progress: bool = False, allow_shrink: bool = False,
              vectors: str | os.PathLike[str] | None = None) -> IndexSummary:
        """Index a catalog (JSONL, CSV or Parquet); see `indexer.pipeline.run_index`. `vectors`: a file of
        precomputed vectors (`shopfusion embed`) whose texts are not embedded again."""
        from indexer.pipeline import run_index

        summary = run_index(catalog, self.index_dir, settings=self.settings, rejects=rejects,
                            max_rejects=max_rejects, replace=replace, fmt=fmt, executor=executor,  # type: ignore[arg-type]
                            progress=progress, allow_shrink=allow_shrink, vectors=vectors)
        self.close()  # the next search opens the new version
        return summary

    def search(self, query: str, *, k: int | None = None, filters: Filters | None = None,
               fusion: str | None = None, alpha: float | None = None, normalization: str | None = None,
               rrf_k: float | None = None, depth: int | None = None, mode: Mode = "hybrid",
               explain: bool = False, facets: str | Sequence[str] = (), facet_size: int = 10,
               sort: str | None = None, page: int | None = None, offset: int | None = None,
               ranker: str | None = None) -> Results:
        """Hybrid search; `fusion`, `alpha`, ... override the policy's choice for this call, `ranker` (a
        trained ranker's directory, or `none`) the `search.ranker` setting.

        `filters` apply to both legs before either takes its top k. The relevant set is what both legs
        retrieved (`depth` each), fused: `sort` (`price`, `-price`, `brand`, an attribute) re-orders it,
        `page` (1-based, `k` hits each) or `offset` picks a slice of it (`Results.page` says where), and
        `facets` (`"brand,category,colour"` or a sequence) are counted over all of it (`Results.facets`).

        >>> client.search("mouse", filters=Filters(attributes={"colour": ("black",)}),  # doctest: +SKIP
        ...               facets="brand,price", sort="-price", page=2)
        """
        from ranker.searcher import SearchOptions
        from ranker.view import ResultView

        self._check(query, k=k, depth=depth)
        if filters is not None and not isinstance(filters, Filters):
            from shopfusion.errors import QueryError

            raise QueryError(f"filters must be a shopfusion.Filters, got {type(filters).__name__}: build one with "
                             "Filters(brands=('HP',), attributes={'colour': ('black',)})")
        if page is not None and offset is not None:
            from shopfusion.errors import QueryError

            raise QueryError("give page or offset, not both (page n of k hits is offset (n - 1) * k)")
        size = self.settings.search.k if k is None else k
        view = (ResultView.for_page(page, size, sort=sort, facets=facets, facet_size=facet_size) if page is not None
                else ResultView(offset=offset or 0, sort=sort, facets=facets, facet_size=facet_size))
        options = SearchOptions(fusion, alpha, normalization, rrf_k, depth, ranker)
        return self.searcher.search(query, k=k, filters=filters, options=options, mode=mode, explain=explain,
                                    view=view)

    def attributes(self) -> AttributeCatalog:
        """The fields this index can filter, facet and sort on (names, kinds, counts, top values), read
        from the current version without loading the model."""
        from indexer.attributes import CATALOG_FILE, AttributeCatalog
        from indexer.manifest import IndexDirectory

        directory = IndexDirectory(self.index_dir)
        manifest = directory.read_manifest()
        return AttributeCatalog.load(directory.version_path(manifest.version) / CATALOG_FILE)

    def rerank(self, query: str, candidates: Sequence[Candidate | str | Mapping[str, Any]] | Mapping[str, Any], *,
               fusion: str | None = None, alpha: float | None = None, normalization: str | None = None,
               rrf_k: float | None = None, explain: bool = False, engine_weight: float = 0.0,
               fields: Mapping[str, Any] | None = None, ranker: str | None = None) -> Results:
        """Re-order another engine's results for `query`; see `HybridSearcher.rerank`.

        `candidates` is a list (ids, `Candidate`s or objects with `id`), or an Elasticsearch/OpenSearch
        `_search` or Solr response body as it came; `fields` maps product fields to source fields
        (`shopfusion.candidates`). Candidates that cannot be scored are listed in `Results.unscored`.
        `ranker`: a trained ranker's directory, or `none`, for this call (default `search.ranker`)."""
        from ranker.searcher import SearchOptions
        from shopfusion.candidates import candidate_items, parse_candidates

        items, _ = candidate_items(candidates)
        self._check(query, candidates=len(items))
        parsed = parse_candidates(candidates, fields, max_field_chars=self.settings.index.max_field_chars)
        options = SearchOptions(fusion, alpha, normalization, rrf_k, ranker=ranker)
        return self.searcher.rerank(query, parsed.candidates, options=options, explain=explain,
                                    engine_weight=engine_weight)

    def evaluate(self, queries: str | os.PathLike[str] | Mapping[str, str],
                 qrels: str | os.PathLike[str] | Mapping[str, Mapping[str, float]], *,
                 mode: EvalMode = "corpus", runs: Iterable[str] = ("hybrid",), k: int = 100,
                 run_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                 metrics: Sequence[str] | None = None, external: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
                 per_query: bool = False, stat_test: str = "student", max_p: float = 0.01,
                 **search_options: Any) -> dict[str, Any]:
        """Metrics (default nDCG@10, Recall@100, MRR) of each run over judged queries, with paired
        significance tests between the runs (`shopfusion.evaluation.compare_runs`).

        Runs: `hybrid` (search as configured), `fusion` (hybrid without the learned ranking stage),
        `ranker` (hybrid with the ranker of `search.ranker` or `ranker=`), `lexical`, `dense`; `external`
        adds runs computed elsewhere (`{name: {query id: {product id: score}}}`, e.g. a TREC run file).
        `corpus` mode searches the whole catalog; `pool` mode re-ranks each query's judged products.
        With `run_dir`, TREC run files are written there (`<run>.<mode>.trec`). The report records the
        settings, the index's encoder and the models used (`setup`), and per-query values on request."""
        from shopfusion.evaluation import (
            DEFAULT_METRICS,
            compare_runs,
            evaluate_per_query,
            load_qrels,
            load_queries,
            write_trec_run,
        )

        query_map = dict(queries) if isinstance(queries, Mapping) else load_queries(queries)
        judgments = {q: dict(d) for q, d in qrels.items()} if isinstance(qrels, Mapping) else load_qrels(qrels)
        judged = [qid for qid in query_map if qid in judgments]
        if not judged:
            from shopfusion.errors import QueryError

            raise QueryError("no query of the queries file has judgments in the qrels file: check the ids")
        metrics = list(metrics or DEFAULT_METRICS)
        judged_qrels = {q: judgments[q] for q in judged}
        computed: dict[str, Mapping[str, Mapping[str, float]]] = {}
        warnings: set[str] = set()
        for name in runs:
            run = self._run(name, judged, query_map, judgments, mode, k, progress, search_options, warnings)
            computed[name] = run
            if run_dir is not None:
                Path(run_dir).mkdir(parents=True, exist_ok=True)
                write_trec_run(run, Path(run_dir) / f"{name}.{mode}.trec", tag=f"shopfusion-{name}")
        for name, given in (external or {}).items():
            if name in computed:
                from shopfusion.errors import QueryError

                raise QueryError(f"two runs are named {name!r}: rename the run file")
            computed[name] = {q: given.get(q, {}) for q in judged}
        comparison = compare_runs(computed, judged_qrels, metrics, stat_test=stat_test, max_p=max_p)
        report: dict[str, Any] = {"mode": mode, "queries": len(judged), "k": k, "metrics": metrics,
                                  "runs": comparison["means"], "comparisons": comparison}
        report["models"] = self.models()
        if {"hybrid", "ranker"} & set(runs):
            from ranker.searcher import SearchOptions

            ranker, _ = self.searcher.ranker(SearchOptions(ranker=search_options.get("ranker")))
            if ranker is not None:
                report["models"]["ranker"] = ranker.describe()
        report["setup"] = self._setup(search_options)
        report["warnings"] = sorted(warnings)
        if per_query:
            report["per_query"] = {name: evaluate_per_query(run, judged_qrels, metrics) for name, run in computed.items()}
        return report

    def models(self) -> dict[str, Any]:
        """What answers queries: the index version, its encoder, the intent model and the fusion policy."""
        searcher = self.searcher
        info = dict(getattr(searcher.policy, "info", {}))
        return {"index_version": searcher.manifest.version, "encoder": searcher.manifest.model_id,
                "intent_model": info.get("intent_model"), "policy": info.get("policy", "none"),
                "vector_index": searcher.width.describe()}

    def _setup(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The settings an evaluation ran with (credentials left out), this call's options and the index."""
        manifest = self.searcher.manifest
        return {"settings": self.settings.to_dict(), "options": {k: v for k, v in options.items() if v is not None},
                "index": {"path": str(self.index_dir), "version": manifest.version, "encoder": manifest.model_id,
                          "dim": manifest.dim, "lexical": dict(manifest.lexical)}}

    def _run(self, name: str, judged: list[str], queries: Mapping[str, str],
             judgments: Mapping[str, Mapping[str, float]], mode: EvalMode, k: int, progress: bool,
             options: Mapping[str, Any], warnings: set[str]) -> dict[str, dict[str, float]]:
        from tqdm.auto import tqdm

        if name not in {"hybrid", "lexical", "dense", "fusion", "ranker"}:
            from shopfusion.errors import QueryError

            raise QueryError(f"unknown run {name!r}: use hybrid, fusion, ranker, lexical or dense")
        options = dict(options)
        if name in {"fusion", "lexical", "dense"}:
            options["ranker"] = "none"
        elif name == "ranker" and (options.get("ranker") or self.settings.search.ranker) in (None, "", "none"):
            from shopfusion.errors import QueryError

            raise QueryError("the `ranker` run needs a trained ranker: pass --ranker DIR (or set search.ranker)")
        if name in {"fusion", "ranker"}:
            name = "hybrid"
        run: dict[str, dict[str, float]] = {}
        for qid in tqdm(judged, desc=f"{name} ({mode})", disable=not progress, leave=False):
            if mode == "corpus":
                results = self.search(queries[qid], k=k, mode=name, **options)  # type: ignore[arg-type]
            else:
                alpha = {"lexical": 0.0, "dense": 1.0}.get(name)
                pool_options = {key: v for key, v in options.items() if key != "depth"}
                if alpha is not None:
                    pool_options.update(fusion="linear", alpha=alpha)
                results = self.rerank(queries[qid], list(judgments[qid]), **pool_options)
            warnings.update(results.warnings)
            run[qid] = {hit.product_id: float(len(results.hits) - hit.rank + 1) for hit in results.hits}
        return run

    def _check(self, query: str, *, k: int | None = None, depth: int | None = None,
               candidates: int | None = None) -> None:
        """Enforce `[limits]` before any work is done (the CLI and the HTTP service go through here)."""
        check_limits(self.settings, query, k=k, depth=depth, candidates=candidates)

    def verify(self, *, sample: int = 0) -> VerifyReport:
        """Check the live version (checksums, id maps, counts; `sample` products re-encoded)."""
        from indexer.verify import verify_index

        return verify_index(self.index_dir, self.settings, sample=sample)

    def repair(self, *, executor: Executor | None = None, progress: bool = False) -> RepairReport:
        """Rebuild what `verify` finds damaged as a new version; see `indexer.repair`."""
        from indexer.repair import repair_index

        self.close()
        return repair_index(self.index_dir, self.settings, executor=executor, progress=progress)

    def versions(self) -> list[VersionInfo]:
        """The kept versions, newest first; see `indexer.versions`."""
        from indexer.versions import list_versions

        return list_versions(self.index_dir)

    def rollback(self, to: str | None = None) -> Manifest:
        """Make a kept version live again (default: the one before the live one)."""
        from indexer.versions import rollback

        self.close()
        return rollback(self.index_dir, self.settings, to=to)


def check_limits(settings: Settings, query: str, *, k: int | None = None, depth: int | None = None,
                 candidates: int | None = None) -> None:
    """Refuse a request that exceeds `settings.limits`, naming the bound and the setting that raises it."""
    from shopfusion.errors import QueryError

    limits = settings.limits
    if not isinstance(query, str):
        raise QueryError(f"the query must be a string, got {type(query).__name__}")
    if len(query) > limits.max_query_chars:
        raise QueryError(f"the query has {len(query)} characters, more than limits.max_query_chars ="
                         f" {limits.max_query_chars}: shorten it (or raise SHOPFUSION_LIMITS_MAX_QUERY_CHARS)")
    check_text(query, "the query")
    checks = (("k", k, limits.max_k, "MAX_K"), ("depth", depth, limits.max_depth, "MAX_DEPTH"),
              ("candidates", candidates, limits.max_candidates, "MAX_CANDIDATES"))
    for name, value, bound, env in checks:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise QueryError(f"{name} must be an integer, got {value!r}")
        if value > bound:
            raise QueryError(f"{name} = {value} is more than limits.{env.lower()} = {bound}: ask for fewer"
                             f" (or raise SHOPFUSION_LIMITS_{env})")


def check_text(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode: bytes that were not UTF-8 (a command line decodes them to
    U+DC80..U+DCFF) or a lone surrogate (`"\\ud800"` in JSON). Engines would fail on it deep inside."""
    import re

    from shopfusion.errors import QueryError

    bad = re.search("[\ud800-\udfff]", text)
    if bad is not None:
        position, code = bad.start(), ord(bad.group())
        if 0xDC80 <= code <= 0xDCFF:
            raise QueryError(f"{what} is not valid UTF-8 (byte 0x{code - 0xDC00:02X} at character {position}):"
                             " send UTF-8 text (check the terminal's or the caller's encoding)")
        raise QueryError(f"{what} holds a lone surrogate (U+{code:04X} at character {position}), which is"
                         " not valid Unicode: send valid text")


def candidate_from(value: Candidate | str | Mapping[str, Any]) -> Candidate:
    """A candidate from an id, a mapping (`id`, optional `score`, optional product fields) or itself."""
    from shopfusion.candidates import candidate_from as parse_one

    return parse_one(value)
