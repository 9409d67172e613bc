"""One optimizer step: the schedule's lr, gradients accumulated over micro-batches, clipping, the update.

Losses stay on the device: the step returns them as tensors, so the hot loop
has no host sync (``nanugpt.metrics.train_metrics.TrainMetrics`` reads them at log intervals).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from nanugpt.config.schema import SpikeParams
from nanugpt.data.tokenized import to_device
from nanugpt.distributed.device import autocast_context
from nanugpt.distributed.fsdp import clip_grad_norm, no_sync
from nanugpt.distributed.process_group import DistInfo, all_reduce_mean
from nanugpt.train.build import RunParts
from nanugpt.train.spikes import SpikeGuard


@dataclass(frozen=True)
class StepResult:
    """What one step gives the metrics: its lr (of ``optimizer.lr``), mean loss and grad norm (on device)."""

    lr: float
    loss: torch.Tensor
    grad_norm: torch.Tensor


class TrainStep:
    """Runs optimizer step ``step`` of a run over its global batch (DDP and FSDP sync gradients on the last
    micro-step)."""

    def __init__(
        self,
        parts: RunParts,
        model: torch.nn.Module,
        info: DistInfo,
        *,
        peak_lr: float,
        dtype: str,
        grad_clip: float,
        guard: SpikeGuard | None = None,
    ):
        self.parts, self.model, self.info = parts, model, info
        self.guard = guard if guard is not None else SpikeGuard(SpikeParams())  # none: no check, no skipped data
        self.peak_lr, self.dtype, self.grad_clip = peak_lr, dtype, grad_clip
        self.trainable = [p for p in parts.model.parameters() if p.requires_grad]

    def set_lr(self, step: int) -> float:
        """Set every parameter group's lr to its peak (``base_lr``) x the schedule's factor; return optimizer.lr's."""
        factor = self.parts.schedule.factor(step)
        for group in self.parts.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.peak_lr * factor

    def micro_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch, scaled for accumulation."""
        parts = self.parts
        with autocast_context(self.info.device, self.dtype):
            loss = parts.loss_fn.of_model(self.model, parts.model, x, y)
            return loss / parts.accum if parts.accum > 1 else loss

    def __call__(self, step: int) -> StepResult:
        parts, device = self.parts, self.info.device
        lr = self.set_lr(step)
        step_loss = torch.zeros((), device=device)
        data_step = step + self.guard.data_offset  # past the batches a spike's rollback skipped
        for micro in range(parts.accum):
            x, y = parts.train_batches.micro_batch(data_step, micro)
            last_micro = micro == parts.accum - 1
            with contextlib.nullcontext() if last_micro or self.info.world_size == 1 else no_sync(self.model):
                loss = self.micro_loss(to_device(x, device), to_device(y, device))
                parts.scaler.scale(loss).backward()
            step_loss += loss.detach()
        if self.guard.per_step and self.spikes(step + 1, step_loss):
            parts.optimizer.zero_grad(set_to_none=True)  # before unscale_: the scaler's state stays as it was
            return StepResult(lr, step_loss, torch.zeros((), device=device))
        parts.scaler.unscale_(parts.optimizer)
        grad_norm = clip_grad_norm(self.trainable, self.grad_clip or math.inf)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        return StepResult(lr, step_loss, grad_norm)

    def spikes(self, step: int, step_loss: torch.Tensor) -> bool:
        """True when the loss of ``step`` (the mean over ranks: all decide alike) is a spike, whose update is then
        left out (``training.spike.action: skip``)."""
        loss = all_reduce_mean(step_loss.detach(), self.info).item()
        if self.guard.observe(step, loss) is None:
            return False
        self.guard.skipped_updates.append(step)
        return True
