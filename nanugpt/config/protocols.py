"""What the train loop relies on in the components that ``build()`` returns.

Each is a ``typing.Protocol``: a component of a user's own (named by import
path in a params file) needs only these methods, not our base classes.
Optional capabilities are protocols of their own, declared by the component
and checked with ``isinstance``, never probed attribute by attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch


class Schedule(Protocol):
    """An lr schedule: the factor that multiplies each parameter group's peak lr at a step."""

    def factor(self, step: int) -> float:
        """The lr of ``step`` (counted from 0) as a share of the peak lr."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings, stored in checkpoints."""
        ...


@runtime_checkable
class ReportingSchedule(Schedule, Protocol):
    """A schedule that is an experiment of its own (an lr range test).

    Its run ends, rather than fails, when the loss diverges, and ``report``
    summarises the whole run into ``train_summary.json``'s ``schedule``.
    """

    def report(self, lrs: list[float], losses: list[float]) -> dict[str, Any]:
        """A summary of the run from the lr and the train loss of every step."""
        ...


class Scaler(Protocol):
    """Gradient scaling around backward and the optimizer step, as ``torch.amp.GradScaler`` does it."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call ``backward()`` on."""
        ...

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale before clipping."""
        ...

    def step(self, optimizer: torch.optim.Optimizer) -> Any:
        """Step the optimizer (or skip the step on overflow)."""
        ...

    def update(self) -> None:
        """Adjust the scale after a step."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state, stored in checkpoints."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


class Stateful(Protocol):
    """A part of a run whose state a checkpoint holds: the checkpoint is the sum of these."""

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors (checkpoints load with ``weights_only=True``)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


class Tokenizer(Protocol):
    """Text <-> token ids: what the tokenize stage, the data loader and generation need of a tokenizer.

    ``vocab()`` is the vocabulary to save beside the tokens when it was fitted on the corpus, else None.
    """

    name: str
    vocab_size: int
    eot_id: int | None  # the end-of-text id, or None

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
        ...

    def vocab(self) -> list[str] | None:
        """The fitted vocabulary by id, or None for a fixed one."""
        ...
