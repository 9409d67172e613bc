"""The output head during decoding: the logits of one new position per sequence, a kernel chosen by device.

A decoding step multiplies a few rows (one per sequence) by the whole (vocab, C) head weight, the
largest matrix of a small model. On CPU in float32, MKL runs ``F.linear``'s ``h @ W.T`` for a few rows,
and its one-row (matrix-vector) path, much slower than ``(W @ h.T).T`` with at least two rows, so
``head_logits`` computes that, a lone row padded to two. The results are the same up to float
rounding. Other devices and dtypes use ``F.linear``. The gain is measured by ``bench/generation.py``.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F

from nanugpt.ops.cross_entropy import soft_cap


class HeadKernel(enum.Enum):
    """Which product computes a decoding step's logits."""

    LINEAR = "linear"  # F.linear(h, W): PyTorch's kernel for the device
    CPU_TRANSPOSED = "cpu_transposed"  # (W @ h.T).T, at least two rows: CPU float32


def choose_head_kernel(device_type: str, dtype: torch.dtype) -> HeadKernel:
    """The head product of a decoding step: the CPU one only for float32 on CPU."""
    return HeadKernel.CPU_TRANSPOSED if device_type == "cpu" and dtype == torch.float32 else HeadKernel.LINEAR


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Logits (rows, V) of hidden states (rows, C) through a head ``weight`` (V, C), soft-capped at ``cap``
    (None: no cap), with ``choose_head_kernel``'s product."""
    if choose_head_kernel(weight.device.type, weight.dtype) is HeadKernel.LINEAR:
        return soft_cap(F.linear(hidden, weight), cap)
    rows = hidden.size(0)
    if rows == 1:
        hidden = hidden.expand(2, -1).contiguous()
    return soft_cap((weight @ hidden.t()).t()[:rows], cap)
