"""Evaluation during training: when to evaluate, the figures, and the best val loss so far."""

from __future__ import annotations

import math
from typing import Any

import torch

from nanugpt.config.protocols import Batches, MixedBatches
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError
from nanugpt.eval.evaluate import evaluate_split
from nanugpt.optim.losses import Loss


class Validator:
    """Evaluates on ``iters`` fixed val batches every ``every`` steps (0: only at the end) and at the last step.

    Its state is the best val loss, which decides ``best.pt``. A non-finite val loss stops the run: a
    diverged model is never evaluated as the best one.
    """

    def __init__(self, batches: Batches | None, *, every: int, iters: int, info: DistInfo, dtype: str, loss_fn: Loss):
        self.batches, self.every, self.iters = batches, every, iters
        self.info, self.dtype, self.loss_fn = info, dtype, loss_fn
        self.best_loss: float | None = None
        self.last_loss: float | None = None
        self.last_source_losses: dict[str, float] = {}  # a mixture's, by source (``source_losses``)

    def should_validate(self, step: int, final: bool) -> bool:
        """True at the steps this run evaluates: every ``every`` steps and the last, when there is a val split."""
        return self.batches is not None and (final or (self.every > 0 and step % self.every == 0))

    def validate(
        self, model: torch.nn.Module, step: int, plain: torch.nn.Module | None = None
    ) -> tuple[dict[str, float], bool]:
        """The loss and the loss's metrics of ``model`` (``plain``: unwrapped) at ``step``, and whether the loss is
        the best so far."""
        assert self.batches is not None, "validate() runs only where should_validate() said so"
        figures = evaluate_split(
            model,
            self.batches,
            iters=self.iters,
            info=self.info,
            dtype=self.dtype,
            loss_fn=self.loss_fn,
            plain=plain,
        )
        loss = figures["loss"]
        if not math.isfinite(loss):
            raise TrainingError(f"val loss is {loss} at step {step}: the run diverged; lower optimizer.lr")
        self.last_loss = loss
        improved = self.best_loss is None or loss < self.best_loss
        if improved:
            self.best_loss = loss
        return figures, improved

    def source_losses(self, model: torch.nn.Module, plain: torch.nn.Module | None = None) -> dict[str, float]:
        """``sources/<name>/val_loss`` of each source of a mixture's val batches (``MixedBatches``), on ``iters``
        batches of that source alone; none for other data."""
        if not isinstance(self.batches, MixedBatches):
            return {}
        self.last_source_losses = {
            name: evaluate_split(
                model, part, iters=self.iters, info=self.info, dtype=self.dtype, loss_fn=self.loss_fn, plain=plain
            )["loss"]
            for name, part in self.batches.named_parts().items()
        }
        return {f"sources/{name}/val_loss": loss for name, loss in self.last_source_losses.items()}

    def state_dict(self) -> dict[str, Any]:
        """The best and the latest val loss (checkpoint keys of their own, read by evaluate and export)."""
        return {"best_val_loss": self.best_loss, "val_loss": self.last_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        self.best_loss, self.last_loss = state.get("best_val_loss"), state.get("val_loss")
