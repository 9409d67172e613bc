"""Data components the tests plant in a run by their import path (``module: planted_data:<Options>``): the
tokenized data of ``helpers.tiny_params`` (or a mixture) with its train batches wrapped.

- ``PoisonedDataOptions``: the batches of the data steps ``poisoned`` have every target set to the last token of
  the vocabulary, a planted loss spike that only skipping those batches cures (``training.spike``);
- ``RecordedDataOptions``: every micro-batch given is appended to ``record_to``-rank<r>.jsonl (step, micro-step
  and the inputs' token ids): what training actually consumed (``pipeline.batch_at``); ``RecordedMixtureOptions``
  the same for a mixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.mixture import MixtureDataOptions
from nanugpt.data.tokenized import TokenizedDataOptions


class TrainWrapper:
    """A mixin over a data component: its train batches wrapped by ``wrap``."""

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> Any:
        parent: Any = super()
        source = parent.batches(data_dir, meta, split, context_length=context_length, share=share, seed=seed)
        if split != "train" or source is None:
            return source
        return self.wrap(source, meta, share)

    def wrap(self, source: Any, meta: TokenMeta, share: BatchShare) -> Any:
        raise NotImplementedError


class WrappedTrainOptions(TrainWrapper, TokenizedDataOptions):
    """``tokenized`` data whose train batches ``wrap`` wraps."""


class PoisonedDataOptions(WrappedTrainOptions):
    """Train targets of the data steps ``poisoned`` replaced."""

    poisoned: list[int] = []

    def wrap(self, source: Any, meta: TokenMeta, share: BatchShare) -> Any:
        return PoisonedBatches(source, set(self.poisoned), meta.vocab_size - 1)


class PoisonedBatches:
    """``source``'s micro-batches, those of the data steps ``poisoned`` with every target ``token``."""

    def __init__(self, source: Any, poisoned: set[int], token: int):
        self.source, self.poisoned, self.token = source, poisoned, token

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.micro_batch(step, micro_step)
        return (x, torch.full_like(y, self.token)) if step in self.poisoned else (x, y)


class RecordedDataOptions(WrappedTrainOptions):
    """Train micro-batches recorded as they are given."""

    record_to: str

    def wrap(self, source: Any, meta: TokenMeta, share: BatchShare) -> Any:
        return RecordedBatches(source, Path(f"{self.record_to}-rank{share.rank}.jsonl"))


class RecordedMixtureOptions(TrainWrapper, MixtureDataOptions):
    """A mixture's train micro-batches recorded as they are given (``RecordedDataOptions``'s records)."""

    record_to: str

    wrap = RecordedDataOptions.wrap


class RecordedBatches:
    """``source``'s micro-batches, each recorded in ``path`` as it is given."""

    def __init__(self, source: Any, path: Path):
        self.source, self.path = source, path

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.micro_batch(step, micro_step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "micro_step": micro_step, "inputs": x.tolist()}) + "\n")
        return x, y
