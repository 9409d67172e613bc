"""Refusing a model that cannot fit in memory before any of it is allocated.

The parameters are counted on the ``meta`` device (shapes only, no storage), and
the training state is estimated at ``BYTES_PER_PARAMETER`` per parameter:
float32 weights, their gradients and AdamW's two moments. Activations are not
counted, so the estimate is a lower bound: a model refused here could never
train, and one accepted may still run out of memory on a large batch.
"""

from __future__ import annotations

import os

import torch

from nanugpt.config.schema import ModelOptions
from nanugpt.distributed.device import available_bytes
from nanugpt.errors import UserError

BYTES_PER_PARAMETER = 16  # 4 (float32 weight) + 4 (gradient) + 8 (AdamW exp_avg and exp_avg_sq)
GIB = 1024**3


class ModelTooLarge(UserError):
    """The model's training state alone exceeds the memory available on its device."""


def count_parameters(model: ModelOptions, vocab_size: int) -> int | None:
    """Parameters of the model ``model`` builds, counted without allocating them; None for a model that loads
    pretrained weights (its folder decides its size) or cannot be built on the meta device."""
    if getattr(model, "pretrained", None):
        return None
    try:
        with torch.device("meta"):
            module = model.build(vocab_size)
    except Exception:  # noqa: BLE001 -- a model that needs real tensors to build: no estimate, training will tell
        return None
    return sum(p.numel() for p in module.parameters())


def check_model_fits(model: ModelOptions, vocab_size: int, available: int | None, processes: int = 1) -> None:
    """Raise ``ModelTooLarge`` when ``processes`` copies of the model's training state exceed ``available`` bytes."""
    count = count_parameters(model, vocab_size)
    if count is None or available is None:
        return
    needed = count * BYTES_PER_PARAMETER * processes
    if needed > available:
        copies = f" x {processes} processes" if processes > 1 else ""
        raise ModelTooLarge(
            f"model: {_count(count)} parameters need about {_size(needed)} for weights, gradients and "
            f"AdamW state ({BYTES_PER_PARAMETER} bytes per parameter{copies}, activations not counted), but only "
            f"{_size(available)} is available; make the model smaller (model.n_layer, model.n_embd) or "
            "train on a device with more memory"
        )


def check_train_memory(model: ModelOptions, vocab_size: int, device: torch.device) -> None:
    """Refuse a train run whose model cannot fit on ``device`` (the CPU processes of one node share its memory)."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    check_model_fits(model, vocab_size, available_bytes(device), processes)


def _count(count: int) -> str:
    return f"{count:,}" if count < 1e6 else f"{count / 1e6:,.1f}M" if count < 1e9 else f"{count / 1e9:,.1f}B"


def _size(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB" if size < GIB else f"{size / GIB:,.1f} GiB"
