"""The choice of cross-entropy kernel by device, dtype and size: a GPU run can never take the CPU chunk loops,
and the losses' public entry points really go where ``choose_kernel`` says."""

from __future__ import annotations

import pytest
import torch

from nanugpt.ops.cpu_cross_entropy import chunked_cross_entropy, fused_linear_cross_entropy
from nanugpt.ops.cross_entropy import CPU_CHUNKED_FROM, Kernel, KernelSizes, choose_kernel
from nanugpt.optim.losses import Loss

GPT2_STEP = 16 * 1024 * 50304  # a bf16 GPT-2 step: 16k rows of GPT-2's padded vocabulary
LARGE = CPU_CHUNKED_FROM
SMALL = CPU_CHUNKED_FROM - 1


@pytest.mark.parametrize(
    ("device_type", "dtype", "n_logits", "autocast", "expected"),
    [
        ("cuda", torch.bfloat16, GPT2_STEP, False, Kernel.STANDARD),
        ("cuda", torch.bfloat16, GPT2_STEP, True, Kernel.STANDARD),
        ("cuda", torch.float32, GPT2_STEP, False, Kernel.STANDARD),
        ("cuda", torch.float32, LARGE, False, Kernel.STANDARD),
        ("cpu", torch.float32, LARGE, False, Kernel.CPU_CHUNKED),
        ("cpu", torch.float32, GPT2_STEP, False, Kernel.CPU_CHUNKED),
        ("cpu", torch.float32, SMALL, False, Kernel.STANDARD),
        ("cpu", torch.float32, LARGE, True, Kernel.STANDARD),
        ("cpu", torch.bfloat16, LARGE, False, Kernel.STANDARD),
        ("cpu", torch.float16, GPT2_STEP, False, Kernel.STANDARD),
        ("mps", torch.float32, GPT2_STEP, False, Kernel.STANDARD),
    ],
)
def test_choose_kernel(device_type: str, dtype: torch.dtype, n_logits: int, autocast: bool, expected: Kernel) -> None:
    assert choose_kernel(device_type, dtype, n_logits, autocast) is expected


def test_the_threshold_is_an_argument() -> None:
    assert choose_kernel("cpu", torch.float32, 10, False, cpu_chunked_from=10) is Kernel.CPU_CHUNKED
    assert choose_kernel("cpu", torch.float32, 9, False, cpu_chunked_from=10) is Kernel.STANDARD
    assert choose_kernel("cuda", torch.float32, 10, False, cpu_chunked_from=0) is Kernel.STANDARD


def large_cpu_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 (rows, C) hidden states, a (V, C) head and targets whose rows x V logits reach CPU_CHUNKED_FROM."""
    torch.manual_seed(seed)
    rows, vocab, width = 128, LARGE // 128, 8
    hidden = torch.randn(1, rows, width, requires_grad=True)
    weight = (0.1 * torch.randn(vocab, width)).requires_grad_()
    return hidden, weight, torch.randint(0, vocab, (1, rows))


def test_a_large_float32_loss_on_cpu_runs_the_chunked_kernel() -> None:
    hidden, weight, targets = large_cpu_batch()
    logits = (hidden @ weight.t()).detach().requires_grad_()  # (1, rows, V)
    loss = Loss()(logits, targets)
    assert type(loss.grad_fn).__name__ == "ChunkedCrossEntropyBackward"
    assert torch.equal(loss, chunked_cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)))
    small = Loss()(logits[:, :1], targets[:, :1])  # one row: below the threshold
    assert type(small.grad_fn).__name__ == "NllLossBackward0"


def test_a_large_float32_head_on_cpu_runs_the_fused_kernel_with_the_loss_chunk_size() -> None:
    hidden, weight, targets = large_cpu_batch()
    sizes = KernelSizes(head_chunk_elements=LARGE // 4)  # 4 chunks
    loss = Loss(sizes=sizes).from_hidden(hidden, weight, targets, cap=5.0)
    assert type(loss.grad_fn).__name__ == "LinearCrossEntropyBackward"
    expected = fused_linear_cross_entropy(
        hidden.view(-1, 8), weight, targets.view(-1), cap=5.0, chunk_elements=LARGE // 4
    )
    assert torch.equal(loss, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the standard head
        autocast = Loss().from_hidden(hidden, weight, targets)
    assert "LinearCrossEntropy" not in type(autocast.grad_fn).__name__
