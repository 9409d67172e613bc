"""Losses: ``autoregressive`` next-token cross-entropy; ``grokking`` (last position) and ``arithmetic``
(answer tokens) for the algorithmic tasks of ``nanugpt.data.tasks``.

A loss is a ``Loss``: called on (B, T, V) logits and (B, T) targets it returns
the scalar to minimise; ``from_hidden`` returns the same from the final hidden
states and the weight of a linear head, without the logits in memory when they
would be large; ``metrics`` returns, for evaluation, sums and counts
of any further quality figures (e.g. accuracy), so that averages over many
batches and ranks are exact ratios (correct / total), never means of means.
The kernels that compute the cross-entropy, and the choice among them by
device and dtype, are in ``nanugpt.ops``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from nanugpt.config.schema import LossOptions
from nanugpt.models.base import DecoderMixin
from nanugpt.ops.cross_entropy import DEFAULT_SIZES, KernelSizes, cross_entropy, linear_cross_entropy


class Loss:
    """Mean cross-entropy over the targets that are not ``ignore_index``."""

    metric_names: tuple[str, ...] = ()

    def __init__(self, ignore_index: int = -100, sizes: KernelSizes = DEFAULT_SIZES):
        self.ignore_index = ignore_index
        self.sizes = sizes  # steer the CPU kernels (nanugpt.ops.cross_entropy); the defaults are the measured best

    def positions(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, T, ...) logits or hidden states and the (B, T) targets of the positions the loss counts: all."""
        return x, targets

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of (B, T, V) logits and (B, T) targets (``nanugpt.ops.cross_entropy`` picks the kernel)."""
        return cross_entropy(*self.positions(logits, targets), self.ignore_index, self.sizes)

    def from_hidden(
        self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, cap: float | None = None
    ) -> torch.Tensor:
        """The loss of the logits ``soft_cap(hidden @ weight.T, cap)`` of (B, T, C) final hidden states and the
        (V, C) weight of a bias-free head (``DecoderMixin.linear_head``), computed without them in memory
        when they would be large (``linear_cross_entropy``)."""
        hidden, targets = self.positions(hidden, targets)
        return linear_cross_entropy(hidden, weight, targets, ignore_index=self.ignore_index, cap=cap, sizes=self.sizes)

    def of_model(
        self, model: torch.nn.Module, plain: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """The loss of ``model`` (``plain`` unwrapped: not compiled, DDP-wrapped) on inputs ``x``, targets ``y``: for
        a decoder from its hidden states and linear head (``from_hidden``: large logits never fill memory), else
        from its logits."""
        if not isinstance(plain, DecoderMixin):
            return self(model(x), y)
        hidden = model(x, hidden_only=True)
        weight, cap = plain.linear_head()  # after forward: a sharded model's head is gathered then
        return self.from_hidden(hidden, weight, y, cap)

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

    def positions(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, -1], targets[:, -1]

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
