"""Losses: ``autoregressive`` next-token cross-entropy.

A loss is a ``Loss``: called on (B, T, V) logits and (B, T) targets it returns
the scalar to minimise; ``metrics`` returns, for evaluation, sums and counts
of any further quality figures (e.g. accuracy), so that averages over many
batches and ranks are exact ratios (correct / total), never means of means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from nanugpt.components import LossOptions


class Loss:
    """Mean cross-entropy over the targets that are not ``ignore_index``."""

    metric_names: tuple[str, ...] = ()

    def __init__(self, ignore_index: int = -100):
        self.ignore_index = ignore_index

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=self.ignore_index
        )

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (sum, count)}`` of each metric in ``metric_names`` on one batch."""
        return {}


class AutoregressiveOptions(LossOptions):
    """Next-token cross-entropy over every position."""

    ignore_index: int = Field(-100, description="target id that contributes no loss")

    def build(self) -> Loss:
        return Loss(self.ignore_index)
