"""A data component for the loss-spike tests (``module: spike_data:PoisonedDataOptions``): the tokenized data of
``helpers.tiny_params``, whose train batches of the data steps ``poisoned`` have every target set to the last
token of the vocabulary, a planted loss spike that only skipping those batches cures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.tokenized import TokenizedDataOptions


class PoisonedDataOptions(TokenizedDataOptions):
    """``tokenized`` data with the train targets of the data steps ``poisoned`` replaced."""

    poisoned: list[int] = []

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> Any:
        source = super().batches(data_dir, meta, split, context_length=context_length, share=share, seed=seed)
        if split != "train" or source is None:
            return source
        return PoisonedBatches(source, set(self.poisoned), meta.vocab_size - 1)


class PoisonedBatches:
    """``source``'s micro-batches, those of the data steps ``poisoned`` with every target ``token``."""

    def __init__(self, source: Any, poisoned: set[int], token: int):
        self.source, self.poisoned, self.token = source, poisoned, token

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.micro_batch(step, micro_step)
        return (x, torch.full_like(y, self.token)) if step in self.poisoned else (x, y)
