"""Device choice, autocast, and the device's peak FLOP/s for MFU."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from nanugpt.errors import UserError

# bf16 dense peak FLOP/s of common GPUs, for MFU (matched against torch.cuda.get_device_name()).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12}


def pick_device(device_type: str, local_rank: int = 0) -> torch.device:
    """The device for ``general.device_type`` ('auto' = CUDA when available)."""
    if device_type == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("general.device_type is 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast for bfloat16/float16; nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """The device's peak FLOP/s for MFU: configured, a known GPU, or a matmul measured on CPU."""
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((flops for key, flops in GPU_PEAK_FLOPS.items() if key in name), None)
    a = torch.full((2048, 2048), 0.5)  # not random: the global RNG stream must not move
    a @ a  # warm up
    best = math.inf
    for _ in range(3):  # the fastest of a few: the machine's peak, not its noise
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best
