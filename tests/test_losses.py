"""Our cross-entropy against PyTorch's: same loss, same gradient, in every chunking and with ignored targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanugpt import losses
from nanugpt.losses import _CrossEntropy, cross_entropy


@pytest.mark.parametrize("chunk_elements", [7, 64, 1 << 20])  # many chunks with a ragged last one; one chunk
def test_cross_entropy_matches_pytorch(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(losses, "NATIVE_BELOW_ELEMENTS", 0)  # these small logits take our path too
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 9, 11)).requires_grad_()
    targets = torch.randint(0, 11, (2, 9))
    targets[0, :4] = -100  # ignored positions
    ours = cross_entropy(logits, targets)
    ours.backward()
    ours_grad = logits.grad.clone()
    logits.grad = None
    reference = F.cross_entropy(logits.view(-1, 11), targets.view(-1), ignore_index=-100)
    reference.backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_grad, logits.grad)
    assert ours_grad[0, :4].abs().max() == 0  # ignored rows get no gradient


def test_cross_entropy_gradient_is_exact() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 4, -1, 2, 2, 1])
    assert torch.autograd.gradcheck(lambda x: _CrossEntropy.apply(x, targets, -1), (logits,))


def test_cross_entropy_of_half_precision_logits_is_computed_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "NATIVE_BELOW_ELEMENTS", 0)
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 50).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 50, (4, 3))
    loss = cross_entropy(logits, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, F.cross_entropy(logits.float().view(-1, 50), targets.view(-1)))


def test_cross_entropy_with_every_target_ignored_is_nan_like_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "NATIVE_BELOW_ELEMENTS", 0)
    logits, targets = torch.randn(3, 4), torch.full((3,), -100)
    assert cross_entropy(logits, targets).isnan() and F.cross_entropy(logits, targets).isnan()
