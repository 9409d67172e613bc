"""Losses: ``autoregressive`` next-token cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from nanugpt.components import LossOptions


class AutoregressiveOptions(LossOptions):
    """Next-token cross-entropy over every position."""

    ignore_index: int = Field(-100, description="target id that contributes no loss")

    def build(self):
        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            """Mean cross-entropy of (B, T, V) logits against (B, T) next tokens."""
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=self.ignore_index
            )

        return loss
