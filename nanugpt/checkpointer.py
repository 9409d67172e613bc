"""When a run saves its state, and where a run resumes from.

The state itself is the sum of the run's parts (``Trainer.state_dict``); the
files are written by ``nanugpt.checkpoint``. Only rank 0 writes.

Time-based checkpoints (``training.checkpoint_every_min``) are decided on every
rank alike: each rank reads its own clock (``time_due``), and the loop ORs the
flags over ranks in the all-reduce it already does each step for the stop
signal (``nanugpt.distributed.any_rank``), so all ranks save at the same step
at no extra collective or host sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nanugpt import checkpoint
from nanugpt.distributed import DistInfo
from nanugpt.params import Params

# What must match for ``resume: auto`` to continue a checkpoint: everything that shapes the numbers
# (not logging, checkpointing or launch settings), so a resumed run equals an uninterrupted one.
RESUME_KEYS = (
    "general.seed",
    "general.dtype",
    "data",
    "tokenizer",
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "scaler",
    "training.max_steps",
    "training.device_batch_size",
    "training.global_batch_size",
    "training.grad_clip",
)


class Checkpointer:
    """Saves ``step-NNNNNNN.pt`` + ``last.pt`` every ``training.checkpoint_every`` steps, once
    ``training.checkpoint_every_min`` minutes of wall clock have passed since the last save (or the start), at
    the last step and when stopped by a signal, and ``best.pt`` at each new best val loss; finds the checkpoint
    to resume from. ``clock`` gives seconds (``time.monotonic``; tests pass their own)."""

    def __init__(
        self,
        folder: Path,
        params: Params,
        info: DistInfo,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.folder, self.params, self.info, self.log, self.clock = folder, params, info, log, clock
        self.every, self.keep_last = params.training.checkpoint_every, params.training.keep_last
        self.every_s = params.training.checkpoint_every_min * 60
        self.digest = params.digest(RESUME_KEYS)
        self.last_save = clock()

    def time_due(self) -> bool:
        """True when this rank's clock says ``training.checkpoint_every_min`` have passed since the last save;
        always False when that is 0. The loop ORs it over ranks before passing it to ``should_save``."""
        return self.every_s > 0 and self.clock() - self.last_save >= self.every_s

    def should_save(self, step: int, final: bool, stopping: bool, time_due: bool = False) -> bool:
        """True at the steps whose state is saved; ``time_due``: ``time_due()`` of any rank."""
        return final or stopping or time_due or (self.every > 0 and step % self.every == 0)

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the state of ``step`` and point ``last.pt`` at it; the minutes to the next timed save start now."""
        if self.info.is_main:
            checkpoint.save_checkpoint(self.folder, step, state, self.keep_last)
        self.last_save = self.clock()

    def save_best(self, state: dict[str, Any]) -> None:
        """Write ``best.pt``."""
        if self.info.is_main:
            checkpoint.save_best(self.folder, state)

    def resume_state(self) -> dict[str, Any] | None:
        """The checkpoint ``training.resume`` names, if it can be continued: ``auto`` takes the newest loadable
        one trained with the same params (repointing a corrupt ``last.pt`` at it), ``never`` none."""
        setting, device = self.params.training.resume, self.info.device
        if setting == "never":
            return None
        if setting != "auto":
            return checkpoint.load_checkpoint(Path(setting), device)
        found = checkpoint.newest_loadable(self.folder, device)
        if found is None:
            return None
        path, state = found
        if state.get("params_digest") != self.digest:
            self.log(f"not resuming from {path}: it was trained with different params; starting from step 0")
            return None
        if path.name != "last.pt" and self.info.is_main:
            checkpoint.point_last_at(self.folder, path)
            self.log(f"last.pt now points at {path.name}, the newest checkpoint that loads")
        return state


def rng_state() -> dict[str, Any]:
    """The random generators' states of this process."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def load_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
