"""``relu(x)^2``, ``nanogpt_modern``'s MLP activation, with a one-pass backward that saves only ``relu(x)``."""

from __future__ import annotations

import torch


class ReluSquaredFunction(torch.autograd.Function):
    """``relu(x)^2``, keeping only ``relu(x)`` for a one-pass backward ``dx = 2 relu(x) dy``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (2 * r).mul_(dy)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)^2``, the MLP activation."""
    return ReluSquaredFunction.apply(x)
