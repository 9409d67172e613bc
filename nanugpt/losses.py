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

# Elements of the logits that _CrossEntropy works on at a time (4 MiB of float32): small enough that a
# chunk's temporaries stay in cache, large enough that the per-chunk Python overhead is negligible.
CHUNK_ELEMENTS = 1 << 20
# Logits with fewer elements (32 MiB of float32) go to F.cross_entropy: while they are about cache-sized,
# its fused kernels win (1 thread, medians of 5 rounds: 0.74 vs 1.38 ms at 768 x 128, 36 vs 56 ms at
# 2048 x 2048); from 64 MiB up, _CrossEntropy does (353 vs 257 ms at 4096 x 4096, 725 vs 479 ms at
# 2048 x 16384).
NATIVE_BELOW_ELEMENTS = 1 << 23


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, V) logits over the rows whose target is not ``ignore_index``.

    ``F.cross_entropy`` materialises the (N, V) log-probabilities forward and, backward, a zero-filled
    (N, V) gradient of them and then the gradient of the logits: three full-size tensors, each a fresh
    allocation and several passes over memory. Here forward keeps only the (N,) log-sum-exp, computed
    in row chunks, and backward writes ``softmax - one_hot`` once, chunk by chunk. On a 2048 x 50304
    batch (GPT-2's vocabulary), 2 CPU threads, forward + backward took 0.62x the time of
    ``F.cross_entropy`` (median of 4 rounds, each call including a copy of the logits).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, targets: torch.Tensor,
                ignore_index: int) -> torch.Tensor:
        rows = ctx.rows = max(1, CHUNK_ELEMENTS // logits.size(1))  # rows per chunk
        lse = logits.new_empty(logits.size(0))  # (N,)
        for start in range(0, logits.size(0), rows):
            torch.logsumexp(logits[start : start + rows], dim=1, out=lse[start : start + rows])
        counted = targets != ignore_index  # (N,)
        safe_targets = torch.where(counted, targets, 0)
        picked = logits.gather(1, safe_targets[:, None]).squeeze(1)  # (N,) logit of each target
        count = counted.sum()
        ctx.save_for_backward(logits, safe_targets, counted, lse, count)
        return torch.where(counted, lse - picked, 0.0).sum() / count  # nan when no target counts, as F's

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, safe_targets, counted, lse, count = ctx.saved_tensors
        row_scale = (counted * (grad_loss / count))[:, None]  # (N, 1): d loss / d row loss
        grad = torch.empty_like(logits)
        rows = ctx.rows
        for start in range(0, logits.size(0), rows):
            chunk = grad[start : start + rows]
            torch.sub(logits[start : start + rows], lse[start : start + rows, None], out=chunk)
            chunk.exp_().mul_(row_scale[start : start + rows])  # softmax, weighted
        grad.scatter_add_(1, safe_targets[:, None], -row_scale)  # minus the one-hot targets
        return grad, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (..., V) logits (computed in float32) and (...) targets, ``ignore_index`` skipped.

    Equal to ``F.cross_entropy(logits.float().view(-1, V), targets.view(-1), ignore_index=...)``, which
    computes it below ``NATIVE_BELOW_ELEMENTS`` logits; larger ones take less time and memory with
    ``_CrossEntropy``.
    """
    flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1)
    if flat_logits.numel() < NATIVE_BELOW_ELEMENTS:
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index)
    return _CrossEntropy.apply(flat_logits, flat_targets, ignore_index)


class Loss:
    """Mean cross-entropy over the targets that are not ``ignore_index``."""

    metric_names: tuple[str, ...] = ()

    def __init__(self, ignore_index: int = -100):
        self.ignore_index = ignore_index

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, targets, self.ignore_index)

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
        return cross_entropy(logits[:, -1, :], targets[:, -1], self.ignore_index)

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
