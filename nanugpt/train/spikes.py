"""Loss spikes (``training.spike``): a step whose train loss jumps above ``factor`` x the mean of the last
``window`` steps' losses.

The losses checked are the means over ranks (``TrainMetrics.reduce``), so every rank sees the same spike at the
same step. The running window is part of the checkpoint, so a resumed run checks exactly as an uninterrupted
one. The actions:

- ``rollback``: at the log interval that holds the spike (before anything of it is saved), the run reloads its
  newest checkpoint, from step S, and continues with the batches after the spike's: those of steps S+1 ... P
  (P the spike's step, steps counted from 1) are skipped. Batches are addressed as ``Batches.micro_batch``
  numbers them, from 0: step ``s`` trains on data step ``s - 1 + data_offset``, and a rollback's
  ``skipped_batches`` are the first and the last data step it skipped. Each rollback is recorded
  (``rollbacks``: in every later checkpoint, ``run_info.json`` and ``train_summary.json``), so a rerun of
  the same params reproduces it bitwise; after ``max_rollbacks`` a further spike stops the run.
- ``skip``: the loss is checked every step before the optimizer's update, which a spiking step leaves out
  (its batch still counts as seen). One host sync per step.
- ``stop``: the run ends with an error naming the step; its last checkpoint is from before the spike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nanugpt.config.schema import SpikeParams
from nanugpt.errors import TrainingError


@dataclass(frozen=True)
class Spike:
    """A step whose loss is ``loss``, above ``factor`` x ``mean``, the window's mean before it."""

    step: int
    loss: float
    mean: float

    def describe(self, factor: float, window: int) -> str:
        return (
            f"loss spike at step {self.step}: train loss {self.loss:.4f} is {self.loss / self.mean:.2f} x the mean of "
            f"the {window} steps before it ({self.mean:.4f}; training.spike.factor is {factor})"
        )


def skipped_before(rollbacks: Iterable[dict[str, Any]], step: int | None = None) -> int:
    """The data steps that ``rollbacks`` (``SpikeGuard.rollbacks``, as a run records them) skipped before ``step``
    (counted from 1): those of each rollback to a checkpoint before it. All of them for None."""
    return sum(
        r["skipped_batches"][1] - r["skipped_batches"][0] + 1
        for r in rollbacks
        if step is None or step > r["resumed_from"]
    )


class RollBack(Exception):  # noqa: N818 - a request to the trainer, not an error
    """Raised by the loop to ask the trainer to reload its newest checkpoint and skip past ``spike``."""

    def __init__(self, spike: Spike):
        super().__init__(f"roll back past the spike at step {spike.step}")
        self.spike = spike


class SpikeGuard:
    """The running window of losses, the check, and the record of rollbacks and skipped updates."""

    def __init__(self, options: SpikeParams):
        self.options = options
        self.recent: deque[float] = deque(maxlen=options.window)
        self.rollbacks: list[dict[str, Any]] = []
        self.skipped_updates: list[int] = []

    @property
    def active(self) -> bool:
        return self.options.action != "none"

    @property
    def per_step(self) -> bool:
        """True when every step's loss is checked before its update (``skip``)."""
        return self.options.action == "skip"

    @property
    def data_offset(self) -> int:
        """Data steps skipped by rollbacks so far: ``TrainStep`` runs step ``s`` (from 0) on data step
        ``s + data_offset``."""
        return skipped_before(self.rollbacks)

    def observe(self, step: int, loss: float) -> Spike | None:
        """Check ``loss`` of ``step`` against the window, which takes it unless it spikes."""
        if len(self.recent) == self.recent.maxlen:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.options.factor * mean:
                return Spike(step, loss, mean)
        self.recent.append(loss)
        return None

    def check_interval(self, losses: Iterable[tuple[int, float]], last_checkpoint: int | None) -> None:
        """Check an interval's (step, loss) pairs (``rollback`` and ``stop``); raise ``RollBack`` or a
        ``TrainingError`` at the first spike."""
        if self.options.action not in ("rollback", "stop"):
            return
        for step, loss in losses:
            spike = self.observe(step, loss)
            if spike is not None:
                self.act(spike, last_checkpoint)

    def act(self, spike: Spike, last_checkpoint: int | None) -> None:
        """Stop, or ask for a rollback, at ``spike``."""
        what = spike.describe(self.options.factor, self.options.window)
        if self.options.action == "stop":
            raise TrainingError(f"{what}; stopping (training.spike.action: stop)")
        if len(self.rollbacks) >= self.options.max_rollbacks:
            raise TrainingError(
                f"{what}; stopping: {len(self.rollbacks)} rollbacks already (training.spike.max_rollbacks)"
            )
        if last_checkpoint is None:
            raise TrainingError(f"{what}; no checkpoint to roll back to yet: lower training.checkpoint_every")
        raise RollBack(spike)

    def record_rollback(self, spike: Spike, resumed_from: int) -> dict[str, Any]:
        """Record a rollback from ``spike`` to the checkpoint of step ``resumed_from``; return the record."""
        first = resumed_from + self.data_offset  # the data step the checkpoint's next step would have trained on
        record = {
            "spike_step": spike.step,
            "loss": spike.loss,
            "window_mean": spike.mean,
            "resumed_from": resumed_from,
            "skipped_batches": [first, first + spike.step - resumed_from - 1],
        }
        self.rollbacks.append(record)
        return record

    def figures(self) -> dict[str, float]:
        """The metrics of the guard: rollbacks and skipped updates so far."""
        if not self.active:
            return {}
        return {
            "spike/rollbacks": float(len(self.rollbacks)),
            "spike/skipped_updates": float(len(self.skipped_updates)),
        }

    def record(self) -> dict[str, Any]:
        """What the guard did: its rollbacks and skipped updates (``run_info.json``, ``train_summary.json``)."""
        return {"rollbacks": self.rollbacks, "skipped_updates": self.skipped_updates}

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), **self.record()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore ``state_dict()`` (a checkpoint saved without one: an empty window, nothing recorded)."""
        state = state or {}
        self.recent = deque(state.get("recent", []), maxlen=self.options.window)
        self.rollbacks = list(state.get("rollbacks", []))
        self.skipped_updates = list(state.get("skipped_updates", []))
