"""Fixtures of the trainer tests: tiny data the tests make and a tiny randomly initialised transformer
(built in-test, never downloaded), so the whole folder runs in well under a minute on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ["tea", "coffee", "green", "black", "milk", "pan", "steel", "iron", "pot", "drill", "saw", "cordless", "hammer", "soap", "shampoo", "oil", "rice", "salt", "sugar", "red", "blue", "big", "small", "pack", "kg", "ml", "brand", "fresh", "organic", "juice", "chips", "bread"]


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-dim BERT with a word-level vocabulary, saved as a sentence-transformers directory."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(10)]]
    (raw / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(str(raw))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(raw))
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=16), Pooling(32, "mean")],
                                device="cpu")
    out = tmp_path_factory.mktemp("tiny-st")
    model.save(str(out), safe_serialization=True)
    return out


@pytest.fixture
def make_examples():  # type: ignore[no-untyped-def]
    return toy_examples


def toy_examples(domain: str = "kitchen", per_label: int = 6) -> list:
    """Two or three separable classes of short product titles."""
    from trainer.domains import LabeledText

    classes = {"kitchen": {"tea": "green tea black tea milk", "pan": "steel pan iron pot", "oil": "oil rice salt"},
               "tools": {"drill": "cordless drill", "saw": "saw hammer"},
               "care": {"soap": "soap", "shampoo": "shampoo"}}[domain]
    out = []
    for label, words in classes.items():
        tokens = words.split()
        for i in range(per_label):
            out.append(LabeledText(f"{tokens[i % len(tokens)]} {tokens[(i + 1) % len(tokens)]} {i}", label, domain))
    return out
