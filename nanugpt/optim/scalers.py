"""Gradient scalers: ``amp`` is torch's GradScaler for float16, and a no-op otherwise; ``keller``
normalises each parameter's gradient to a fixed norm.

A scaler has torch.amp.GradScaler's interface as the train loop uses it:
``scale(loss).backward()``, ``unscale_(optimizer)``, gradient clipping,
``step(optimizer)``, ``update()``, and ``state_dict()`` / ``load_state_dict()``
in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from nanugpt.config.schema import Problem, ScalerOptions
from nanugpt.errors import UserError


class AmpScalerOptions(ScalerOptions):
    """torch.amp.GradScaler for float16 on CUDA; a no-op otherwise."""

    def build(self, device_type: str, dtype: str) -> torch.amp.GradScaler:
        """A GradScaler enabled only where loss scaling matters: float16 on CUDA."""
        return torch.amp.GradScaler(device_type, enabled=(dtype == "float16" and device_type == "cuda"))


class KellerScalerOptions(ScalerOptions):
    """Per-parameter gradient normalisation: each gradient is rescaled to norm target_norm before the step."""

    target_norm: float = Field(1.0, gt=0, description="norm of every parameter's gradient after unscale_")
    eps: float = Field(1e-8, gt=0, description="added to each gradient's norm before dividing by it (0/0 guard)")

    def check(self, params: Any) -> list[Problem]:
        """Clipping would shrink every normalised gradient: ``training.grad_clip`` must be 0."""
        grad_clip = params.training.grad_clip
        if grad_clip > 0:
            message = (
                f"must be 0 with scaler.module keller, which already normalises each gradient (clipping would "
                f"shrink them all), got {grad_clip}"
            )
            return [("training.grad_clip", message)]
        return []

    def build(self, device_type: str, dtype: str) -> KellerScaler:
        """The scaler; float16 is refused because this scaler does not scale the loss against underflow."""
        if dtype == "float16":
            raise UserError(
                "scaler keller does not scale the loss, so float16 gradients may underflow; "
                "set general.dtype to bfloat16 or float32, or use scaler amp"
            )
        return KellerScaler(self.target_norm, self.eps)


class KellerScaler:
    """Divides each parameter's gradient by its own norm (plus eps) and multiplies by ``target_norm``.

    Every tensor then moves by the same gradient magnitude whatever its size or depth. The train loop
    clips the global norm after ``unscale_``: N normalised gradients have a global norm of
    ``sqrt(N) * target_norm``, so a ``training.grad_clip`` below that shrinks all of them alike;
    set ``training.grad_clip: 0`` to keep exactly ``target_norm`` per parameter.
    """

    def __init__(self, target_norm: float, eps: float):
        self.target_norm = target_norm
        self.eps = eps

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss unchanged: gradients are normalised after backward, not scaled before it."""
        return loss

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Rescale the gradient of every parameter of ``optimizer`` to norm ``target_norm``."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(self.target_norm / (p.grad.norm() + self.eps))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``."""
        optimizer.step()

    def update(self) -> None:
        """Nothing to update: there is no loss scale."""

    def state_dict(self) -> dict[str, Any]:
        """No state: an empty dict."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accept the empty state of ``state_dict()``."""
        if state:
            raise ValueError(f"the keller scaler has no state, got {sorted(state)}")
