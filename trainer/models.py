"""Trainable encoders and the multi-task intent/category model.

- `TextEncoder` wraps a sentence-transformers model as a `torch.nn.Module` from texts to embeddings, with
  explicit freezing (`freeze()`, `unfreeze(top_layers=2)`) so transfer phases say what they train;
- `FrozenEncoder` wraps any `shopfusion.encoders.Encoder` (the hashing encoder, a cached table) that
  cannot be trained: only the `head` method works with it;
- `MultiTaskClassifier` is one shared encoder with one head per domain (`trainer.heads.DomainHeads`).

>>> from shopfusion.encoders import HashingEncoder
>>> model = MultiTaskClassifier(FrozenEncoder(HashingEncoder(16)))
>>> model.heads.add("kitchen", ["mug", "pan"])
>>> model.predict(["steel pan"], "kitchen")[0] in {"mug", "pan"}
True
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shopfusion.errors import TrainingError
from trainer.heads import DomainHeads

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (or as asked), else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TextEncoder(nn.Module):
    """A sentence-transformers model as a trainable module: `forward(texts) -> embeddings`.

    `max_seq_length` caps tokens per text (32 to 64 keeps CPU training feasible). Embeddings are the
    model's pooled output; `normalize=True` L2-normalises them (retrieval uses cosine similarity).
    """

    trainable = True

    def __init__(self, model: Any, max_seq_length: int | None = 64, normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.normalize = normalize
        self.changed = False
        """Set by trainers once a phase has updated the weights (the model then differs from its source)."""

    @classmethod
    def from_path(cls, path: str, *, max_seq_length: int | None = 64, device: str = "auto",
                  normalize: bool = False) -> TextEncoder:
        """Load a local sentence-transformers directory (`default` = the packaged MiniLM), safetensors only.
        `normalize=True` gives the L2-normalised vectors search computes (what intent heads must see)."""
        from trainer.artifacts import load_sentence_transformer

        return cls(load_sentence_transformer(path, device=str(pick_device(device))), max_seq_length, normalize)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        features = self.model.preprocess(list(texts))
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        embeddings = self.model(features)["sentence_embedding"]
        return nn.functional.normalize(embeddings, dim=-1) if self.normalize else embeddings

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings without gradients, in eval mode, batched (restores the previous mode)."""
        was_training = self.training
        self.eval()
        try:
            chunks = [self(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros((0, self.dim), device=self.device)

    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)

    def unfreeze(self, top_layers: int | None = None) -> None:
        """Make the encoder trainable: every parameter (`None`), or only the top `top_layers` transformer
        layers plus anything above them (pooling, dense), keeping embeddings and lower layers frozen."""
        names = [n for n, _ in self.model.named_parameters()]
        depth = 1 + max((int(m.group(1)) for n in names if (m := _LAYER.search(n))), default=-1)
        for name, p in self.model.named_parameters():
            if top_layers is None:
                p.requires_grad_(True)
                continue
            match = _LAYER.search(name)
            if match:
                p.requires_grad_(int(match.group(1)) >= depth - top_layers)
            else:
                p.requires_grad_("embeddings" not in name and top_layers > 0)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Reset every linear, embedding and layer-norm weight in place: the *untrained encoder* baseline
    (same architecture and tokenizer, no pretraining)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    return model


class FrozenEncoder(nn.Module):
    """Any `shopfusion.encoders.Encoder` (numpy in, numpy out) as a frozen module. Only heads train on it."""

    trainable = False
    changed = False

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = np.asarray(self.encoder.encode(list(texts)), dtype=np.float32)
        return torch.from_numpy(vectors).to(self.device)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        return self(texts)

    def freeze(self) -> None:
        return None

    def unfreeze(self, top_layers: int | None = None) -> None:
        raise TrainingError(
            "this encoder cannot be trained (hashing or precomputed vectors): use method `head`, or give a"
            " sentence-transformers model path"
        )

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(())


class MultiTaskClassifier(nn.Module):
    """A shared encoder with one classification head per domain (multi-task learning)."""

    def __init__(self, encoder: TextEncoder | FrozenEncoder, head_hidden: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = DomainHeads(encoder.dim, hidden=head_hidden, dropout=dropout)

    def forward(self, texts: Sequence[str], domain: str) -> torch.Tensor:
        return self.heads(self.encoder(texts), domain)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], domain: str, batch_size: int = 64) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            embeddings = self.encoder.embed(list(texts), batch_size=batch_size)
            probs = torch.softmax(self.heads(embeddings, domain), dim=-1)
        finally:
            self.train(was_training)
        return probs.cpu().numpy()

    def predict(self, texts: Sequence[str], domain: str, batch_size: int = 64) -> list[str]:
        labels = self.heads.labels.get(domain)
        if labels is None:
            raise TrainingError(f"no head for domain {domain!r}; known: {', '.join(self.heads.domains)}")
        probs = self.predict_proba(texts, domain, batch_size)
        return [labels[i] for i in probs.argmax(axis=1)]
