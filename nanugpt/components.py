"""Base classes for pluggable components.

Every component (model, optimizer, tokenizer, ...) declares its options as a
pydantic model that subclasses the base of its kind below, next to the code
that uses them, and builds itself with ``build(...)``. A params section such
as ``optimizer:`` names the component in ``module:`` and holds its options
beside it::

    optimizer:
      module: adamw_nanogpt
      lr: 1.0e-3

This module imports nothing heavy, so params can be validated cheaply.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ComponentOptions(BaseModel):
    """Options shared by every component: the registered name or import path."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    module: str = Field(description="registered short name, or a dotted import path 'pkg.mod:Options'")


class DataOptions(ComponentOptions):
    """A dataset (``data:`` section): the tokenize stage materializes it, training draws batches from it."""

    dataset: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="dataset name (letters, digits, '_', '-', '.'); token files go to DATA_ROOT/<dataset>/<tokenizer>/",
    )

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Any, raw_dir: Any) -> dict[str, Any]:
        """Write the dataset's token files and ``meta.json`` into ``out_dir``; return the meta.

        ``raw_dir`` is where downloads may be kept (``DATA_ROOT/<dataset>/raw``).
        """
        raise NotImplementedError

    def batches(
        self,
        data_dir: Any,
        meta: dict[str, Any],
        split: str,
        context_length: int,
        rows: int,
        global_rows: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> Any:
        """A source of (inputs, targets) micro-batches of ``split`` (see ``nanugpt.data.Batches``), or None
        when the split is empty."""
        raise NotImplementedError


class TokenizerOptions(ComponentOptions):
    """A text <-> token ids codec (``tokenizer:`` section)."""

    def build(self, vocab: list[str] | None = None) -> Any:
        """Return a tokenizer; ``vocab`` is the saved vocabulary of tokenizers fitted on a corpus."""
        raise NotImplementedError


class ModelOptions(ComponentOptions):
    """A causal language model (``model:`` section)."""

    context_length: int = Field(gt=0, description="tokens of context the model sees")

    def build(self, vocab_size: int) -> Any:
        """Return an ``nn.Module`` mapping token ids (B, T) to logits (B, T, V)."""
        raise NotImplementedError


class OptimizerOptions(ComponentOptions):
    """An optimizer (``optimizer:`` section)."""

    lr: float = Field(gt=0, description="peak learning rate")

    def build(self, model: Any, device_type: str) -> Any:
        """Return a ``torch.optim.Optimizer`` over the model's parameters."""
        raise NotImplementedError


class SchedulerOptions(ComponentOptions):
    """A learning-rate schedule (``scheduler:`` section)."""

    def build(self, max_steps: int, base_lr: float) -> Any:
        """Return an object whose ``factor(step)`` multiplies the peak lr ``base_lr`` (``optimizer.lr``).

        It may also have ``report(lrs, losses) -> dict``, written to ``train_summary.json`` after training.
        """
        raise NotImplementedError


class LossOptions(ComponentOptions):
    """A training loss (``loss:`` section)."""

    def build(self) -> Any:
        """Return a ``nanugpt.losses.Loss``: ``loss(logits, targets) -> scalar`` plus evaluation metrics."""
        raise NotImplementedError


class ScalerOptions(ComponentOptions):
    """A gradient scaler (``scaler:`` section)."""

    def build(self, device_type: str, dtype: str) -> Any:
        """Return an object with torch.amp.GradScaler's interface."""
        raise NotImplementedError


KIND_BASES: dict[str, type[ComponentOptions]] = {
    "data": DataOptions,
    "tokenizer": TokenizerOptions,
    "model": ModelOptions,
    "optimizer": OptimizerOptions,
    "scheduler": SchedulerOptions,
    "loss": LossOptions,
    "scaler": ScalerOptions,
}
