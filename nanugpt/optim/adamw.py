"""Optimizers: ``adamw_nanogpt`` (decay on matrices only) and ``adamw`` (decay on everything)."""

from __future__ import annotations

import torch
from pydantic import Field

from nanugpt.config.schema import OptimizerOptions


class AdamWOptions(OptimizerOptions):
    """Plain AdamW: every parameter decays."""

    weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
    beta2: float = Field(0.95, ge=0, lt=1, description="second-moment decay")
    eps: float = Field(1e-8, gt=0, description="denominator epsilon")
    fused: bool | None = Field(None, description="fused kernel; null = use it where torch has it for the device")

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": self.weight_decay}]

    def build(self, model: torch.nn.Module, device_type: str) -> torch.optim.Optimizer:
        fused = self.fused if self.fused is not None else device_type in ("cpu", "cuda")
        return torch.optim.AdamW(
            self.param_groups(model), lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps, fused=fused
        )


class AdamWNanoGPTOptions(AdamWOptions):
    """nanoGPT's AdamW: weight decay on 2-D+ tensors (matmul weights, embeddings); none on biases and norms."""

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
