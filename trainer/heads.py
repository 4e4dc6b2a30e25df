"""Classification heads: one per domain on top of a shared encoder.

A head maps a sentence embedding to the logits of its domain's labels. `DomainHeads` keeps the heads and
their label lists together, so that a model knows which label each logit means in every domain.

>>> import torch
>>> heads = DomainHeads(dim=8)
>>> heads.add("beverages", ["tea", "coffee"])
>>> heads(torch.zeros(3, 8), "beverages").shape
torch.Size([3, 2])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from shopfusion.errors import TrainingError


class ClassificationHead(nn.Module):
    """Dropout + linear layer (optionally a hidden layer first) from embeddings to label logits."""

    def __init__(self, dim: int, num_labels: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        if num_labels < 2:
            raise TrainingError(f"a classification head needs at least 2 labels, got {num_labels}")
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout)]
            dim = hidden
        layers.append(nn.Linear(dim, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings)


class DomainHeads(nn.Module):
    """One `ClassificationHead` per domain, with the domain's ordered label list."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.dropout = dropout
        self.heads = nn.ModuleDict()
        self.labels: dict[str, list[str]] = {}

    def add(self, domain: str, labels: Sequence[str]) -> None:
        """Create (or replace) the head of `domain` for these labels."""
        labels = list(dict.fromkeys(labels))
        self.heads[_key(domain)] = ClassificationHead(self.dim, len(labels), self.hidden, self.dropout)
        self.labels[domain] = labels

    def __contains__(self, domain: object) -> bool:
        return domain in self.labels

    @property
    def domains(self) -> list[str]:
        return list(self.labels)

    def label_index(self, domain: str, labels: Sequence[str]) -> torch.Tensor:
        """Label names to class indices of `domain`'s head; an unknown label is a `TrainingError`."""
        known = {label: i for i, label in enumerate(self._labels(domain))}
        try:
            return torch.tensor([known[label] for label in labels], dtype=torch.long)
        except KeyError as exc:
            raise TrainingError(
                f"unknown label {exc.args[0]!r} for domain {domain!r}; its labels are: "
                f"{', '.join(known)[:300]}"
            ) from exc

    def forward(self, embeddings: torch.Tensor, domain: str) -> torch.Tensor:
        self._labels(domain)
        return self.heads[_key(domain)](embeddings)

    def _labels(self, domain: str) -> list[str]:
        if domain not in self.labels:
            raise TrainingError(
                f"no head for domain {domain!r}; known domains: {', '.join(self.labels) or '(none)'}"
            )
        return self.labels[domain]


def _key(domain: str) -> str:
    """ModuleDict keys may not contain dots; domain names (`Fruits & Vegetables`) may."""
    digest = hashlib.sha1(domain.encode("utf-8")).hexdigest()[:8]
    return "d_" + "".join(ch if ch.isalnum() else "_" for ch in domain)[:40] + "_" + digest
