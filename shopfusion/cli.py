"""The `shopfusion` command line: a thin click layer over `shopfusion.Client`.

Heavy modules (torch, tantivy, faiss) are imported inside commands, so `--help` is instant. Every command
takes `--json` for one machine-readable JSON document on stdout, written by `shopfusion.serialization`
(never a bare NaN or Infinity: non-finite numbers are `null`); errors go to stderr with a non-zero exit
code (the table is in `shopfusion.errors`) and a message that says how to fix them. An unexpected
exception is reported in one line too (exit 1); `SHOPFUSION_DEBUG=1` shows its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from shopfusion.errors import QueryError, ShopfusionError

INDEX_OPTION = click.option(
    "--index", "index_dir", required=True, envvar="SHOPFUSION_INDEX", type=click.Path(file_okay=False),
    help="Index directory (env SHOPFUSION_INDEX).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
BACKEND_OPTION = click.option(
    "--backend", type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
    help="Encoder backend (default: index.backend): torch, ONNX Runtime fp32 or int8, or auto.")


class LazyGroup(click.Group):
    """A group whose sub-groups live in other modules and are imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attribute, _ = self.lazy[cmd_name]
            import importlib

            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise click.ClickException(f"`{cmd_name}` is not available: {exc}") from exc
            return getattr(module, attribute)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=70)) for name, cmd in
                ((n, super(LazyGroup, self).get_command(ctx, n)) for n in super().list_commands(ctx)) if cmd]
        rows += [(name, help_text) for name, (_, _, help_text) in self.lazy.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, lazy={"train": ("trainer.cli", "train", "Train and adapt encoders, intent models, fusion policies and learned rankers.")},
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SHOPFUSION_CONFIG",
              help="TOML config file (default: ./shopfusion.toml when present; env SHOPFUSION_CONFIG).")
@click.version_option(package_name="shopfusion")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Hybrid product search: index catalogs, search, re-rank, evaluate.

    \b
    Quick start:
      shopfusion index examples/icecat-demo/products.jsonl --index var/demo-index
      shopfusion search "wireless mouse" --index var/demo-index --k 5
    """
    ctx.obj = {"config": config_path}


def _settings(ctx: click.Context, **section_overrides: dict[str, Any]) -> Any:
    from shopfusion.config import load_settings

    settings = load_settings(ctx.obj.get("config"))
    for section, changes in section_overrides.items():
        if any(v is not None for v in changes.values()):
            settings = settings.replace(section, **changes)
    return settings


def _run(action: Any) -> Any:
    try:
        return action()
    except ShopfusionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug, or an OS failure (disk full): one line, not a traceback
        if os.environ.get("SHOPFUSION_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (a bug or a system failure: rerun with"
                   " SHOPFUSION_DEBUG=1 for the traceback and report it)", err=True)
        sys.exit(1)


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        from shopfusion.serialization import dumps

        click.echo(dumps(data))
    else:
        click.echo(text)


# -- index ------------------------------------------------------------------------------------------
@main.command()
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False))
@INDEX_OPTION
@click.option("--rejects", type=click.Path(dir_okay=False),
              help="Where to write rejected records (JSONL). Default: INDEX/rejects.jsonl.")
@click.option("--max-rejects", type=click.IntRange(min=0),
              help="Fail, leaving the index unchanged, once more than N records are rejected.")
@click.option("--replace", is_flag=True, help="The catalog is the whole truth: delete products it lacks.")
@click.option("--allow-shrink", is_flag=True,
              help="Publish even an empty version or one dropping more than index.max_shrink of the products.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="Catalog format (default: from the file name).")
@click.option("--model", help="Encoder: `default` (packaged all-MiniLM-L6-v2) or a local model directory.")
@click.option("--executor", type=click.Choice(["local", "celery"]), help="Where embeddings are computed.")
@click.option("--lexical", type=click.Choice(["tantivy", "elasticsearch"]), help="Lexical engine.")
@click.option("--vector-index", type=click.Choice(["auto", "flat", "hnsw", "ivf"]), help="FAISS index kind.")
@BACKEND_OPTION
@click.option("--vectors", type=click.Path(exists=True, file_okay=False),
              help="Precomputed vectors (`shopfusion embed`): texts found there are not embedded again.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@JSON_OPTION
@click.pass_context
def index(ctx: click.Context, catalog: str, index_dir: str, rejects: str | None, max_rejects: int | None,
          replace: bool, allow_shrink: bool, fmt: str | None, model: str | None, executor: str | None,
          lexical: str | None, vector_index: str | None, backend: str | None, vectors: str | None,
          progress: bool | None, as_json: bool) -> None:
    """Index CATALOG (JSONL, CSV or Parquet) into both the BM25 and the vector index.

    Re-running is incremental (unchanged products are not re-embedded) and an interrupted run resumes
    where it stopped. Rejected records go to the rejects file with their line and reason; the run
    still exits 0 unless --max-rejects is exceeded (exit 4). A version that would be empty or drop more
    than index.max_shrink of the live products is not published (exit 7) unless --allow-shrink; products
    that could not be embedded are reported and the exit code is 8.
    """
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx, index=dict(model=model, executor=executor, lexical=lexical,
                                                      vector_index=vector_index, backend=backend)))
    show = sys.stderr.isatty() if progress is None else progress
    summary = _run(lambda: Client(index_dir, settings=settings).index(
        catalog, rejects=rejects, max_rejects=max_rejects, replace=replace, fmt=fmt, progress=show,
        allow_shrink=allow_shrink, vectors=vectors))
    _emit(as_json, summary.to_dict(), format_summary(summary, catalog, index_dir))
    _exit_on_embedding_failures(summary)


def format_summary(s: Any, catalog: str, index_dir: str) -> str:
    text = (f"indexed {catalog} into {index_dir} ({s.version}) in {s.seconds:.1f}s\n"
            f"  read {s.read}: added {s.added}, updated {s.updated}, unchanged {s.unchanged},"
            + (f" repaired {s.repaired}," if s.repaired else "")
            + f" duplicates {s.duplicates}, rejected {s.rejected}"
            + (f", not embedded {s.embedding_failed}" if s.embedding_failed else "")
            + (f", deleted {s.deleted}" if s.deleted else "")
            + f"\n  embedded {s.embedded} texts with {s.backend} (reused {s.reused_vectors}, resumed"
            f" {s.resumed_vectors}, precomputed {s.precomputed_vectors});"
            f" {s.total} products in the index")
    if s.vector_index:
        from indexer.stores.ann_tuning import SearchWidth

        text += f"\n  vector index: {SearchWidth.from_dict(s.vector_index).describe()}"
    if s.rejected:
        text += f"\n  rejects written to {s.rejects_file}"
    for warning in s.warnings:
        text += f"\n  warning: {warning}"
    return text


def _exit_on_embedding_failures(summary: Any) -> None:
    """Exit 8 (after the summary was printed) when products could not be embedded."""
    failed = summary.embedding_failed + summary.left_out
    if failed:
        from shopfusion.errors import EmbeddingError

        first = next(iter(summary.failures.items()))
        error = EmbeddingError(f"{failed} product(s) could not be embedded (e.g. {first[0]}: {first[1][:300]});"
                               " the rest was published: run the same command again to retry them")
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)


# -- embed ------------------------------------------------------------------------------------------
@main.command()
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Vector file directory.")
@click.option("--max-texts", type=click.IntRange(min=0), help="Stop after embedding N texts (run again to go on).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="Catalog format (default: from the file name).")
@click.option("--model", help="Encoder: `default` (packaged all-MiniLM-L6-v2) or a local model directory.")
@BACKEND_OPTION
@click.option("--executor", type=click.Choice(["local", "celery"]), help="Where embeddings are computed.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@JSON_OPTION
@click.pass_context
def embed(ctx: click.Context, catalog: str, out: str, max_texts: int | None, fmt: str | None, model: str | None,
          backend: str | None, executor: str | None, progress: bool | None, as_json: bool) -> None:
    """Embed CATALOG's texts into a vector file ahead of indexing (`index --vectors OUT`).

    Resumable: texts already in OUT are skipped, so a large catalog can be embedded in several runs
    (--max-texts). The file records the model and backend; an index built with others refuses it.
    """
    from indexer.precompute import embed_catalog

    settings = _run(lambda: _settings(ctx, index=dict(model=model, backend=backend, executor=executor)))
    show = sys.stderr.isatty() if progress is None else progress
    summary = _run(lambda: embed_catalog(catalog, out, settings=settings, fmt=fmt, max_texts=max_texts,  # type: ignore[arg-type]
                                         progress=show))
    s = summary
    _emit(as_json, s.to_dict(), f"embedded {s.embedded} texts with {s.backend} in {s.seconds:.1f}s"
          f" ({s.texts_per_second} texts/s); {s.already} were already in {out}, {s.remaining} remain,"
          f" {s.failed} failed")


# -- search -----------------------------------------------------------------------------------------
def parse_filters(values: tuple[str, ...]) -> Any:
    """`--filter` arguments -> `Filters` (the syntax: `shopfusion.filter_syntax`)."""
    from shopfusion.filter_syntax import parse_filters as parse

    return parse(values)


FUSION_OPTIONS = [
    click.option("--intent-model", help="Intent model for this call: `default`, `none` or a directory (search.intent_model)."),
    click.option("--policy", help="Fusion policy for this call: `default`, `none` or a directory (search.policy)."),
    click.option("--fusion", type=click.Choice(["rrf", "linear"]), help="Fusion method (default: the policy's)."),
    click.option("--alpha", type=click.FloatRange(0, 1), help="Linear fusion: weight of the dense leg."),
    click.option("--normalization", type=click.Choice(["minmax", "zscore"]), help="Linear fusion normalisation."),
    click.option("--rrf-k", type=click.FloatRange(min=0), help="RRF constant k (default 60)."),
]


def fusion_options(func: Any) -> Any:
    for option in reversed(FUSION_OPTIONS):
        func = option(func)
    return func


RANKER_OPTION = click.option(
    "--ranker", help="Learned ranker directory (from `shopfusion train ranker`), or `none` (default: search.ranker).")


@main.command()
@click.argument("query")
@INDEX_OPTION
@click.option("--k", type=click.IntRange(min=1), help="Number of results (default 10).")
@click.option("--filter", "filters", multiple=True,
              help="KEY=VALUE, repeatable: category=A > B, brand=NAME, price=LOW..HIGH, price>=LOW, price<HIGH, "
                   "or any attribute (colour=black, weight=1..5); values of one key OR, keys AND.")
@click.option("--facets", "facets", multiple=True,
              help="Count these fields over the relevant set, e.g. brand,category,price,colour.")
@click.option("--facet-size", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Values shown per facet (per level for category).")
@click.option("--sort", help="Re-order the relevant set: price, -price, brand, an attribute (-NAME: descending).")
@click.option("--page", type=click.IntRange(min=1), help="Page of K hits (1-based) of the relevant set.")
@click.option("--offset", type=click.IntRange(min=0), help="Skip this many hits of the relevant set.")
@fusion_options
@click.option("--depth", type=click.IntRange(min=1), help="Candidates per leg before fusion (the relevant set).")
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "dense"]), default="hybrid", show_default=True)
@RANKER_OPTION
@click.option("--explain", is_flag=True,
              help="Show each leg's raw and normalised score and contribution (and the ranker's top features).")
@JSON_OPTION
@click.pass_context
def search(ctx: click.Context, query: str, index_dir: str, k: int | None, filters: tuple[str, ...],
           facets: tuple[str, ...], facet_size: int, sort: str | None, page: int | None, offset: int | None,
           intent_model: str | None, policy: str | None, fusion: str | None, alpha: float | None,
           normalization: str | None, rrf_k: float | None,
           depth: int | None, mode: str, ranker: str | None, explain: bool, as_json: bool) -> None:
    """Search the index for QUERY with BM25 and dense retrieval fused.

    Filters apply to both legs before either takes its top K. The relevant set is each leg's top
    DEPTH, fused: --sort re-orders it, --page/--offset page through it, --facets count over it.
    """
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx, search=dict(intent_model=intent_model, policy=policy)))
    parsed = _run(lambda: parse_filters(filters))
    results = _run(lambda: Client(index_dir, settings=settings).search(
        query, k=k, filters=parsed, fusion=fusion, alpha=alpha, normalization=normalization, rrf_k=rrf_k,
        depth=depth, mode=mode, explain=explain, ranker=ranker, facets=facets, facet_size=facet_size,  # type: ignore[arg-type]
        sort=sort, page=page, offset=offset))
    _emit(as_json, results.to_dict(), format_results(results, explain))


def format_results(results: Any, explain: bool) -> str:
    lines = []
    fusion = results.fusion
    header = f"{len(results.hits)} results for {results.query!r}"
    if "method" in fusion:
        header += f" ({fusion['method']}" + (f", alpha {fusion['alpha']}" if fusion["method"] == "linear" else "") + ")"
    if results.intent is not None:
        header += f" intent {results.intent.label} ({results.intent.probability:.2f})"
    lines.append(header)
    if explain and results.intent is not None and results.intent.policy:
        lines.extend(_explain_policy(results.intent))
    if explain and fusion.get("ranker"):
        lines.append(f"  ranker: {json.dumps(fusion['ranker'], default=str)}")
    if results.message:
        lines.append(f"  {results.message}")
    for warning in getattr(results, "warnings", ()):
        lines.append(f"  warning: {warning}")
    for unscored in getattr(results, "unscored", ()):
        lines.append(f"  unscored: {unscored.product_id}: {unscored.reason}")
    page = getattr(results, "page", None)
    if page is not None and (page.offset or page.sort != "relevance" or not page.exhausted):
        shown = f"{page.offset + 1}-{page.offset + len(results.hits)}" if results.hits else "none"
        lines.append(f"  hits {shown} of {page.total} (page {page.number}, sorted by {page.sort})")
        if not results.hits and page.offset >= page.total > 0:
            lines.append(f"  past the end: the relevant set holds {page.total} products (top {page.depth} per"
                         " leg); raise --depth to page further")
    for hit in results.hits:
        title = hit.product.title if hit.product else "(not in the index)"
        brand = f" [{hit.product.brand}]" if hit.product and hit.product.brand else ""
        lines.append(f"{hit.rank:>3}. {hit.score:8.4f}  {hit.product_id}  {title[:90]}{brand}")
        if explain and hit.legs:
            for leg, score in hit.legs.items():
                raw = "-" if score.raw is None else f"{score.raw:.4f}"
                norm = "-" if score.normalized is None else f"{score.normalized:.4f}"
                rank = "-" if score.rank is None else str(score.rank)
                lines.append(f"       {leg:<8} raw {raw:>9}  norm {norm:>7}  rank {rank:>4}"
                             f"  contribution {score.contribution:.4f}")
        if explain and getattr(hit, "contributions", None):
            lines.append("       ranker   " + ", ".join(
                f"{c.feature}{'' if c.value is None else f'={c.value:.3g}'} {c.contribution:+.3f}"
                for c in hit.contributions))
    if getattr(results, "facets", None) is not None:
        lines.extend(format_facets(results.facets))
    return "\n".join(lines)


def _explain_policy(intent: Any) -> list[str]:
    """The why of the fusion: who predicted the intent, which policy row applied, what overrode it."""
    info = dict(intent.policy)
    fusion = info.get("fusion", {})
    described = fusion.get("method", "?") + (f" alpha {fusion.get('alpha')} {fusion.get('normalization')}"
                                             if fusion.get("method") == "linear" else f" k {fusion.get('rrf_k')}")
    lines = [f"  intent: {intent.label} (p {intent.probability:.2f}, by {info.get('source', '?')});"
             f" policy {info.get('policy', '?')!s}, row {info.get('key', '?')!r}: {described}, depth {info.get('depth')}"]
    if info.get("overrides"):
        lines.append("  overrides: " + ", ".join(f"{k} ({v})" for k, v in info["overrides"].items()))
    model = info.get("intent_model")
    if model:
        lines.append(f"  intent model: {model.get('id')} ({model.get('method') or '-'}; reads {model.get('encoder')}"
                     + (", own encoder" if model.get("own_encoder") else "") + ")")
    elif "intent_model" in info:
        lines.append("  intent model: none (rules only)")
    return lines


def format_facets(facets: Any) -> list[str]:
    lines = [f"facets over the {facets.over} products of the relevant set:"]
    for facet in facets.fields:
        parts = []
        for bucket in facet.buckets:
            level = f"[{bucket.level}] " if bucket.level is not None and bucket.level > 1 else ""
            parts.append(f"{level}{bucket.label} {bucket.count}")
        extra = []
        if facet.other:
            extra.append(f"{facet.other} other")
        if facet.missing:
            extra.append(f"{facet.missing} without")
        if facet.kind == "range" and facet.min is not None:
            extra.append(f"min {facet.min:g}, max {facet.max:g}")
        lines.append(f"  {facet.name}: " + (", ".join(parts) or "-") + (f" ({'; '.join(extra)})" if extra else ""))
    return lines


# -- attributes -------------------------------------------------------------------------------------
@main.command()
@INDEX_OPTION
@click.argument("names", nargs=-1)
@click.option("--values", "n_values", type=click.IntRange(min=0), default=5, show_default=True,
              help="Most frequent values shown per field.")
@JSON_OPTION
@click.pass_context
def attributes(ctx: click.Context, index_dir: str, names: tuple[str, ...], n_values: int, as_json: bool) -> None:
    """List the fields the index can filter, facet and sort on (or just NAMES).

    Built-in fields are brand, category and price; every catalog attribute is listed with its kind
    (numeric: ranges and range facets; text: values), how many products have it, its distinct values
    and the most frequent ones.
    """
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx))
    catalog = _run(lambda: Client(index_dir, settings=settings).attributes())
    fields = ([_run(lambda name=name: catalog.field(name)) for name in names] if names else
              sorted(catalog.fields.values(), key=lambda f: (not f.builtin, -f.products, f.name)))
    if as_json:
        _emit(True, {"products": catalog.products, "fields": [f.to_dict(n_values) for f in fields]}, "")
        return
    lines = [f"{catalog.products} products, {len(catalog.attributes)} attributes"
             + (f" (showing {len(fields)})" if names else "")]
    for info in fields:
        label = info.name + (" (built-in)" if info.builtin else "")
        if info.kind == "numeric" and info.min is not None:
            detail = f"{info.min:.12g} to {info.max:.12g}"
        else:
            detail = ", ".join(f"{lab} {count}" for _, lab, count in info.values[:n_values])
        distinct = f"{info.distinct}{'+' if info.distinct_capped else ''} distinct"
        lines.append(f"  {label:<32} {info.kind:<8} {info.products:>7} products  {distinct:>16}  {detail[:100]}")
    _emit(False, None, "\n".join(lines))


# -- rerank -----------------------------------------------------------------------------------------
def read_candidates(path: str) -> Any:
    """JSON (an array, an object with `candidates`, an Elasticsearch/OpenSearch or Solr response) or JSONL;
    `-` reads standard input. See `shopfusion.candidates`."""
    from shopfusion.candidates import read_candidates_file

    return read_candidates_file(path)


def parse_fields(values: tuple[str, ...]) -> dict[str, list[str]] | None:
    """`--field title=name --field brand=manufacturer.name` -> a `fields` mapping (repeat a key for fallbacks)."""
    fields: dict[str, list[str]] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise QueryError(f"--field {value!r}: write FIELD=SOURCE_FIELD, e.g. --field title=name")
        fields.setdefault(key.strip(), []).append(path.strip())
    return fields or None


@main.command()
@click.argument("query")
@INDEX_OPTION
@click.option("--candidates", "candidates_path", required=True,
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="JSON or JSONL (`-`: standard input): ids or objects with `id`, optional `score` and product"
                   " fields or `text`; or an Elasticsearch/OpenSearch `_search` or Solr response body.")
@click.option("--field", "field_specs", multiple=True, metavar="FIELD=SOURCE",
              help="Which source field holds a product field, e.g. --field title=name (repeatable; keys: id,"
                   " score, title, description, brand, category, price, attributes, text).")
@fusion_options
@click.option("--engine-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of the other engine's scores as a third leg (0: shown, not counted).")
@RANKER_OPTION
@click.option("--explain", is_flag=True,
              help="Show each leg's raw and normalised score and contribution (and the ranker's top features).")
@JSON_OPTION
@click.pass_context
def rerank(ctx: click.Context, query: str, index_dir: str, candidates_path: str, field_specs: tuple[str, ...],
           intent_model: str | None, policy: str | None, fusion: str | None,
           alpha: float | None, normalization: str | None, rrf_k: float | None, engine_weight: float,
           ranker: str | None, explain: bool, as_json: bool) -> None:
    """Re-rank another engine's results for QUERY (scoring only those candidates)."""
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx, search=dict(intent_model=intent_model, policy=policy)))
    fields = _run(lambda: parse_fields(field_specs))
    items = _run(lambda: read_candidates(candidates_path))
    results = _run(lambda: Client(index_dir, settings=settings).rerank(
        query, items, fusion=fusion, alpha=alpha, normalization=normalization, rrf_k=rrf_k, explain=explain,
        engine_weight=engine_weight, fields=fields, ranker=ranker))
    _emit(as_json, results.to_dict(), format_results(results, explain))


# -- eval -------------------------------------------------------------------------------------------
@main.command("eval")
@INDEX_OPTION
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Queries: JSONL with `id` and `text`, or TSV id<TAB>text.")
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Judgments: TSV query_id<TAB>product_id<TAB>grade (with header) or TREC qrels.")
@click.option("--mode", type=click.Choice(["corpus", "pool"]), default="corpus", show_default=True,
              help="corpus: search the whole catalog; pool: re-rank each query's judged products.")
@click.option("--run", "runs", multiple=True, type=click.Choice(["hybrid", "fusion", "ranker", "lexical", "dense"]),
              help="Which rankings to evaluate (repeatable; default hybrid). fusion: hybrid without the learned"
                   " ranker; ranker: hybrid with it (--ranker or search.ranker). The first run is the baseline.")
@click.option("--trec", "trec_runs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also evaluate an external TREC run file (repeatable; named by its file name).")
@fusion_options
@RANKER_OPTION
@click.option("--metric", "metrics", multiple=True,
              help="A ranx metric, e.g. ndcg@10, recall@100, mrr, map@100, precision@5 (repeatable;"
                   " default ndcg@10, recall@100, mrr).")
@click.option("--stat-test", type=click.Choice(["student", "fisher", "tukey"]), default="student", show_default=True,
              help="Paired significance test between runs (ranx compare).")
@click.option("--max-p", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="A difference is marked significant below this p-value.")
@click.option("--per-query", is_flag=True, help="Also print each query's metric values per run.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N judged queries.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Write TREC run files here.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@JSON_OPTION
@click.pass_context
def eval_command(ctx: click.Context, index_dir: str, queries: str, qrels: str, mode: str, runs: tuple[str, ...],
                 trec_runs: tuple[str, ...], intent_model: str | None, policy: str | None, fusion: str | None,
                 alpha: float | None, normalization: str | None, rrf_k: float | None, ranker: str | None,
                 metrics: tuple[str, ...], stat_test: str, max_p: float, per_query: bool, limit: int | None,
                 run_dir: str | None, progress: bool | None, as_json: bool) -> None:
    """Evaluate runs over judged queries, with paired significance tests between them.

    \b
    Compare the learned ranker with plain fusion and an external engine's run:
      shopfusion eval --index DIR --queries q.jsonl --qrels j.tsv --run fusion --run ranker \\
          --ranker models/ranker --trec other.trec --metric ndcg@10 --metric mrr
    """
    from shopfusion.client import Client
    from shopfusion.evaluation import load_qrels, load_queries, load_trec_run

    settings = _run(lambda: _settings(ctx, search=dict(intent_model=intent_model, policy=policy)))
    query_map = _run(lambda: load_queries(queries))
    judgments = _run(lambda: load_qrels(qrels))
    from pathlib import Path

    external = {Path(path).name.split(".")[0] or Path(path).name: _run(lambda p=path: load_trec_run(p))
                for path in trec_runs}
    if limit:
        query_map = dict(list((q, t) for q, t in query_map.items() if q in judgments)[:limit])
    show = sys.stderr.isatty() if progress is None else progress
    options: dict[str, Any] = {key: v for key, v in dict(fusion=fusion, alpha=alpha, normalization=normalization,
                                         rrf_k=rrf_k, ranker=ranker).items() if v is not None}
    report = _run(lambda: Client(index_dir, settings=settings).evaluate(
        query_map, judgments, mode=mode, runs=runs or (() if external else ("hybrid",)),  # type: ignore[arg-type]
        run_dir=run_dir, progress=show, metrics=list(metrics) or None, external=external, per_query=per_query,
        stat_test=stat_test, max_p=max_p, **options))
    _emit(as_json, report, format_evaluation(report))


def format_evaluation(report: dict[str, Any]) -> str:
    """The metric table (significance against the first run marked), then per-query values if present."""
    names = list(report["runs"])
    metrics = list(report["metrics"])
    comparisons = report.get("comparisons", {})
    p_values = comparisons.get("p_values", {})
    max_p = comparisons.get("max_p", 0.01)
    width = max([len(n) for n in names] + [8])
    lines = [f"{report['queries']} judged queries, {report['mode']} mode; paired {comparisons.get('stat_test')}"
             f" test against {names[0]!r} (* p < {max_p:g})"]
    lines.append(f"{'run':<{width}} " + " ".join(f"{m:>18}" for m in metrics))
    base = report["runs"][names[0]]
    for name in names:
        cells = []
        for metric in metrics:
            value = report["runs"][name][metric]
            cell = f"{value:.4f}"
            if name != names[0]:
                p = p_values.get(name, {}).get(names[0], {}).get(metric)
                delta = value - base[metric]
                mark = "*" if p is not None and p < max_p else " "
                cell += f" {delta:+.4f}{mark}" + ("" if p is None else f" p={p:.1g}")
            cells.append(f"{cell:>18}" if name == names[0] else cell)
        lines.append(f"{name:<{width}} " + "  ".join(cells))
    models = report.get("models", {})
    index = report.get("setup", {}).get("index", {})
    intent = models.get("intent_model") or {}
    lines.append(f"index {index.get('path', '')} ({models.get('index_version')}), encoder {models.get('encoder')},"
                 f" lexical {index.get('lexical')}; intent model {intent.get('id') if isinstance(intent, dict) else intent},"
                 f" policy {models.get('policy')}" + (f"; ranker {models['ranker']['path']}" if models.get("ranker") else ""))
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    per_query = report.get("per_query")
    if per_query:
        lines.append("")
        lines.append("query\t" + "\t".join(f"{name}:{metric}" for name in names for metric in metrics))
        queries = sorted({q for values in per_query[names[0]].values() for q in values})
        for qid in queries:
            lines.append(qid + "\t" + "\t".join(f"{per_query[name][metric].get(qid, 0.0):.4f}"
                                                  for name in names for metric in metrics))
    return "\n".join(lines)


# -- verify, versions, rollback ---------------------------------------------------------------------
@main.command()
@INDEX_OPTION
@click.option("--repair", is_flag=True,
              help="Rebuild what is damaged as a new version (from the product store and the catalogs).")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also re-encode N random products and compare them with their stored vectors.")
@click.option("--progress/--no-progress", default=None, help="Progress bars while repairing (default: on a terminal).")
@JSON_OPTION
@click.pass_context
def verify(ctx: click.Context, index_dir: str, repair: bool, sample: int, progress: bool | None,
           as_json: bool) -> None:
    """Check the live version: file checksums, product and vector integrity, id maps, counts.

    Exit 1 when anything is damaged or drifted (each problem is named). With --repair, the damaged parts
    are rebuilt into a new version and the exit code says whether the index is now sound.
    """
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx))
    client = Client(index_dir, settings=settings)
    if repair:
        show = sys.stderr.isatty() if progress is None else progress
        repaired = _run(lambda: client.repair(progress=show))
        text = format_verify(repaired.before, index_dir, "before repair")
        if repaired.restored_manifest:
            text += f"\n  manifest.json restored to {repaired.restored_manifest}"
        if repaired.summary is not None:
            text += "\n" + format_summary(repaired.summary, "the intact parts", index_dir)
        text += "\n" + format_verify(repaired.after, index_dir, "after repair")
        _emit(as_json, repaired.to_dict(), text)
        ok = repaired.ok
    else:
        report = _run(lambda: client.verify(sample=sample))
        _emit(as_json, report.to_dict(), format_verify(report, index_dir))
        ok = report.ok
    if not ok:
        sys.exit(1)


def format_verify(report: Any, index_dir: str, label: str = "") -> str:
    text = f"{index_dir} ({report.version or '?'})" + (f" {label}" if label else "") + ": " + (
        "ok" if report.ok else "DAMAGED or DRIFTED")
    if report.counts:
        text += "\n  counts: " + ", ".join(f"{k} {v}" for k, v in report.counts.items())
    text += "".join(f"\n  - {problem}" for problem in report.problems)
    text += "".join(f"\n  note: {note}" for note in report.notes)
    return text


@main.command()
@INDEX_OPTION
@JSON_OPTION
def versions(index_dir: str, as_json: bool) -> None:
    """List the kept versions of an index (newest first) with counts and dates."""
    from indexer.versions import list_versions

    found = _run(lambda: list_versions(index_dir))
    lines = [f"{'':2}{'version':<9} {'products':>9}  {'created (UTC)':<25} {'lexical':<14} model"]
    for v in found:
        d = v.to_dict()
        lines.append(f"{'*' if v.live else ' ':2}{v.version:<9} {'-' if v.products is None else v.products:>9}  "
                     f"{d['created'] or '-':<25} {v.lexical or '-':<14} {v.model or v.problem}"
                     + (f"\n{'':12}vectors: {v.vector}" if v.vector else ""))
    _emit(as_json, {"index": index_dir, "versions": [v.to_dict() for v in found]}, "\n".join(lines))


@main.command()
@INDEX_OPTION
@click.option("--to", "target", help="Version to switch to (default: the one before the live one).")
@JSON_OPTION
@click.pass_context
def rollback(ctx: click.Context, index_dir: str, target: str | None, as_json: bool) -> None:
    """Switch the index back to a kept version, atomically (both legs: the Elasticsearch alias follows)."""
    from shopfusion.client import Client

    settings = _run(lambda: _settings(ctx))
    manifest = _run(lambda: Client(index_dir, settings=settings).rollback(target))
    _emit(as_json, {"index": index_dir, "version": manifest.version, "products": manifest.counts.get("products")},
          f"{index_dir} is now at {manifest.version} ({manifest.counts.get('products')} products)")


# -- worker -----------------------------------------------------------------------------------------
@main.command()
@click.option("--concurrency", type=click.IntRange(min=1), help="Worker processes (default: celery.concurrency).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, loglevel: str) -> None:
    """Start a Celery worker that embeds catalog batches (needs the `celery` extra and Redis)."""
    settings = _run(lambda: _settings(ctx))

    def start() -> None:
        from shopfusion.errors import require

        require("celery", "celery")
        from workers.worker import run_worker

        run_worker(settings.celery, concurrency=concurrency or settings.celery.concurrency, loglevel=loglevel)

    _run(start)


# -- serve ------------------------------------------------------------------------------------------
@main.command()
@INDEX_OPTION
@click.option("--host", help="Address to listen on (default service.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default service.port, 8000).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Server processes, each with its own copy of the index and model (default service.workers, 1);"
                   " on N cores, N workers serve more requests/s than one (Python runs one thread at a time).")
@click.option("--threads", type=click.IntRange(min=0),
              help="Request threads per worker (default service.threads, 0 = one per CPU core; 4 per core with"
                   " Elasticsearch).")
@click.option("--api-key-env", metavar="VAR",
              help="Read the bearer API key from this environment variable (default SHOPFUSION_SERVICE_API_KEY).")
@click.option("--log-queries", is_flag=True, default=None, help="Put query text in the access log (off by default).")
@click.pass_context
def serve(ctx: click.Context, index_dir: str, host: str | None, port: int | None, workers: int | None,
          threads: int | None, api_key_env: str | None, log_queries: bool | None) -> None:
    """Serve search and re-ranking over HTTP: POST /search, POST /rerank, GET /health, /ready, /metrics.

    The index and the model load once per worker; a version published by `shopfusion index` is picked up
    without a restart. OpenAPI at /openapi.json, interactive docs at /docs. Needs the `serve` extra.
    """
    import os

    def key_from_env() -> str | None:
        if not api_key_env:
            return None
        value = os.environ.get(api_key_env)
        if not value:
            from shopfusion.errors import ConfigError

            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
        return value

    api_key = _run(key_from_env)
    settings = _run(lambda: _settings(ctx, service=dict(host=host, port=port, workers=workers, threads=threads,
                                                        api_key=api_key, log_queries=log_queries)))

    def start() -> None:
        from shopfusion.service.server import serve as run_server

        run_server(index_dir, settings, config=ctx.obj.get("config"))

    _run(start)


# -- config -----------------------------------------------------------------------------------------
@main.command("config")
@JSON_OPTION
@click.pass_context
def config_command(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings and where each value comes from (default, config file, environment),
    credentials left out."""
    settings = _run(lambda: _settings(ctx))
    described = settings.described()
    lines = []
    for section, keys in described.items():
        lines.append(f"[{section}]")
        for key, entry in keys.items():
            source = "" if entry["source"] == "default" else f"  # {entry['source']}"
            lines.append(f"{key} = {json.dumps(entry['value'], default=str)}{source}")
        lines.append("")
    _emit(as_json, described, "\n".join(lines).rstrip())


if __name__ == "__main__":  # pragma: no cover
    main()
