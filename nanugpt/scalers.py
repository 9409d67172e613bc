"""Gradient scalers: ``amp`` is torch's GradScaler for float16, and a no-op otherwise."""

from __future__ import annotations

import torch

from nanugpt.components import ScalerOptions


class AmpScalerOptions(ScalerOptions):
    """torch.amp.GradScaler for float16 on CUDA; a no-op otherwise."""

    def build(self, device_type: str, dtype: str) -> torch.amp.GradScaler:
        """A GradScaler enabled only where loss scaling matters: float16 on CUDA."""
        return torch.amp.GradScaler(device_type, enabled=(dtype == "float16" and device_type == "cuda"))
