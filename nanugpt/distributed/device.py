"""Device choice, autocast, and the device's peak FLOP/s for MFU."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from nanugpt.errors import UserError

MEMINFO = Path("/proc/meminfo")

# Dense peak FLOP/s of common GPUs from their data sheets, for MFU: (bfloat16/float16 tensor cores, float32
# without TF32, which torch leaves off for matmuls by default). Matched in this order as a substring of
# torch.cuda.get_device_name(), so variants come before their family ("NVIDIA H100 PCIe" before "H100",
# which is the SXM part, e.g. "NVIDIA H100 80GB HBM3").
GPU_PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200 NVL", 835e12, 60e12),
    ("H200", 989e12, 67e12),
    ("H100 NVL", 835e12, 60e12),
    ("H100 PCIe", 756e12, 51e12),
    ("H100", 989e12, 67e12),
    ("A100", 312e12, 19.5e12),
    ("L40S", 362e12, 91.6e12),
    ("A10G", 125e12, 31.2e12),
    ("V100", 125e12, 15.7e12),  # float16 tensor cores; it has no bfloat16 hardware
)


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


def gpu_peak_flops(name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of the GPU called ``name`` for matmuls in ``dtype`` (``general.dtype``); None when
    the GPU is not in GPU_PEAK_FLOPS (set ``training.peak_flops`` then)."""
    for key, half, single in GPU_PEAK_FLOPS:
        if key in name:
            if dtype == "bfloat16" and key == "V100":
                return None  # emulated: no meaningful peak
            return single if dtype == "float32" else half
    return None


def peak_flops(device: torch.device, configured: float | None, dtype: str) -> float | None:
    """The device's peak FLOP/s for MFU: configured, a known GPU's peak for ``dtype``, or a matmul
    measured on CPU."""
    if configured:
        return configured
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), dtype)
    a = torch.full((2048, 2048), 0.5)  # not random: the global RNG stream must not move
    a @ a  # warm up
    best = math.inf
    for _ in range(3):  # the fastest of a few: the machine's peak, not its noise
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def available_bytes(device: torch.device, meminfo: Path = MEMINFO) -> int | None:
    """Free memory on ``device``: CUDA's free bytes, or MemAvailable of ``meminfo`` on CPU; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None
