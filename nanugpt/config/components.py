"""Base classes for pluggable components.

Every component (model, optimizer, tokenizer, ...) declares its options as a
pydantic model that subclasses the base of its kind below, next to the code
that uses them, and builds itself with ``build(...)``. A params section such
as ``optimizer:`` names the component in ``module:`` and holds its options
beside it::

    optimizer:
      module: adamw_nanogpt
      lr: 1.0e-3

A rule that involves another section (the keller scaler needs ``training.grad_clip``
0, the grokking task's prime must be the tokenizer's) belongs to the component it
concerns: its ``check(params)`` returns the problems, and ``validate_params`` calls
the hook of every component section, so a user's own component (named by import
path) is checked the same way.

This module imports nothing heavy, so params can be validated cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the types that build() returns, named without importing torch
    import torch

    from nanugpt.config.params import Params
    from nanugpt.config.protocols import Scaler, Schedule
    from nanugpt.config.token_meta import TokenMeta
    from nanugpt.models.base import LanguageModel
    from nanugpt.optim.losses import Loss

Problem = tuple[str, str]  # (dotted key, message), e.g. ("training.grad_clip", "must be 0 with ..., got 1.0")


class ComponentOptions(BaseModel):
    """Options shared by every component: the registered name or import path."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    module: str = Field(description="registered short name, or a dotted import path 'pkg.mod:Options'")

    def check(self, params: Params) -> list[Problem]:
        """Problems of these options in the context of the whole, otherwise valid, ``params``; none by default."""
        return []


@dataclass(frozen=True)
class BatchShare:
    """One process's share of each step's global batch: every data component slices ranks with it.

    A step draws ``global_rows`` rows; process ``rank`` of ``world_size`` takes micro-batches
    ``rank, rank + world_size, ...`` of ``rows`` rows each, ``micro_steps`` of them per step.
    """

    rows: int
    global_rows: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1 or self.global_rows % (self.rows * self.world_size) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"{self}: global_rows must be a positive multiple of rows x world_size, rank < world_size")

    @property
    def micro_steps(self) -> int:
        """Micro-batches per step on each process."""
        return self.global_rows // (self.rows * self.world_size)

    def first_row(self, micro_step: int) -> int:
        """The position in the step's global batch of this process's ``micro_step``'s first row."""
        return (micro_step * self.world_size + self.rank) * self.rows


class DataOptions(ComponentOptions):
    """A dataset (``data:`` section): the tokenize stage materializes it, training draws batches from it."""

    dataset: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="dataset name (letters, digits, '_', '-', '.'); token files go to DATA_ROOT/<dataset>/<tokenizer>/",
    )

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        """Write the dataset's token files and then ``meta.json`` (``nanugpt.config.token_meta.write_meta``) into
        ``out_dir``; return the meta. ``raw_dir`` is where downloads may be kept (``DATA_ROOT/<dataset>/raw``)."""
        raise NotImplementedError

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, context_length: int, share: BatchShare, seed: int
    ) -> Any:
        """A source of (inputs, targets) micro-batches of ``split`` for this process's ``share`` (see
        ``nanugpt.data.tokenized.Batches``), or None when the split is empty. ``meta`` is ``read_meta(data_dir)``."""
        raise NotImplementedError


class TokenizerOptions(ComponentOptions):
    """A text <-> token ids codec (``tokenizer:`` section)."""

    def build(self, vocab: list[str] | None = None) -> Any:
        """Return a tokenizer; ``vocab`` is the saved vocabulary of tokenizers fitted on a corpus."""
        raise NotImplementedError


class ModelOptions(ComponentOptions):
    """A causal language model (``model:`` section)."""

    context_length: int = Field(gt=0, description="tokens of context the model sees")

    def build(self, vocab_size: int) -> LanguageModel:
        """Return an ``nn.Module`` (``nanugpt.models.base.LanguageModel``) that maps token ids (B, T) to logits
        (B, T, V) of ``vocab_size`` (or more, padded) tokens; decoders (``DecoderMixin``) also give their final
        hidden states (``forward(idx, hidden_only=True)``) and their head (``linear_head()``), so the loss can
        apply the head itself."""
        raise NotImplementedError


class OptimizerOptions(ComponentOptions):
    """An optimizer (``optimizer:`` section)."""

    lr: float = Field(gt=0, description="peak learning rate")

    def build(self, model: torch.nn.Module, device_type: str) -> torch.optim.Optimizer:
        """Return a ``torch.optim.Optimizer`` over the model's parameters."""
        raise NotImplementedError


class SchedulerOptions(ComponentOptions):
    """A learning-rate schedule (``scheduler:`` section)."""

    def build(self, max_steps: int, base_lr: float) -> Schedule:
        """Return a ``nanugpt.config.protocols.Schedule``, whose ``factor(step)`` multiplies the peak lr ``base_lr``
        (``optimizer.lr``). A ``ReportingSchedule`` (an lr range test) also has ``report(lrs, losses)``, written
        to ``train_summary.json`` after training, and its run ends rather than fails when the loss diverges.
        """
        raise NotImplementedError


class LossOptions(ComponentOptions):
    """A training loss (``loss:`` section)."""

    def build(self) -> Loss:
        """Return a ``nanugpt.optim.losses.Loss``: ``loss(logits, targets) -> scalar`` plus evaluation metrics."""
        raise NotImplementedError


class ScalerOptions(ComponentOptions):
    """A gradient scaler (``scaler:`` section)."""

    def build(self, device_type: str, dtype: str) -> Scaler:
        """Return a ``nanugpt.config.protocols.Scaler``: torch.amp.GradScaler's interface."""
        raise NotImplementedError


def heads_divide_width(n_embd: int, n_head: int) -> list[Problem]:
    """The problem of attention heads that do not split ``model.n_embd`` evenly (for models' ``check``)."""
    if n_embd % n_head:
        return [("model.n_embd", f"must be divisible by model.n_head ({n_head}), got {n_embd}")]
    return []


KIND_BASES: dict[str, type[ComponentOptions]] = {
    "data": DataOptions,
    "tokenizer": TokenizerOptions,
    "model": ModelOptions,
    "optimizer": OptimizerOptions,
    "scheduler": SchedulerOptions,
    "loss": LossOptions,
    "scaler": ScalerOptions,
}
