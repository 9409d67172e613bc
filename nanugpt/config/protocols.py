"""The contracts: what the train loop, evaluation and generation rely on in the parts of a run.

The model (``LanguageModel``), the data (``Batches``), the tokenizer, the loss, the schedule, the scaler,
the metric sinks and every part whose state a checkpoint holds (``Stateful``).

Each is a ``typing.Protocol``: a component of a user's own (named by import
path in a params file) needs only these methods, not our base classes.
Optional capabilities are protocols of their own, declared by the component
and checked with ``isinstance``, never probed attribute by attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn


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


@runtime_checkable
class LanguageModel(Protocol):
    """What the train loop, evaluation and generation may rely on in a built model."""

    vocab_size: int  # token ids the data holds
    padded_vocab: int  # the width of the logits: vocab_size rounded up (padded ids are never targets)
    context_length: int  # the most positions one forward sees

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, padded_vocab) of token ids (B, T)."""
        ...

    def flops_per_token(self) -> float:
        """Training FLOPs per token, forward and backward."""
        ...

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; with ``non_embedding``, without the tables that are only looked up."""
        ...

    def transformer_blocks(self) -> list[nn.Module]:
        """The repeated blocks, in order: the units FSDP shards and activation checkpointing recomputes."""
        ...


@dataclass(frozen=True)
class DocumentPacking:
    """How a data component packs whole documents into windows (``data.packing: documents``): what the model needs
    to know to mask its attention at their boundaries (``nanugpt.data.packing.mask_model_documents``)."""

    restart_positions: bool  # positions count from each document's first token


@runtime_checkable
class PacksDocuments(Protocol):
    """Data options (a ``DataOptions``) whose windows may hold whole documents, which the model must then mask."""

    def document_packing(self) -> DocumentPacking | None:
        """How the windows pack documents; None: cut anywhere, the model attends over the whole window."""
        ...


@runtime_checkable
class DocumentMasking(Protocol):
    """A model whose attention can stop at document boundaries (``data.packing: documents``).

    After ``mask_documents(eot_id, ...)``, a forward without a key/value cache finds the documents of each row
    from its end-of-text ids: a position attends only to earlier positions of its own document (the end-of-text
    id belongs to the document it ends), and with ``restart_positions`` its position counts from its document's
    first token. A model that cannot take a mask does not have this method, and packed training refuses it.
    """

    def mask_documents(self, eot_id: int, *, restart_positions: bool) -> None:
        """Mask attention at the boundaries that ``eot_id`` marks from now on."""
        ...


class Loss(Protocol):
    """A training loss (what ``LossOptions.build`` returns): the scalar to minimise, and evaluation metrics as
    sums and counts, so that averages over batches and ranks are exact ratios (``nanugpt.optim.losses``)."""

    metric_names: tuple[str, ...]

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of (B, T, V) logits and (B, T) targets."""
        ...

    def of_model(
        self, model: torch.nn.Module, plain: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """The loss of ``model`` (``plain``: the same model unwrapped) on inputs ``x`` and targets ``y``."""
        ...

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (sum, count)}`` of each metric in ``metric_names`` on one batch."""
        ...


class Batches(Protocol):
    """What training and evaluation need of a data split."""

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (rows, T) of this process's ``micro_step`` of global batch ``step``;
        a pure function of its arguments, so resumed and distributed runs see the same data."""
        ...


class MetricSink(Protocol):
    """Where metrics go: ``write`` is called once per row the sink takes, in step order."""

    every_step: bool
    """True: a row for every step (``train/loss``, ``train/lr``, ``train/tokens``; the interval's figures on its
    last step). False: one row per log interval, that of its last step (every metric of the interval)."""

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of ``step`` (names as in this module's docstring)."""
        ...

    def close(self, failed: bool = False) -> None:
        """Flush and release whatever the sink holds; ``failed``: the run ends by an exception or a signal."""
        ...


@runtime_checkable
class MixedBatches(Batches, Protocol):
    """Batches drawn from several named sources in set proportions (``nanugpt.data.mixture``): the tokens each
    source gave, and each source's batches alone (its own val loss)."""

    def tokens_by_source(self, steps: int) -> dict[str, int]:
        """The tokens each source gave to the global batches of steps ``0 .. steps - 1``."""
        ...

    def named_parts(self) -> Mapping[str, Batches]:
        """Each source's batches alone, by name."""
        ...
