"""When a run saves its state, and where a run resumes from.

The state itself is the sum of the run's parts (``Trainer.state_dict``); the
files are written by ``nanugpt.checkpoint``. Only rank 0 writes.
"""

from __future__ import annotations

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
    """Saves ``step-NNNNNNN.pt`` + ``last.pt`` every ``training.checkpoint_every`` steps, at the last step and
    when stopped by a signal, and ``best.pt`` at each new best val loss; finds the checkpoint to resume from."""

    def __init__(self, folder: Path, params: Params, info: DistInfo, log: Callable[[str], None]):
        self.folder, self.params, self.info, self.log = folder, params, info, log
        self.every, self.keep_last = params.training.checkpoint_every, params.training.keep_last
        self.digest = params.digest(RESUME_KEYS)

    def should_save(self, step: int, final: bool, stopping: bool) -> bool:
        """True at the steps whose state is saved."""
        return final or stopping or (self.every > 0 and step % self.every == 0)

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the state of ``step`` and point ``last.pt`` at it."""
        if self.info.is_main:
            checkpoint.save_checkpoint(self.folder, step, state, self.keep_last)

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
