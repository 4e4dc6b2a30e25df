"""Training losses, each a small `torch.nn.Module` handed to a trainer (sentence-transformers style).

- `L2SPPenalty`: `lambda * ||theta - theta_source||^2` over the encoder's parameters (Li et al., 2018);
- `GradientReversal` + `DomainClassifier` = `DANNLoss`: the domain classifier learns to tell source from
  target features while the reversed gradient teaches the encoder to make them indistinguishable;
- `MMDLoss`: maximum mean discrepancy with a sum of Gaussian kernels between source and target features;
- `TransferObjective`: the total `L_CE + lambda * L_DA`;
- `InBatchContrastiveLoss` (multiple negatives ranking with optional hard negatives) and `MarginMSELoss`
  (distillation of a teacher's score margins) for the dual encoder.

>>> import torch
>>> x = torch.randn(16, 8)
>>> float(MMDLoss()(x, x))
0.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shopfusion.errors import TrainingError


class L2SPPenalty(nn.Module):
    """`strength * sum ||theta - theta_source||^2` over the given named parameters (Li et al., 2018).

    The source weights are copied at construction into buffers (so a checkpoint restores them): build
    the penalty *after* choosing what trains and *before* training starts. Only parameters that require
    gradients at construction are anchored.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], strength: float = 0.01) -> None:
        super().__init__()
        if strength < 0:
            raise TrainingError(f"L2-SP strength must be >= 0, got {strength}")
        self.strength = strength
        self._params: dict[str, nn.Parameter] = {}
        for name, param in named_parameters:
            if not param.requires_grad:
                continue
            key = name.replace(".", "__")
            self._params[key] = param
            self.register_buffer(key, param.detach().clone())

    def forward(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for key, param in self._params.items():
            term = (param - getattr(self, key)).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return self.strength * total


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.alpha * grad, None


class GradientReversal(nn.Module):
    """Identity forward; multiplies the gradient by `-alpha` backward (Ganin & Lempitsky, 2015)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.alpha)


class DomainClassifier(nn.Module):
    """A small MLP predicting source (0) versus target (1) from a feature vector."""

    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DANNLoss(nn.Module):
    """Domain-adversarial loss: BCE of the domain classifier on gradient-reversed features."""

    def __init__(self, dim: int, hidden: int = 128, alpha: float = 1.0) -> None:
        super().__init__()
        self.reverse = GradientReversal(alpha)
        self.classifier = DomainClassifier(dim, hidden)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        features = self.reverse(torch.cat([source, target], dim=0))
        logits = self.classifier(features)
        labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels)


class MMDLoss(nn.Module):
    """Biased MMD^2 estimate with a sum of Gaussian kernels at `bandwidths` times the median distance.

    Zero (up to rounding) when both samples are identical; grows as the feature distributions separate.
    """

    def __init__(self, bandwidths: Sequence[float] = (0.5, 1.0, 2.0, 4.0)) -> None:
        super().__init__()
        if not bandwidths or min(bandwidths) <= 0:
            raise TrainingError("MMD bandwidths must be positive numbers")
        self.bandwidths = tuple(bandwidths)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if len(source) == 0 or len(target) == 0:
            raise TrainingError("MMD needs at least one source and one target example per batch")
        x = torch.cat([source, target], dim=0)
        d2 = torch.cdist(x, x).pow(2)
        scale = d2.detach()[d2.detach() > 0].median() if bool((d2.detach() > 0).any()) else d2.new_tensor(1.0)
        kernel = torch.stack([torch.exp(-d2 / (b * scale)) for b in self.bandwidths]).sum(0)
        n = len(source)
        k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
        return (k_ss.mean() + k_tt.mean() - 2 * k_st.mean()).clamp_min(0.0)


class TransferObjective(nn.Module):
    """`L = L_CE + lambda * L_DA`, where `L_DA` is a `DANNLoss` or an `MMDLoss` (or none)."""

    def __init__(self, adaptation: nn.Module | None = None, weight: float = 0.1) -> None:
        super().__init__()
        if weight < 0:
            raise TrainingError(f"adaptation weight lambda must be >= 0, got {weight}")
        self.adaptation = adaptation
        self.weight = weight

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        source_features: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(logits, labels)
        parts = {"ce": ce}
        total = ce
        if self.adaptation is not None and source_features is not None and target_features is not None:
            da = self.adaptation(source_features, target_features)
            parts["da"] = da
            total = total + self.weight * da
        parts["loss"] = total
        return parts


class InBatchContrastiveLoss(nn.Module):
    """Multiple-negatives ranking loss: each query's positive against every other document in the batch,
    plus optional hard negatives (one per query), with cosine similarities scaled by `scale`."""

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(
        self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        docs = positives if negatives is None else torch.cat([positives, negatives], dim=0)
        scores = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T * self.scale
        labels = torch.arange(len(queries), device=scores.device)
        return F.cross_entropy(scores, labels)


class MarginMSELoss(nn.Module):
    """Distillation (Hofstaetter et al., 2020): match the student's margin `s(q,p) - s(q,n)` to the
    teacher's margin with a mean squared error. Student scores are scaled cosine similarities."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(
        self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, teacher_margin: torch.Tensor
    ) -> torch.Tensor:
        q = F.normalize(queries, dim=-1)
        pos = (q * F.normalize(positives, dim=-1)).sum(-1)
        neg = (q * F.normalize(negatives, dim=-1)).sum(-1)
        return F.mse_loss(self.scale * (pos - neg), teacher_margin.to(pos.dtype))
