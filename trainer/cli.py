"""`shopfusion train ...`: a thin click layer over the trainer API. Every command writes an artifact
(`shopfusion.artifacts`) that search loads by path; every input is an argument.

    train encoder     --catalog products.jsonl --queries q.jsonl --qrels j.tsv --output models/enc
    train adapt       --catalog target/products.jsonl --base models/enc --output models/enc-target
    train intent-data --clinc clinc150/queries.jsonl --wands wands/queries.jsonl --catalog icecat.jsonl
                      --taxonomy bestbuy/categories.jsonl --output intents.jsonl
    train intent      --data intents.jsonl --method head --output models/intent
    train category    --catalog products.jsonl --target Beverages --method head --output models/bev
    train policy      --index var/idx --queries q.jsonl --qrels j.tsv --output models/policy

Heavy modules (torch, sentence-transformers) are imported inside the commands, so `--help` is instant.
Every command prints a summary, or JSON with `--json`; errors are `ShopfusionError`s with a fix.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shopfusion.errors import ShopfusionError

# The same names as trainer.intent_trainer.METHODS (a test keeps them equal); kept literal so that
# `--help` does not import torch.
METHODS = ("head", "finetune", "l2sp", "dann", "mmd")


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


def _run(action: Callable[[], dict[str, Any]], as_json: bool) -> None:
    """Run a command body: print its result, or the error (with its fix) and exit with its code."""
    try:
        result = action()
    except ShopfusionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    _print(result, as_json)


def _options(options: list[Callable[[Any], Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return apply


_classifier_options = _options([
    click.option("--target", default=None,
                 help="the domain to train (the others are the source); default: the only domain of the data."),
    click.option("--method", type=click.Choice(METHODS), default="head", show_default=True),
    click.option("--k", type=int, default=None, help="labelled examples per class (default: all)."),
    click.option("--test-per-label", type=int, default=5, show_default=True,
                 help="held-out examples per class when the data has no `split: test` records."),
    click.option("--model", "model_path", default="default", show_default=True,
                 help="the encoder: `default` (packaged all-MiniLM-L6-v2) or a sentence-transformers directory;"
                      " use the encoder of the index the model will serve."),
    click.option("--head-steps", type=int, default=300, show_default=True),
    click.option("--adapt-steps", type=int, default=100, show_default=True),
    click.option("--source-steps", type=int, default=0, show_default=True,
                 help="multi-task steps on the source domains before adapting."),
    click.option("--da-weight", type=float, default=0.1, show_default=True, help="lambda of L_DA."),
    click.option("--l2sp", "l2sp_strength", type=float, default=0.01, show_default=True),
    click.option("--service-threshold", type=click.FloatRange(0.5, 1.0), default=0.9, show_default=True,
                 help="how sure the model must be before a query gets the customer-service message."),
    click.option("--brands-from", "brand_catalogs", multiple=True, type=click.Path(exists=True, dir_okay=False),
                 help="catalog(s) whose brands the rule layer treats as `specific` lookups (repeatable)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False)),
    click.option("--resume", is_flag=True, help="continue from the latest checkpoint in --output."),
    click.option("--json", "as_json", is_flag=True, help="machine-readable output."),
])


def _train_classifier(train: list[Any], test: list[Any] | None, data_name: str, task: str,
                      **opts: Any) -> dict[str, Any]:
    """Train the head (and, for every method but `head`, the encoder) of one domain; write the
    intent-model artifact search loads with `search.intent_model = OUTPUT`."""
    from shopfusion.artifacts import ModelCard
    from shopfusion.errors import TrainingError
    from trainer.artifacts import save_intent_model
    from trainer.domains import kshot_split, leave_one_out
    from trainer.evaluators import ClassificationEvaluator
    from trainer.intent_trainer import IntentTrainer, TrainingArguments
    from trainer.models import FrozenEncoder, MultiTaskClassifier, TextEncoder

    domains = sorted({e.domain for e in train})
    target = opts["target"] or (domains[0] if len(domains) == 1 else None)
    if target is None:
        raise TrainingError(f"the data has several domains ({', '.join(domains[:8])}): choose one with --target")
    source, target_examples = leave_one_out(train, target)
    held = [e for e in test or [] if e.domain == target] or None
    split = kshot_split(target_examples, opts["k"], test_per_label=opts["test_per_label"], seed=opts["seed"],
                        test=held)
    args = TrainingArguments(
        method=opts["method"], head_steps=opts["head_steps"], adapt_steps=opts["adapt_steps"],
        source_steps=opts["source_steps"], da_weight=opts["da_weight"], l2sp_strength=opts["l2sp_strength"],
        seed=opts["seed"], output_dir=str(Path(opts["output_dir"]) / "checkpoints"), resume=opts["resume"],
        show_progress=_progress(opts),
    )
    encoder: TextEncoder | FrozenEncoder
    if str(opts["model_path"]).startswith("hash:"):  # the deterministic test encoder: method `head` only
        from shopfusion.encoders import load_encoder

        encoder = FrozenEncoder(load_encoder(opts["model_path"]))
    else:
        encoder = TextEncoder.from_path(opts["model_path"], max_seq_length=args.max_seq_length, normalize=True)
    model = MultiTaskClassifier(encoder)
    evaluator = ClassificationEvaluator([e.text for e in split.test], [e.label for e in split.test], target)
    out = IntentTrainer(model, args, target=target, train=split.train, source=source,
                        unlabeled=split.unlabeled, evaluator=evaluator).train()
    brands = _brands(opts["brand_catalogs"])
    card = ModelCard(kind="intent-model", method=opts["method"], params=args.to_dict(), metrics=out.metrics,
                     data=(f"{data_name}: target {target!r}, k={opts['k'] or 'all'} ({len(split.train)} labelled,"
                           f" {len(split.test)} held out), source {len(source)} examples",),
                     extra={"task": task, "phases": out.phases})
    path = save_intent_model(model, opts["output_dir"], target, card, base=opts["model_path"], brands=brands,
                             service_threshold=opts["service_threshold"])
    return {"model": str(path), "phases": out.phases, "own_encoder": encoder.changed, "metrics": out.metrics,
            "use": f"search.intent_model = \"{path}\""}


def _first_per_label(examples: list[Any], limit: int) -> list[Any]:
    """At most `limit` examples of each label, in the given order."""
    seen: dict[str, int] = {}
    out = []
    for example in examples:
        seen[example.label] = seen.get(example.label, 0) + 1
        if seen[example.label] <= limit:
            out.append(example)
    return out


def _sources_file(data: str) -> str:
    """Where `train intent-data` records the sources of a data file (the intent model's card names them)."""
    return f"{data}.sources.json"


def _data_description(data: str) -> str:
    sources = Path(_sources_file(data))
    if not sources.is_file():
        return data
    info = json.loads(sources.read_text(encoding="utf-8"))
    named = [f"{key} {Path(value).parent.name or value}" for key, value in info.items()
             if key in {"clinc150", "wands", "taxonomy"} and value]
    named += [f"catalog {Path(c).parent.name}" for c in info.get("catalogs", [])]
    return f"{Path(data).name} (`train intent-data` from {', '.join(named)}; {info.get('examples')} examples)"


def _progress(opts: dict[str, Any]) -> bool:
    """Progress bars on a terminal only, never with --json."""
    return sys.stderr.isatty() and not opts.get("as_json")


def _brands(catalogs: tuple[str, ...]) -> list[str]:
    from trainer.datasets import read_products
    from trainer.intent_data import brands_from_products

    products = [p for catalog in catalogs for p in read_products(catalog).products]
    return brands_from_products(products) if products else []


@click.group("train")
def train() -> None:
    """Train and adapt the dual encoder, the intent / category models and fusion policies."""


@train.command("intent")
@click.option("--data", required=True,
              help="`default` (the shipped examples of the intent taxonomy, openly licensed), or a JSONL with"
                   " `text`, `intent` (the label), optional `domain` and `split` (`test` records are held out):"
                   " what `train intent-data` writes, or CLINC150's layout.")
@click.option("--max-test-per-label", type=int, default=None,
              help="cap the held-out examples per label (quick runs).")
@_classifier_options
def intent_command(data: str, max_test_per_label: int | None, as_json: bool, **opts: Any) -> None:
    """The intent model search uses (`search.intent_model = OUTPUT`), for one domain, optionally
    transferred from the others (multi-task, DANN, MMD).

    \b
    Retrain the shipped taxonomy for your own (fine-tuned) encoder:
      shopfusion train intent --data default --model models/enc --output models/intent
    """
    def action() -> dict[str, Any]:
        from shopfusion.errors import TrainingError
        from trainer.datasets import default_intent_examples, intent_splits

        nonlocal data
        if data == "default":
            data = str(default_intent_examples())
        elif not Path(data).is_file():
            raise TrainingError(f"--data {data}: no such file (give `default` or a JSONL of labelled queries)")
        train_part, test_part = intent_splits(data)
        if max_test_per_label is not None:
            test_part = _first_per_label(test_part, max_test_per_label)
        return _train_classifier(train_part, test_part, _data_description(data), "intent", as_json=as_json, **opts)

    _run(action, as_json)


@train.command("category")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False),
              help="a catalog whose category_path roots are the domains.")
@_classifier_options
def category_command(catalog: str, as_json: bool, **opts: Any) -> None:
    """Leaf-type classifier for one top-level category, transferred from the others (same artifact
    format as an intent model: its labels are the leaf types)."""
    def action() -> dict[str, Any]:
        from trainer.datasets import category_examples, read_products

        products = read_products(catalog, rejects=Path(opts["output_dir"]) / "rejects.jsonl").products
        return _train_classifier(category_examples(products), None, catalog, "category", as_json=as_json, **opts)

    _run(action, as_json)


@train.command("intent-data")
@click.option("--clinc", type=click.Path(exists=True, dir_okay=False), help="CLINC150 queries.jsonl (service).")
@click.option("--wands", type=click.Path(exists=True, dir_okay=False), help="WANDS queries.jsonl (product lookups).")
@click.option("--catalog", "catalogs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="product catalog(s) for pseudo-queries and brands (repeatable).")
@click.option("--taxonomy", type=click.Path(exists=True, dir_okay=False),
              help="category tree JSONL with `name` (broad lookups, class names for the seed templates).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="JSONL to write.")
@click.option("--json", "as_json", is_flag=True)
def intent_data_command(clinc: str | None, wands: str | None, catalogs: tuple[str, ...], taxonomy: str | None,
                        seed: int, output: str, as_json: bool) -> None:
    """Assemble labelled examples of the intent taxonomy (service, product lookups by specificity,
    product information, comparison) from openly licensed sources, for `train intent`."""
    def action() -> dict[str, Any]:
        from ranker.intent import LABELS
        from trainer.intent_data import taxonomy_examples

        examples, brands = taxonomy_examples(clinc=clinc, wands=wands, catalogs=catalogs, taxonomy=taxonomy, seed=seed)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8") as handle:
            for example in examples:
                handle.write(json.dumps(example.to_record(), ensure_ascii=False) + "\n")
        counts = {f"{label} ({split})": sum(1 for e in examples if e.label == label and e.split == split)
                  for label in LABELS for split in ("train", "test")}
        sources = {"clinc150": clinc, "wands": wands, "catalogs": list(catalogs), "taxonomy": taxonomy, "seed": seed,
                   "examples": len(examples), "counts": counts}
        Path(_sources_file(output)).write_text(json.dumps(sources, indent=1), encoding="utf-8")
        return {"output": output, "examples": len(examples), "brands": len(brands), "counts": counts}

    _run(action, as_json)


_encoder_options = _options([
    click.option("--base", default="default", show_default=True, help="encoder to start from."),
    click.option("--steps", type=int, default=200, show_default=True),
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--lr", "learning_rate", type=float, default=2e-5, show_default=True),
    click.option("--max-seq-length", type=int, default=64, show_default=True),
    click.option("--rejects", type=click.Path(dir_okay=False),
                 help="where rejected catalog records go (default: OUTPUT/rejects.jsonl)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False)),
    click.option("--resume", is_flag=True),
    click.option("--json", "as_json", is_flag=True),
])


def _catalog(catalog: str, opts: dict[str, Any]) -> Any:
    from trainer.datasets import read_products

    rejects = opts["rejects"] or str(Path(opts["output_dir"]) / "rejects.jsonl")
    return read_products(catalog, rejects=rejects)


def _fit_encoder(examples: list[Any], method: str, data: list[str], loss: str, opts: dict[str, Any],
                 read: Any) -> dict[str, Any]:
    from shopfusion.artifacts import ModelCard
    from trainer.artifacts import encoder_ref, save_encoder
    from trainer.encoder_trainer import EncoderTrainer, EncoderTrainingArguments
    from trainer.models import TextEncoder

    args = EncoderTrainingArguments(
        loss=loss, steps=opts["steps"], batch_size=opts["batch_size"],  # type: ignore[arg-type]
        learning_rate=opts["learning_rate"], l2sp_strength=opts["l2sp_strength"],
        max_seq_length=opts["max_seq_length"], seed=opts["seed"],
        output_dir=str(Path(opts["output_dir"]) / "checkpoints"), resume=opts["resume"], show_progress=_progress(opts),
    )
    encoder = TextEncoder.from_path(opts["base"], max_seq_length=args.max_seq_length)
    out = EncoderTrainer(encoder, args, examples).train()
    card = ModelCard(kind="encoder", encoder=encoder_ref(opts["base"]), method=method, data=tuple(data),
                     params={**args.to_dict(), "base": opts["base"]},
                     metrics={"final_loss": out.history[-1]["loss"], "examples": len(examples)})
    path = save_encoder(encoder, opts["output_dir"], card)
    return {"model": str(path), "examples": len(examples), "final_loss": out.history[-1]["loss"],
            "catalog": {"products": len(read.products), "rejected": read.rejected,
                        "rejects": str(read.rejects_file) if read.rejected else None},
            "next": f"shopfusion index CATALOG --index NEW_DIR --model {path}"}


@train.command("encoder")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the catalog the index holds (read and validated as `shopfusion index` reads it).")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--positive-grade", type=float, default=2.5, show_default=True,
              help="judgments at or above this grade are positives.")
@click.option("--distill", is_flag=True, help="MarginMSE from a BM25 + dense ensemble teacher.")
@click.option("--l2sp", "l2sp_strength", type=float, default=0.0, show_default=True,
              help="lambda of ||theta - theta_source||^2.")
@_encoder_options
def encoder_command(catalog: str, queries: str, qrels: str, positive_grade: float, distill: bool,
                    as_json: bool, **opts: Any) -> None:
    """Fine-tune the dual encoder on judged (query, product) pairs; products are embedded exactly as the
    index embeds them (`Product.embedding_text()`)."""
    def action() -> dict[str, Any]:
        from shopfusion.evaluation import load_qrels, load_queries
        from trainer.encoder_trainer import EnsembleTeacher, distillation_examples, examples_from_judgments
        from trainer.mining import BM25

        opts["as_json"] = as_json
        read = _catalog(catalog, opts)
        documents = {p.id: p.embedding_text() for p in read.products}
        qs, judged = load_queries(queries), load_qrels(qrels)
        bm25 = BM25().fit(list(documents.values()), list(documents))
        if distill:
            from shopfusion.encoders import load_encoder

            teacher = EnsembleTeacher(bm25, load_encoder(opts["base"]).encode)
            examples = distillation_examples(qs, judged, documents, teacher, seed=opts["seed"])
        else:
            examples = examples_from_judgments(qs, judged, documents, positive_grade=positive_grade, bm25=bm25,
                                               seed=opts["seed"])
        method = "distillation (MarginMSE)" if distill else "contrastive (in-batch + hard negatives)"
        return _fit_encoder(examples, method, [catalog, queries, qrels], "margin_mse" if distill else "contrastive",
                            opts, read)

    _run(action, as_json)


@train.command("adapt")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the target catalog (no labels needed).")
@click.option("--per-product", type=int, default=1, show_default=True, help="pseudo-queries per product.")
@click.option("--l2sp", "l2sp_strength", type=float, default=0.01, show_default=True,
              help="lambda of ||theta - theta_source||^2.")
@_encoder_options
def adapt_command(catalog: str, per_product: int, as_json: bool, **opts: Any) -> None:
    """Adapt the dual encoder to a new catalog without labels (pseudo-queries + L2-SP)."""
    def action() -> dict[str, Any]:
        from trainer.encoder_trainer import examples_from_pseudo_queries
        from trainer.mining import BM25

        opts["as_json"] = as_json
        read = _catalog(catalog, opts)
        documents = {p.id: p.embedding_text() for p in read.products}
        bm25 = BM25().fit(list(documents.values()), list(documents))
        examples = examples_from_pseudo_queries(read.products, documents, per_product=per_product, bm25=bm25,
                                                seed=opts["seed"])
        return _fit_encoder(examples, "unsupervised adaptation (pseudo-queries + L2-SP)", [catalog], "contrastive",
                            opts, read)

    _run(action, as_json)


@train.command("policy")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="index directory whose legs the policy fuses.")
@click.option("--queries", "queries_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="validation queries (JSONL `id`, `text`, or TSV).")
@click.option("--qrels", "qrels_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="validation judgments (TSV `query_id product_id grade`, or TREC qrels).")
@click.option("--intent-model", default=None,
              help="the intent model the policy serves with (`default`, `none`, or a directory; default:"
                   " search.intent_model).")
@click.option("--mode", type=click.Choice(["corpus", "pool", "both"]), default="corpus", show_default=True,
              help="which evaluation the rows maximise: whole-catalog search, re-ranking of the judged pool, or both.")
@click.option("--min-queries", type=int, default=50, show_default=True,
              help="queries a policy key needs for a row of its own (else it backs off to its parent).")
@click.option("--min-gain", type=float, default=0.002, show_default=True,
              help="cross-validated nDCG@10 gain over the inherited row a key needs for a row of its own.")
@click.option("--folds", type=int, default=5, show_default=True,
              help="cross-validation blocks for the gain test (1: in-sample).")
@click.option("--depth", type=int, default=200, show_default=True, help="candidates per leg.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), default=None,
              help="keep the legs of every query here (reused when present).")
@click.option("--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for policy.json and its card.")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@click.pass_context
def policy_command(ctx: click.Context, index_dir: str, queries_path: str, qrels_path: str, intent_model: str | None,
                   mode: str, min_queries: int, min_gain: float, folds: int, depth: int, cache_path: str | None,
                   out_dir: str, as_json: bool) -> None:
    """Learn per-intent fusion rows (method, alpha, normalisation) on validation judgments; serve them
    with `search.policy = OUTPUT`."""
    def action() -> dict[str, Any]:
        from ranker.searcher import HybridSearcher
        from shopfusion.artifacts import EncoderRef
        from shopfusion.config import load_settings
        from shopfusion.evaluation import load_qrels, load_queries
        from trainer.policy_trainer import LegCache, collect_legs, learn_policy, save_policy

        config = (ctx.find_root().obj or {}).get("config")
        settings = load_settings(config).replace("search", policy="none", intent_model=intent_model)
        queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
        searcher = HybridSearcher(index_dir, settings)
        try:
            if cache_path and LegCache.exists(cache_path):
                cache = LegCache.load(cache_path)
            else:
                cache = collect_legs(searcher, queries, qrels, depth=depth, progress=not as_json)
                if cache_path:
                    cache.save(cache_path)
            policy = searcher.policy
            learned = learn_policy(cache, qrels, policy, mode=mode, min_queries=min_queries, min_gain=min_gain,
                                   folds=folds, depth=depth, progress=not as_json)
            model = getattr(policy, "model", None)
            path = save_policy(learned, out_dir, encoder=EncoderRef(searcher.manifest.model_id, searcher.manifest.dim),
                               intent_model=model.identity if model is not None else None,
                               data=[f"{queries_path} ({len(cache.ids)} judged queries)", qrels_path,
                                     f"index {index_dir} ({searcher.manifest.version})"])
        finally:
            searcher.close()
        rows = {key: {**row.fusion.to_dict(), **learned.policy.stats.get(key, {})}
                for key, row in learned.policy.rows.items()}
        return {"policy": str(path), "queries": len(cache.ids), "metrics": learned.metrics,
                "default": learned.policy.default.fusion.to_dict(), "rows": rows,
                "use": f"search.policy = \"{Path(out_dir)}\""}

    _run(action, as_json)


from trainer.ranker_cli import ranker as _ranker_command  # noqa: E402  (`train ranker`, issue 10)

train.add_command(_ranker_command)
