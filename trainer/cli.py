"""`shopfusion train ...`: a thin click layer over the trainer API.

    train intent   --data queries.jsonl --target banking --method l2sp --k 10 --output models/banking
    train category --catalog products.jsonl --target Beverages --method head --output models/bev
    train encoder  --catalog products.jsonl --queries queries.jsonl --qrels qrels.tsv --output models/enc
    train adapt    --catalog target/products.jsonl --base models/enc --output models/enc-target

Heavy modules (torch, sentence-transformers) are imported inside the commands, so `--help` is instant.
Every command prints a summary, or JSON with `--json`; errors are `TrainingError`s with a fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

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


def _classifier_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `intent` and `category` (one definition, not two copies)."""
    options = [
        click.option("--target", required=True, help="the domain to train (held out from the source)."),
        click.option("--method", type=click.Choice(METHODS), default="head", show_default=True),
        click.option("--k", type=int, default=None, help="labelled examples per class (default: all)."),
        click.option("--test-per-label", type=int, default=5, show_default=True,
                     help="held-out examples per class for the reported metrics."),
        click.option("--model", "model_path", default="default", show_default=True,
                     help="sentence-transformers directory of the shared encoder."),
        click.option("--head-steps", type=int, default=300, show_default=True),
        click.option("--adapt-steps", type=int, default=100, show_default=True),
        click.option("--source-steps", type=int, default=0, show_default=True,
                     help="multi-task steps on the source domains before adapting."),
        click.option("--da-weight", type=float, default=0.1, show_default=True, help="lambda of L_DA."),
        click.option("--l2sp", "l2sp_strength", type=float, default=0.01, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False)),
        click.option("--resume", is_flag=True, help="continue from the latest checkpoint in --output."),
        click.option("--json", "as_json", is_flag=True, help="machine-readable output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _train_classifier(examples: list[Any], data_name: str, **opts: Any) -> dict[str, Any]:
    from trainer.artifacts import ModelCard, save_classifier
    from trainer.domains import kshot_split, leave_one_out
    from trainer.evaluators import ClassificationEvaluator
    from trainer.intent_trainer import IntentTrainer, TrainingArguments
    from trainer.models import MultiTaskClassifier, TextEncoder

    source, target = leave_one_out(examples, opts["target"])
    split = kshot_split(target, opts["k"], test_per_label=opts["test_per_label"], seed=opts["seed"])
    args = TrainingArguments(
        method=opts["method"], head_steps=opts["head_steps"], adapt_steps=opts["adapt_steps"],
        source_steps=opts["source_steps"], da_weight=opts["da_weight"], l2sp_strength=opts["l2sp_strength"],
        seed=opts["seed"], output_dir=opts["output_dir"] + "/checkpoints", resume=opts["resume"],
    )
    model = MultiTaskClassifier(TextEncoder.from_path(opts["model_path"], max_seq_length=args.max_seq_length))
    evaluator = ClassificationEvaluator([e.text for e in split.test], [e.label for e in split.test],
                                        opts["target"])
    out = IntentTrainer(model, args, target=opts["target"], train=split.train, source=source,
                        unlabeled=split.unlabeled, evaluator=evaluator).train()
    card = ModelCard(method=opts["method"], params=args.to_dict(), metrics=out.metrics,
                     data=[f"{data_name}: target {opts['target']!r}, k={opts['k'] or 'all'}"
                           f" ({len(split.train)} labelled), source {len(source)} examples"])
    path = save_classifier(model, opts["output_dir"], card)
    return {"model": str(path), "phases": out.phases, "metrics": out.metrics}


@click.group("train")
def train() -> None:
    """Train and adapt the dual encoder and the intent / category models."""


@train.command("intent")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="queries.jsonl with `text`, `intent` and `domain` (CLINC150 layout).")
@_classifier_options
def intent_command(data: str, as_json: bool, **opts: Any) -> None:
    """Intent model for one domain, transferred from the others."""
    from trainer.datasets import intent_examples

    _print(_train_classifier(intent_examples(data), data, **opts), as_json)


@train.command("category")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False),
              help="products.jsonl whose category_path roots are the domains.")
@_classifier_options
def category_command(catalog: str, as_json: bool, **opts: Any) -> None:
    """Leaf-type classifier for one top-level category, transferred from the others."""
    from trainer.datasets import category_examples, load_products

    _print(_train_classifier(category_examples(load_products(catalog)), catalog, **opts), as_json)


def _encoder_options(l2sp_default: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return lambda func: _add_encoder_options(func, l2sp_default)


def _add_encoder_options(func: Callable[..., Any], l2sp_default: float) -> Callable[..., Any]:
    options = [
        click.option("--base", default="default", show_default=True, help="encoder to start from."),
        click.option("--steps", type=int, default=200, show_default=True),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", "learning_rate", type=float, default=2e-5, show_default=True),
        click.option("--l2sp", "l2sp_strength", type=float, default=l2sp_default, show_default=True,
                     help="lambda of ||theta - theta_source||^2."),
        click.option("--max-seq-length", type=int, default=64, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False)),
        click.option("--resume", is_flag=True),
        click.option("--json", "as_json", is_flag=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _fit_encoder(examples: list[Any], method: str, data: list[str], loss: str, opts: dict[str, Any]) -> dict:
    from trainer.artifacts import ModelCard, save_encoder
    from trainer.encoder_trainer import EncoderTrainer, EncoderTrainingArguments
    from trainer.models import TextEncoder

    args = EncoderTrainingArguments(
        loss=loss, steps=opts["steps"], batch_size=opts["batch_size"],  # type: ignore[arg-type]
        learning_rate=opts["learning_rate"], l2sp_strength=opts["l2sp_strength"],
        max_seq_length=opts["max_seq_length"], seed=opts["seed"],
        output_dir=opts["output_dir"] + "/checkpoints", resume=opts["resume"],
    )
    encoder = TextEncoder.from_path(opts["base"], max_seq_length=args.max_seq_length)
    out = EncoderTrainer(encoder, args, examples).train()
    card = ModelCard(method=method, data=data, params={**args.to_dict(), "base": opts["base"]},
                     metrics={"final_loss": out.history[-1]["loss"]})
    path = save_encoder(encoder, opts["output_dir"], card)
    return {"model": str(path), "examples": len(examples), "final_loss": out.history[-1]["loss"]}


@train.command("encoder")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--positive-grade", type=float, default=2.5, show_default=True,
              help="judgments at or above this grade are positives.")
@click.option("--distill", is_flag=True, help="MarginMSE from a BM25 + dense ensemble teacher.")
@_encoder_options(l2sp_default=0.0)
def encoder_command(catalog: str, queries: str, qrels: str, positive_grade: float, distill: bool,
                    as_json: bool, **opts: Any) -> None:
    """Fine-tune the dual encoder on judged (query, product) pairs."""
    from shopfusion.evaluation import load_queries
    from trainer.datasets import document_text, load_products, load_qrels
    from trainer.encoder_trainer import EnsembleTeacher, distillation_examples, examples_from_judgments
    from trainer.mining import BM25

    documents = {p.id: document_text(p) for p in load_products(catalog)}
    qs, judged = load_queries(queries), load_qrels(qrels)
    bm25 = BM25().fit(list(documents.values()), list(documents))
    if distill:
        from shopfusion.encoders import load_encoder

        teacher = EnsembleTeacher(bm25, load_encoder(opts["base"]).encode)
        examples = distillation_examples(qs, judged, documents, teacher, seed=opts["seed"])
    else:
        examples = examples_from_judgments(qs, judged, documents, positive_grade=positive_grade, bm25=bm25,
                                           seed=opts["seed"])
    method = "distillation (MarginMSE)" if distill else "contrastive (in-batch + BM25 hard negatives)"
    result = _fit_encoder(examples, method, [catalog, queries, qrels],
                          "margin_mse" if distill else "contrastive", opts)
    _print(result, as_json)


@train.command("adapt")
@click.option("--catalog", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the target catalog (no labels needed).")
@click.option("--per-product", type=int, default=1, show_default=True, help="pseudo-queries per product.")
@_encoder_options(l2sp_default=0.01)
def adapt_command(catalog: str, per_product: int, as_json: bool, **opts: Any) -> None:
    """Adapt the dual encoder to a new catalog without labels (pseudo-queries + L2-SP)."""
    from trainer.datasets import document_text, load_products
    from trainer.encoder_trainer import examples_from_pseudo_queries
    from trainer.mining import BM25

    products = load_products(catalog)
    documents = {p.id: document_text(p) for p in products}
    bm25 = BM25().fit(list(documents.values()), list(documents))
    examples = examples_from_pseudo_queries(products, documents, per_product=per_product, bm25=bm25,
                                            seed=opts["seed"])
    result = _fit_encoder(examples, "unsupervised adaptation (pseudo-queries + L2-SP)", [catalog],
                          "contrastive", opts)
    _print(result, as_json)


def _mount_policy_command() -> None:
    """`train policy` (per-intent fusion weights) lives with the ranker; mount it here when present."""
    try:
        from ranker.policy_cli import policy
    except ImportError:  # the ranker package is optional for the trainer
        return
    train.add_command(policy)


_mount_policy_command()


from trainer.ranker_cli import ranker as _ranker_command  # noqa: E402  (`train ranker`, issue 10)

train.add_command(_ranker_command)
