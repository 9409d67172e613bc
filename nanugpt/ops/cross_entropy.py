"""The cross-entropy entry points of the losses, and the choice of kernel by device, dtype and size.

``choose_kernel`` is the one place that decides: on CUDA always PyTorch's standard kernels
(``F.cross_entropy``, ``F.linear`` + ``F.cross_entropy``); on CPU the chunked kernels of
``cpu_cross_entropy`` for large float32 logits, the standard ones otherwise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanugpt.ops.cpu_cross_entropy import (
    CHUNK_ELEMENTS,
    HEAD_CHUNK_ELEMENTS,
    chunked_cross_entropy,
    fused_linear_cross_entropy,
)

# Logits with fewer elements (32 MiB of float32) go to F.cross_entropy on CPU: while they are about cache-sized,
# its fused kernels win (1 thread, medians of 5 rounds: 0.74 vs 1.38 ms at 768 x 128, 36 vs 56 ms at
# 2048 x 2048); from 64 MiB up, the chunked kernel does (353 vs 257 ms at 4096 x 4096, 725 vs 479 ms at
# 2048 x 16384).
CPU_CHUNKED_FROM = 1 << 23


class Kernel(enum.Enum):
    """Which implementation computes a cross-entropy (with or without the linear head before it)."""

    STANDARD = "standard"  # F.cross_entropy, after F.linear for a head: PyTorch's kernels for the device
    CPU_CHUNKED = "cpu_chunked"  # ChunkedCrossEntropy, or LinearCrossEntropy for a head


@dataclass(frozen=True, kw_only=True)
class KernelSizes:
    """Sizes, in elements of the logits, that steer the CPU kernels; the defaults are the measured best."""

    cpu_chunked_from: int = CPU_CHUNKED_FROM  # CPU float32 logits from this many elements up take the chunked kernels
    chunk_elements: int = CHUNK_ELEMENTS  # logits per chunk of ChunkedCrossEntropy
    head_chunk_elements: int = HEAD_CHUNK_ELEMENTS  # logits per chunk of LinearCrossEntropy


DEFAULT_SIZES = KernelSizes()


def choose_kernel(
    device_type: str, dtype: torch.dtype, n_logits: int, autocast: bool, cpu_chunked_from: int = CPU_CHUNKED_FROM
) -> Kernel:
    """The kernel for a cross-entropy computed in ``dtype`` (under ``autocast`` or not) over ``n_logits`` logits
    on a ``device_type`` device: the CPU-chunked one only for CPU float32 logits of ``cpu_chunked_from`` elements
    or more, the standard one everywhere else (always on CUDA)."""
    chunked = device_type == "cpu" and dtype == torch.float32 and not autocast and n_logits >= cpu_chunked_from
    return Kernel.CPU_CHUNKED if chunked else Kernel.STANDARD


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(logits / cap)``: logits bounded smoothly to (-cap, cap); unchanged when ``cap`` is None."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, sizes: KernelSizes = DEFAULT_SIZES
) -> torch.Tensor:
    """Mean cross-entropy of (..., V) logits (computed in float32) and (...) targets, ``ignore_index`` skipped.

    Equal to ``F.cross_entropy(logits.float().view(-1, V), targets.view(-1), ignore_index=...)``, which computes
    it unless ``choose_kernel`` picks the chunked CPU kernel. The choice sees float32 and no autocast whatever
    the logits' dtype, because they are upcast here and autocast keeps cross-entropy in float32.
    """
    flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1)
    kernel = choose_kernel(
        flat_logits.device.type,
        torch.float32,
        flat_logits.numel(),
        autocast=False,
        cpu_chunked_from=sizes.cpu_chunked_from,
    )
    if kernel is Kernel.CPU_CHUNKED:
        return chunked_cross_entropy(flat_logits, flat_targets, ignore_index, sizes.chunk_elements)
    return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    cap: float | None = None,
    sizes: KernelSizes = DEFAULT_SIZES,
) -> torch.Tensor:
    """Mean cross-entropy of the logits ``soft_cap(hidden @ weight.T, cap)`` of (..., C) hidden states and a
    (V, C) bias-free head, and (...) targets, ``ignore_index`` skipped.

    Equal to ``cross_entropy(soft_cap(F.linear(hidden, weight), cap), targets, ignore_index)``, which computes it
    unless ``choose_kernel`` picks the CPU kernel that fuses the head into the loss and never holds all the
    logits in memory (large float32 logits on CPU, outside autocast).
    """
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    device_type = hidden.device.type
    kernel = choose_kernel(
        device_type,
        hidden.dtype,
        flat_hidden.size(0) * weight.size(0),
        torch.is_autocast_enabled(device_type),
        sizes.cpu_chunked_from,
    )
    if kernel is Kernel.CPU_CHUNKED:
        return fused_linear_cross_entropy(
            flat_hidden,
            weight,
            flat_targets,
            ignore_index=ignore_index,
            cap=cap,
            chunk_elements=sizes.head_chunk_elements,
        )
    return cross_entropy(soft_cap(F.linear(flat_hidden, weight), cap), flat_targets, ignore_index, sizes)
