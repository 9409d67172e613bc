"""Losses: ``autoregressive`` next-token cross-entropy; ``grokking`` (last position) and ``arithmetic``
(answer tokens) for the algorithmic tasks of ``nanugpt.tasks``.

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


class LastPositionLoss(Loss):
    """Cross-entropy of the last position only; ``accuracy`` = examples whose last token is predicted / examples."""

    metric_names = ("accuracy",)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, -1, :].float(), targets[:, -1], ignore_index=self.ignore_index)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        last = targets[:, -1]  # (B,)
        counted = last != self.ignore_index
        correct = (logits[:, -1, :].argmax(dim=-1) == last) & counted
        return {"accuracy": (correct.sum().float(), counted.sum().float())}


class GrokkingLossOptions(LossOptions):
    """Cross-entropy on the last position only (the ``c`` of ``a op b = c``); reports ``accuracy``."""

    def build(self) -> LastPositionLoss:
        return LastPositionLoss()


class AnswerLoss(Loss):
    """Cross-entropy on the answer tokens (every target that is not ``ignore_index``), with per-problem metrics.

    ``token_accuracy`` = answer tokens predicted right / answer tokens; ``exact_match`` = problems (rows with
    at least one answer token) whose every answer token is predicted right / problems.
    """

    metric_names = ("token_accuracy", "exact_match")

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        answer = targets != self.ignore_index  # (B, T)
        correct = (logits.argmax(dim=-1) == targets) & answer  # (B, T)
        problems = answer.any(dim=1)  # (B,)
        solved = (correct | ~answer).all(dim=1) & problems  # (B,)
        return {
            "token_accuracy": (correct.sum().float(), answer.sum().float()),
            "exact_match": (solved.sum().float(), problems.sum().float()),
        }


class ArithmeticLossOptions(LossOptions):
    """Cross-entropy on the answer tokens only; reports ``token_accuracy`` and per-problem ``exact_match``."""

    def build(self) -> AnswerLoss:
        return AnswerLoss()
