"""The GPU peak table behind the MFU log line, and the CPU fallback."""

from __future__ import annotations

import pytest
import torch

from nanugpt.distributed.device import gpu_peak_flops, peak_flops


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("NVIDIA H200", "bfloat16", 989e12),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),  # the SXM part
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H100 NVL", "float16", 835e12),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("NVIDIA A100 80GB PCIe", "float32", 19.5e12),
        ("NVIDIA H100 80GB HBM3", "float32", 67e12),
        ("Tesla V100-SXM2-16GB", "float16", 125e12),
        ("Tesla V100-SXM2-16GB", "bfloat16", None),
        ("NVIDIA GeForce GTX 1080", "bfloat16", None),
    ],
)
def test_gpu_peak_is_the_variant_and_dtype_peak(name: str, dtype: str, expected: float | None) -> None:
    assert gpu_peak_flops(name, dtype) == expected


def test_configured_peak_wins_and_cpu_peak_is_measured() -> None:
    cpu = torch.device("cpu")
    assert peak_flops(cpu, 5e12, "float32") == 5e12
    measured = peak_flops(cpu, None, "float32")
    assert measured is not None and 1e9 < measured < 1e14
