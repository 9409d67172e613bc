"""Our cross-entropy, and the head fused with it, against PyTorch's: same loss, same gradients, in every
chunking, with ignored targets and with soft-capped logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanugpt.ops.cpu_cross_entropy import ChunkedCrossEntropy, LinearCrossEntropy
from nanugpt.ops.cross_entropy import KernelSizes, cross_entropy, linear_cross_entropy, soft_cap
from nanugpt.optim.losses import AnswerLoss, LastPositionLoss, Loss

ALWAYS_CHUNKED = KernelSizes(cpu_chunked_from=0)  # small logits take the CPU kernels too


@pytest.mark.parametrize("chunk_elements", [7, 64, 1 << 20])  # many chunks with a ragged last one; one chunk
def test_cross_entropy_matches_pytorch(chunk_elements: int) -> None:
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 9, 11)).requires_grad_()
    targets = torch.randint(0, 11, (2, 9))
    targets[0, :4] = -100  # ignored positions
    ours = cross_entropy(logits, targets, sizes=KernelSizes(cpu_chunked_from=0, chunk_elements=chunk_elements))
    assert "ChunkedCrossEntropy" in type(ours.grad_fn).__name__
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
    assert torch.autograd.gradcheck(lambda x: ChunkedCrossEntropy.apply(x, targets, -1, 7), (logits,))


def test_cross_entropy_of_half_precision_logits_is_computed_in_float32() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 50).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 50, (4, 3))
    loss = cross_entropy(logits, targets, sizes=ALWAYS_CHUNKED)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, F.cross_entropy(logits.float().view(-1, 50), targets.view(-1)))


def test_cross_entropy_with_every_target_ignored_is_nan_like_pytorch() -> None:
    logits, targets = torch.randn(3, 4), torch.full((3,), -100)
    assert cross_entropy(logits, targets, sizes=ALWAYS_CHUNKED).isnan() and F.cross_entropy(logits, targets).isnan()


def reference_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, cap: float | None
) -> torch.Tensor:
    logits = soft_cap(hidden @ weight.t(), cap)
    return F.cross_entropy(logits.reshape(-1, weight.size(0)), targets.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("cap", [None, 2.0])
@pytest.mark.parametrize("chunk_elements", [50, 1 << 20])  # 5 rows per chunk with a ragged last one; one chunk
def test_linear_cross_entropy_matches_pytorch(chunk_elements: int, cap: float | None) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 13, 6, requires_grad=True)
    weight = torch.randn(10, 6, requires_grad=True)
    targets = torch.randint(0, 10, (2, 13))
    targets[1, 5:9] = -100
    ours = linear_cross_entropy(
        hidden, weight, targets, cap=cap, sizes=KernelSizes(cpu_chunked_from=0, head_chunk_elements=chunk_elements)
    )
    assert ours.grad_fn is not None and "LinearCrossEntropy" in type(ours.grad_fn).__name__
    (3 * ours).backward()  # a d loss other than 1 reaches both gradients
    ours_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = reference_linear_cross_entropy(hidden, weight, targets, cap)
    (3 * reference).backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_grads, (hidden.grad, weight.grad))
    assert ours_grads[0][1, 5:9].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.parametrize("cap", [None, 1.5])
def test_linear_cross_entropy_gradient_is_exact(cap: float | None) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, -100, 2, 2, 1, 3])
    assert torch.autograd.gradcheck(
        lambda h, w: LinearCrossEntropy.apply(h, w, targets, -100, cap, True, 12), (hidden, weight)
    )  # 3 rows a chunk


def test_linear_cross_entropy_without_gradients() -> None:
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(9, 4), torch.randn(20, 4, requires_grad=True), torch.randint(0, 20, (9,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets, cap=3.0, sizes=ALWAYS_CHUNKED)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference_linear_cross_entropy(hidden, weight, targets, 3.0))


def test_linear_cross_entropy_leaves_half_precision_and_autocast_to_the_unfused_head() -> None:
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(5, 8), torch.randn(30, 8, requires_grad=True), torch.randint(0, 30, (5,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = linear_cross_entropy(hidden, weight, targets, sizes=ALWAYS_CHUNKED)
        expected = cross_entropy(F.linear(hidden, weight), targets, sizes=ALWAYS_CHUNKED)
    assert "LinearCrossEntropy" not in type(autocast.grad_fn).__name__
    torch.testing.assert_close(autocast, expected)
    half = linear_cross_entropy(hidden.bfloat16(), weight.bfloat16(), targets, sizes=ALWAYS_CHUNKED)
    assert "LinearCrossEntropy" not in type(half.grad_fn).__name__
    expected = cross_entropy(F.linear(hidden.bfloat16(), weight.bfloat16()), targets, sizes=ALWAYS_CHUNKED)
    torch.testing.assert_close(half, expected)


def test_linear_cross_entropy_with_every_target_ignored_is_nan_like_pytorch() -> None:
    hidden, weight = torch.randn(3, 4), torch.randn(6, 4)
    assert linear_cross_entropy(hidden, weight, torch.full((3,), -100), sizes=ALWAYS_CHUNKED).isnan()


@pytest.mark.parametrize("loss_cls", [Loss, LastPositionLoss, AnswerLoss], ids=["autoregressive", "last", "answer"])
@pytest.mark.parametrize("chunked_from", [0, 1 << 30], ids=["fused", "unfused"])
def test_every_loss_from_hidden_equals_the_loss_of_its_logits(loss_cls: type[Loss], chunked_from: int) -> None:
    loss = loss_cls(sizes=KernelSizes(cpu_chunked_from=chunked_from))
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 5, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    targets = torch.randint(0, 16, (3, 5))
    targets[0, :2] = -100
    from_hidden = loss.from_hidden(hidden, weight, targets, cap=4.0)
    assert ("LinearCrossEntropy" in type(from_hidden.grad_fn).__name__) == (chunked_from == 0)
    from_hidden.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    of_logits = loss(soft_cap(hidden @ weight.t(), 4.0), targets)
    of_logits.backward()
    torch.testing.assert_close(from_hidden, of_logits)
    torch.testing.assert_close(grads, (hidden.grad, weight.grad))
