"""Learning-rate schedules: a ``factor(step)`` in [0, 1] that multiplies ``optimizer.lr``.

Step ``s`` counts optimizer steps from 0; warmup is linear from ``1/warmup_steps``
to 1 over the first ``warmup_steps`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field

from nanugpt.components import SchedulerOptions


class WarmupOptions(SchedulerOptions):
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of optimizer.lr")


@dataclass(frozen=True)
class Schedule:
    """The lr factor at each step for one run."""

    kind: str
    max_steps: int
    warmup_steps: int
    min_lr_ratio: float
    cooldown_steps: int = 0

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            decay_start = self.max_steps - self.cooldown_steps
            if self.cooldown_steps == 0 or step < decay_start:
                return 1.0
            progress = (step - decay_start) / self.cooldown_steps
            return 1.0 - (1.0 - self.min_lr_ratio) * progress
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - self.min_lr_ratio) * progress  # linear

    def state_dict(self) -> dict:
        return {"kind": self.kind, "max_steps": self.max_steps, "warmup_steps": self.warmup_steps}


class CosineOptions(WarmupOptions):
    """Warmup, then cosine decay to ``min_lr_ratio`` at ``training.max_steps``."""

    def build(self, max_steps: int) -> Schedule:
        return Schedule("cosine", max_steps, self.warmup_steps, self.min_lr_ratio)


class LinearOptions(WarmupOptions):
    """Warmup, then linear decay to ``min_lr_ratio`` at ``training.max_steps``."""

    def build(self, max_steps: int) -> Schedule:
        return Schedule("linear", max_steps, self.warmup_steps, self.min_lr_ratio)


class ConstantOptions(WarmupOptions):
    """Warmup, constant, then an optional linear cooldown (warmup-stable-decay)."""

    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="lr at the end of the cooldown, as a share")
    cooldown_steps: int = Field(0, ge=0, description="final steps of linear decay; 0 = constant to the end")

    def build(self, max_steps: int) -> Schedule:
        return Schedule("constant", max_steps, self.warmup_steps, self.min_lr_ratio, self.cooldown_steps)
