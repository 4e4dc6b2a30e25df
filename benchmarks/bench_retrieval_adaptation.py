"""Dual-encoder adaptation benchmark: supervised fine-tuning on Home Depot, unsupervised adaptation to
BigBasket.

Experiment `homedepot` (supervised): Home Depot queries are split by a stable hash into train (80%) and
test (20%); `--test-queries` test queries are scored in two modes:
  corpus: rank a corpus of every product judged for those queries plus random distractors
          (`--corpus-size` products in all; the whole 54,667 would take too long to re-embed per model
          on CPU),
  pool:   re-rank only each query's judged products.
Encoders: `untrained` (the packaged all-MiniLM-L6-v2 as is), `contrastive` (in-batch negatives + a hard
negative per pair: a judged-irrelevant product, else a BM25-mined one; grade >= 2.5 is positive),
`contrastive+l2sp`, `distill` (MarginMSE from a BM25 + MiniLM ensemble teacher). Only train queries
are ever used for training.

Experiment `bigbasket` (unsupervised): `source` = the Home Depot `contrastive` encoder (trained here if
missing), `adapted` = source + contrastive training on pseudo-queries built from BigBasket's own product
fields (brand + type, title spans, attribute values) with BM25 hard negatives and L2-SP toward the source
weights; also `adapted-no-l2sp` and the `untrained` MiniLM. Evaluation queries are BigBasket's leaf
category names (products of that leaf: grade 2; same parent category: grade 1), which the pseudo-query
builder never uses; documents are title | brand | description without the category path.

    nice -n 10 python benchmarks/bench_retrieval_adaptation.py --experiment homedepot
    nice -n 10 python benchmarks/bench_retrieval_adaptation.py --experiment bigbasket
    nice -n 10 python benchmarks/bench_retrieval_adaptation.py --report-only

Reads ../shared/data (evaluation only; nothing is copied into the repository). Embeddings and the
trained encoders go to benchmarks/results/cache (gitignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_transfer_common import CACHE, RESULTS, cached_vectors  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT_JSON = RESULTS / "transfer_retrieval.json"


def _test_query(qid: str, test_fraction: float = 0.2) -> bool:
    return int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < test_fraction


def _encode_with(encoder, texts: list[str], name: str | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Normalised embeddings; with a `name`, cached on disk (frozen encoders only)."""
    import torch

    def embed(batch: list[str]) -> np.ndarray:
        return torch.nn.functional.normalize(encoder.embed(batch, 128), dim=-1).cpu().numpy()

    if name is None:
        return embed(texts)
    table = cached_vectors(name, texts, embed)
    return np.stack([table[t] for t in texts])


def _score(encoder, name: str | None, evaluators: dict, doc_texts: list[str]) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    docs = _encode_with(encoder, doc_texts, name and f"{name}_docs")
    out = {}
    for mode, ev in evaluators.items():
        queries = _encode_with(encoder, ev.queries, name and f"{name}_queries")
        out[mode] = ev.score(queries, docs)
    return out


def homedepot(args: argparse.Namespace) -> dict:
    import torch

    from shopfusion.evaluation import load_qrels, load_queries
    from trainer.artifacts import ModelCard, save_encoder
    from trainer.datasets import load_products
    from trainer.encoder_trainer import (
        EncoderTrainer,
        EncoderTrainingArguments,
        EnsembleTeacher,
        distillation_examples,
        examples_from_judgments,
    )
    from trainer.evaluators import RetrievalEvaluator
    from trainer.mining import BM25
    from trainer.models import TextEncoder

    rng = random.Random(args.seed)
    products = load_products(DATA / "homedepot" / "products.jsonl")
    documents = {p.id: p.embedding_text() for p in products}  # what the index embeds
    queries, qrels = load_queries(DATA / "homedepot" / "queries.jsonl"), load_qrels(DATA / "homedepot" / "qrels.tsv")
    test_ids = sorted(q for q in qrels if q in queries and _test_query(q))
    train_ids = [q for q in qrels if q in queries and not _test_query(q)]
    test_ids = [q for q in rng.sample(test_ids, min(args.test_queries, len(test_ids)))
                if any(g > 1.0 for g in qrels[q].values())]
    judged = sorted({d for q in test_ids for d in qrels[q]})
    others = sorted(set(documents) - set(judged))
    corpus = judged + rng.sample(others, max(0, args.corpus_size - len(judged)))
    corpus_docs = {d: documents[d] for d in corpus}
    test_q = {q: queries[q] for q in test_ids}
    evaluators = {mode: RetrievalEvaluator(test_q, {q: qrels[q] for q in test_ids}, corpus_docs, mode=mode)
                  for mode in ("corpus", "pool")}
    doc_texts = list(corpus_docs.values())
    sizes = {"train_queries": len(train_ids), "test_queries": len(test_ids), "corpus": len(corpus),
             "catalog": len(documents)}
    print(f"Home Depot: {sizes}", flush=True)
    results: dict[str, dict] = {}
    base = TextEncoder.from_path("default", max_seq_length=args.max_seq_length)
    start = time.time()
    results["untrained"] = {**_score(base, f"hd_minilm_seq{args.max_seq_length}", evaluators, doc_texts),
                            "seconds": round(time.time() - start, 1)}
    print(f"  untrained {results['untrained']}", flush=True)
    bm25 = BM25().fit(list(documents.values()), list(documents))
    train_q = {q: queries[q] for q in train_ids}
    train_qrels = {q: qrels[q] for q in train_ids}
    for method in args.methods:
        if method not in ("contrastive", "contrastive+l2sp", "distill"):
            continue
        start = time.time()
        encoder = TextEncoder.from_path("default", max_seq_length=args.max_seq_length)
        l2sp = args.l2sp if method.endswith("l2sp") else 0.0
        if method == "distill":
            table_name = f"hd_minilm_seq{args.max_seq_length}_teacher"
            sample = dict(rng.sample(sorted(train_q.items()), min(args.distill_queries, len(train_q))))

            def teacher_encode(texts: list[str], name: str = table_name) -> np.ndarray:
                return _encode_with(base, texts, name)

            teacher = EnsembleTeacher(bm25, teacher_encode, alpha=args.teacher_alpha)
            examples = distillation_examples(sample, train_qrels, documents, teacher, per_query=1,
                                             seed=args.seed)
            loss = "margin_mse"
        else:
            examples = examples_from_judgments(train_q, train_qrels, documents, positive_grade=2.5,
                                               bm25=bm25, seed=args.seed)
            loss = "contrastive"
        targs = EncoderTrainingArguments(loss=loss, steps=args.steps, batch_size=args.batch_size,  # type: ignore[arg-type]
                                         learning_rate=args.lr, l2sp_strength=l2sp,
                                         max_seq_length=args.max_seq_length, seed=args.seed, show_progress=False)
        trainer = EncoderTrainer(encoder, targs, examples)
        trainer.train()
        train_seconds = time.time() - start
        scores = _score(encoder, None, evaluators, doc_texts)
        results[method] = {**scores, "train_examples": len(examples), "train_seconds": round(train_seconds, 1),
                           "seconds": round(time.time() - start, 1)}
        print(f"  {method} {results[method]}", flush=True)
        if method == "contrastive":
            card = ModelCard(method="contrastive: in-batch negatives + BM25/judged hard negatives",
                             data=[f"Home Depot train queries ({len(train_ids)}; stable 80% hash split)",
                                   f"{len(examples)} (query, grade>=2.5 product) pairs"],
                             params=targs.to_dict(), metrics={f"{m}/{k}": v for m, s in scores.items()
                                                              for k, v in s.items()})
            save_encoder(encoder, CACHE / "models" / "hd-contrastive", card)
        del encoder
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"sizes": sizes, "results": results, "config": vars(args)}


def bigbasket(args: argparse.Namespace) -> dict:
    from trainer.artifacts import load_sentence_transformer
    from trainer.datasets import category_name_queries, load_products
    from trainer.encoder_trainer import EncoderTrainer, EncoderTrainingArguments, examples_from_pseudo_queries
    from trainer.evaluators import RetrievalEvaluator
    from trainer.mining import BM25
    from trainer.models import TextEncoder

    source_dir = CACHE / "models" / "hd-contrastive"
    if not (source_dir / "model.safetensors").is_file():
        raise SystemExit("run --experiment homedepot first: it trains the Home Depot source encoder")
    rng = random.Random(args.seed)
    products = load_products(DATA / "bigbasket" / "products.jsonl")
    products = rng.sample(products, min(args.target_catalog_size, len(products)))
    # what an index of these products embeds, without the category path the queries are made from
    documents = {p.id: replace(p, category_path=()).embedding_text() for p in products}
    queries, qrels = category_name_queries(products)
    evaluators = {mode: RetrievalEvaluator(queries, qrels, documents, mode=mode, min_grade=0.0)
                  for mode in ("corpus", "pool")}
    doc_texts = list(documents.values())
    sizes = {"catalog": len(products), "category_queries": len(queries)}
    print(f"BigBasket: {sizes}", flush=True)
    results: dict[str, dict] = {}
    untrained = TextEncoder.from_path("default", max_seq_length=args.max_seq_length)
    results["untrained"] = _score(untrained, f"bb{len(products)}_minilm_seq{args.max_seq_length}", evaluators,
                                  doc_texts)
    print(f"  untrained {results['untrained']}", flush=True)
    source = TextEncoder(load_sentence_transformer(source_dir), max_seq_length=args.max_seq_length)
    results["source (homedepot)"] = _score(source, None, evaluators, doc_texts)
    print(f"  source {results['source (homedepot)']}", flush=True)
    bm25 = BM25().fit(doc_texts, list(documents))
    examples = examples_from_pseudo_queries(products, documents, per_product=1, bm25=bm25, seed=args.seed)
    for name, l2sp in (("adapted (pseudo-queries + l2sp)", args.l2sp), ("adapted-no-l2sp", 0.0)):
        if name.startswith("adapted-no") and "adapted-no-l2sp" not in args.methods:
            continue
        start = time.time()
        encoder = TextEncoder(load_sentence_transformer(source_dir), max_seq_length=args.max_seq_length)
        targs = EncoderTrainingArguments(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                                         l2sp_strength=l2sp, max_seq_length=args.max_seq_length,
                                         seed=args.seed, show_progress=False)
        EncoderTrainer(encoder, targs, examples).train()
        results[name] = {**_score(encoder, None, evaluators, doc_texts), "pseudo_queries": len(examples),
                         "seconds": round(time.time() - start, 1)}
        print(f"  {name} {results[name]}", flush=True)
    return {"sizes": sizes, "results": results, "config": vars(args)}  # no catalog text in results


def report(data: dict) -> str:
    lines = []
    for experiment, block in data.items():
        lines += [f"{experiment}: {block['sizes']}", "",
                  "| encoder | corpus nDCG@10 | corpus Recall@100 | corpus MRR | pool nDCG@10 |",
                  "|---|---|---|---|---|"]
        for name, r in block["results"].items():
            lines.append(f"| {name} | {r['corpus']['ndcg@10']:.4f} | {r['corpus']['recall@100']:.4f} | "
                         f"{r['corpus']['mrr']:.4f} | {r['pool']['ndcg@10']:.4f} |")
        base = block["results"].get("untrained")
        if base:
            for name, r in block["results"].items():
                if name != "untrained":
                    lines.append(f"  {name}: corpus nDCG@10 {100 * (r['corpus']['ndcg@10'] - base['corpus']['ndcg@10']):+.2f}"
                                 " points vs untrained")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 3.8))
    axes = np.atleast_1d(axes)
    for ax, (experiment, block) in zip(axes, data.items(), strict=True):
        names = list(block["results"])
        x = np.arange(len(names))
        for offset, (mode, metric) in enumerate((("corpus", "ndcg@10"), ("corpus", "recall@100"),
                                                 ("pool", "ndcg@10"))):
            ax.bar(x + (offset - 1) * 0.27, [block["results"][n][mode][metric] for n in names], 0.27,
                   label=f"{mode} {metric}")
        ax.set_xticks(x, [n.split(" (")[0] for n in names], rotation=20, fontsize=8)
        ax.set_title(experiment)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = RESULTS / "transfer_retrieval.png"
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=["homedepot", "bigbasket"], action="append")
    parser.add_argument("--methods", nargs="+",
                        default=["untrained", "contrastive", "contrastive+l2sp", "distill", "adapted-no-l2sp"])
    parser.add_argument("--test-queries", type=int, default=300)
    parser.add_argument("--corpus-size", type=int, default=4000)
    parser.add_argument("--target-catalog-size", type=int, default=4000)
    parser.add_argument("--distill-queries", type=int, default=800)
    parser.add_argument("--teacher-alpha", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--l2sp", type=float, default=0.01)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("SHOPFUSION_BENCH_THREADS", "1")))
    if not args.report_only:
        for experiment in args.experiment or ["homedepot", "bigbasket"]:
            block = homedepot(args) if experiment == "homedepot" else bigbasket(args)
            RESULTS.mkdir(parents=True, exist_ok=True)
            part = RESULTS / f"transfer_retrieval_{experiment}.json"
            part.write_text(json.dumps(block, indent=2), encoding="utf-8")
    data = {}
    for experiment in ("homedepot", "bigbasket"):  # one file per experiment, merged for the report
        part = RESULTS / f"transfer_retrieval_{experiment}.json"
        if part.is_file():
            data[experiment] = json.loads(part.read_text(encoding="utf-8"))
    OUT_JSON.write_text(json.dumps(data, indent=2), encoding="utf-8")
    print(report(data))
    print(f"plot: {plot(data)}")


if __name__ == "__main__":
    main()
