import pytest
import torch

from shopfusion.errors import TrainingError
from trainer.losses import (
    DANNLoss,
    GradientReversal,
    InBatchContrastiveLoss,
    L2SPPenalty,
    MarginMSELoss,
    MMDLoss,
    TransferObjective,
)


def test_mmd_is_zero_for_equal_samples_and_grows_with_shift() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    mmd = MMDLoss()
    assert float(mmd(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    near = float(mmd(x, torch.randn(64, 8)))
    far = float(mmd(x, torch.randn(64, 8) + 3.0))
    assert far > near > 0


def test_mmd_rejects_empty_and_bad_bandwidths() -> None:
    with pytest.raises(TrainingError):
        MMDLoss()(torch.zeros(0, 4), torch.zeros(2, 4))
    with pytest.raises(TrainingError):
        MMDLoss(bandwidths=(0.0,))


def test_gradient_reversal_flips_and_scales_gradients() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    GradientReversal(alpha=0.5)(x).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))
    y = torch.randn(5, 3, requires_grad=True)
    y.sum().backward()
    assert torch.allclose(y.grad, torch.ones_like(y))


def test_dann_pushes_features_against_the_domain_classifier() -> None:
    torch.manual_seed(0)
    loss = DANNLoss(dim=4, hidden=8)
    source = torch.randn(8, 4, requires_grad=True)
    target = torch.randn(8, 4) + 1
    value = loss(source, target)
    value.backward()
    # the classifier gets ordinary gradients, the features reversed ones
    reference = loss.classifier(source.detach().requires_grad_())
    assert value.item() > 0 and source.grad is not None and reference is not None


def test_l2sp_is_zero_at_source_and_positive_after_a_change() -> None:
    layer = torch.nn.Linear(4, 2)
    penalty = L2SPPenalty(layer.named_parameters(), strength=0.5)
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert float(penalty().detach()) == pytest.approx(0.5 * 8)
    penalty().backward()
    assert torch.allclose(layer.weight.grad, torch.full_like(layer.weight, 1.0))


def test_l2sp_ignores_frozen_parameters_and_rejects_negative_strength() -> None:
    layer = torch.nn.Linear(3, 3)
    layer.bias.requires_grad_(False)
    penalty = L2SPPenalty(layer.named_parameters(), strength=1.0)
    assert list(dict(penalty.named_buffers())) == ["weight"]
    with pytest.raises(TrainingError):
        L2SPPenalty(layer.named_parameters(), strength=-1)


def test_transfer_objective_adds_weighted_adaptation_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    src, tgt = torch.randn(6, 4), torch.randn(6, 4) + 2
    parts = TransferObjective(MMDLoss(), weight=0.5)(logits, labels, src, tgt)
    assert float(parts["loss"]) == pytest.approx(float(parts["ce"] + 0.5 * parts["da"]))
    assert set(TransferObjective()(logits, labels)) == {"ce", "loss"}


def test_contrastive_and_margin_mse_losses() -> None:
    q = torch.eye(4)
    assert float(InBatchContrastiveLoss(scale=20)(q, q)) < 1e-3
    assert float(InBatchContrastiveLoss(scale=20)(q, q.flip(0))) > 1
    n = -q
    assert float(MarginMSELoss()(q, q, n, torch.full((4,), 2.0))) == pytest.approx(0.0, abs=1e-6)
