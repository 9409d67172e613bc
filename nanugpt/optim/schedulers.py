"""Learning-rate schedules: a ``factor(step)`` that multiplies ``optimizer.lr``.

Step ``s`` counts optimizer steps from 0; warmup is linear from ``1/warmup_steps``
to 1 over the first ``warmup_steps`` steps. ``cosine``, ``linear`` and
``constant`` stay in [0, 1]; ``lr_range_test`` sweeps absolute lrs, so its
factor is ``lr(step) / optimizer.lr`` and may exceed 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from nanugpt.config.schema import Problem, SchedulerOptions


class WarmupOptions(SchedulerOptions):
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of optimizer.lr")

    def check(self, params: Any) -> list[Problem]:
        """Warmup (and a cooldown, where there is one) must fit in ``training.max_steps``."""
        max_steps = params.training.max_steps
        return [
            (f"scheduler.{key}", f"must be <= training.max_steps ({max_steps}), got {steps}")
            for key, steps in self.phase_steps().items()
            if steps > max_steps
        ]

    def phase_steps(self) -> dict[str, int]:
        """The steps of each phase with a fixed length, by key."""
        return {"warmup_steps": self.warmup_steps}


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

    def build(self, max_steps: int, base_lr: float) -> Schedule:
        return Schedule("cosine", max_steps, self.warmup_steps, self.min_lr_ratio)


class LinearOptions(WarmupOptions):
    """Warmup, then linear decay to ``min_lr_ratio`` at ``training.max_steps``."""

    def build(self, max_steps: int, base_lr: float) -> Schedule:
        return Schedule("linear", max_steps, self.warmup_steps, self.min_lr_ratio)


class ConstantOptions(WarmupOptions):
    """Warmup, constant, then an optional linear cooldown (warmup-stable-decay)."""

    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="lr at the end of the cooldown, as a share")
    cooldown_steps: int = Field(0, ge=0, description="final steps of linear decay; 0 = constant to the end")

    def phase_steps(self) -> dict[str, int]:
        return {"warmup_steps": self.warmup_steps, "cooldown_steps": self.cooldown_steps}

    def build(self, max_steps: int, base_lr: float) -> Schedule:
        return Schedule("constant", max_steps, self.warmup_steps, self.min_lr_ratio, self.cooldown_steps)


@dataclass(frozen=True)
class LrRangeSweep:
    """An exponential lr sweep from ``min_lr`` at step 0 to ``max_lr`` at the last step, and its report."""

    max_steps: int
    min_lr: float
    max_lr: float
    base_lr: float
    smoothing: float

    def lr(self, step: int) -> float:
        """The absolute lr of ``step``: geometric interpolation between min_lr and max_lr."""
        progress = step / (self.max_steps - 1) if self.max_steps > 1 else 0.0
        return self.min_lr * (self.max_lr / self.min_lr) ** progress

    def factor(self, step: int) -> float:
        """``lr(step) / optimizer.lr``: the train loop multiplies optimizer.lr by it."""
        return self.lr(step) / self.base_lr

    def state_dict(self) -> dict:
        """The sweep's settings, for the checkpoint."""
        return {"kind": "lr_range_test", "max_steps": self.max_steps, "min_lr": self.min_lr, "max_lr": self.max_lr}

    def report(self, lrs: list[float], losses: list[float]) -> dict[str, Any]:
        """The suggested lr and the sweep's points, from the lr and train loss of every step.

        The loss is smoothed by a centred moving average over ``smoothing`` of the sweep (no lag, unlike
        an EMA, since the whole curve is known). ``suggested_lr`` is the lr at the smoothed minimum / 10:
        the minimum of a smoothed curve is stable from run to run, while the point of steepest descent
        (``steepest_lr``, a derivative of a noisy curve) moves a lot on the short sweeps CPUs afford;
        a tenth of the lr where the loss stops falling is fastai's ``lr_find`` rule for a safe peak lr.
        Points with a non-finite loss (divergence) are left out. ``points`` is a list, which
        ``dvc metrics show`` skips, so only the three lrs become metrics.
        """
        points = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
        if not points:
            return {"suggested_lr": None, "min_loss_lr": None, "steepest_lr": None, "points": []}
        half = round(self.smoothing * len(points)) // 2
        smoothed = []
        for i in range(len(points)):
            window = points[max(0, i - half) : i + half + 1]
            smoothed.append(sum(loss for _, loss in window) / len(window))
        best = min(range(len(points)), key=smoothed.__getitem__)
        # (change of smoothed loss per unit of log lr, lr) on each rise of the lr before the minimum
        slopes = [
            ((smoothed[i + 1] - smoothed[i]) / math.log(points[i + 1][0] / points[i][0]), points[i][0])
            for i in range(best)
            if points[i + 1][0] > points[i][0]
        ]
        steepest = min(slopes)[1] if slopes else None
        return {
            "suggested_lr": points[best][0] / 10,
            "min_loss_lr": points[best][0],
            "steepest_lr": steepest,
            "points": [{"lr": lr, "loss": loss, "smoothed_loss": sm} for (lr, loss), sm in zip(points, smoothed)],
        }


class LrRangeTestOptions(SchedulerOptions):
    """LR range test: lr grows exponentially from min_lr to max_lr over training.max_steps; reports a suggested lr."""

    min_lr: float = Field(1e-6, gt=0, description="absolute lr at step 0 (not a share of optimizer.lr)")
    max_lr: float = Field(1.0, gt=0, description="absolute lr at the last step; must exceed min_lr")
    smoothing: float = Field(
        0.05, ge=0, lt=1, description="width of the centred moving average of the loss, as a share of the sweep"
    )

    @field_validator("max_lr")
    @classmethod
    def _above_min_lr(cls, max_lr: float, info: ValidationInfo) -> float:
        min_lr = info.data.get("min_lr")
        if min_lr is not None and max_lr <= min_lr:
            raise ValueError(f"must be > min_lr ({min_lr})")
        return max_lr

    def build(self, max_steps: int, base_lr: float) -> LrRangeSweep:
        """The sweep; ``base_lr`` is ``optimizer.lr``, which the train loop multiplies by ``factor``."""
        return LrRangeSweep(max_steps, self.min_lr, self.max_lr, base_lr, self.smoothing)
