"""Losses: ``autoregressive`` next-token cross-entropy; ``grokking`` (last position) and ``arithmetic``
(answer tokens) for the algorithmic tasks of ``nanugpt.tasks``.

A loss is a ``Loss``: called on (B, T, V) logits and (B, T) targets it returns
the scalar to minimise; ``from_hidden`` returns the same from the final hidden
states and the weight of a linear head, without the logits in memory when they
would be large; ``metrics`` returns, for evaluation, sums and counts
of any further quality figures (e.g. accuracy), so that averages over many
batches and ranks are exact ratios (correct / total), never means of means.
"""

from __future__ import annotations

import math

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
# Logits that _LinearCrossEntropy computes at a time (128 MiB of float32). Its three matmuls run at the
# rate of one over the whole batch only from about 512 rows up (2048 x 384 hidden, GPT-2's vocabulary,
# 2 threads, head forward + backward: 2.40 s in chunks of 64 rows, 2.10 s of 128, 1.85 s of 512, 1.92 s in one).
HEAD_CHUNK_ELEMENTS = 1 << 25


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
    def forward(
        ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
    ) -> torch.Tensor:
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


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(logits / cap)``: logits bounded smoothly to (-cap, cap); unchanged when ``cap`` is None."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits ``soft_cap(hidden @ weight.T, cap)`` of (N, C) float32 hidden states and
    a (V, C) head, without the (N, V) logits in memory: they are computed ``HEAD_CHUNK_ELEMENTS`` at a time.

    Each chunk's gradients are computed at once, in forward (which is why ``need_grads`` exists): its softmax
    gives both the loss and d loss / d logits, so the exponential is taken once per logit, and the chunk's
    d hidden and its share of d weight follow by two matmuls. Backward only scales them by d loss. The
    unfused head writes two fresh (N, V) tensors per step (logits, their gradient; each page of them faults
    in) and exponentiates each logit twice. GPT-2's vocabulary, 2048 x 384 hidden states, 2 threads, head
    forward + backward, medians of 7 interleaved rounds: 1.80 s fused, 1.94 s with ``F.linear`` and our
    ``cross_entropy``, 2.26 s with ``F.cross_entropy``; 2 x 103 MB of logits held instead of 2 x 412 MB.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        cap: float | None,
        need_grads: bool,
    ) -> torch.Tensor:
        n, vocab = hidden.size(0), weight.size(0)
        rows = math.ceil(n / math.ceil(n * vocab / HEAD_CHUNK_ELEMENTS))  # equal chunks, none much smaller
        counted = targets != ignore_index  # (N,)
        safe_targets = torch.where(counted, targets, 0)[:, None]  # (N, 1)
        row_scale = (counted.to(hidden.dtype) / counted.sum())[:, None]
        row_losses = hidden.new_empty(n, 1)
        logits_buffer = hidden.new_empty(rows, vocab)
        tanh_buffer = hidden.new_empty(rows, vocab) if cap is not None else None
        grad_hidden = torch.empty_like(hidden) if need_grads else None
        grad_weight = torch.zeros_like(weight) if need_grads else None
        for start in range(0, n, rows):
            chunk = slice(start, min(start + rows, n))
            h = hidden[chunk]
            logits = logits_buffer[: h.size(0)]  # (rows, V)
            tanh = None if tanh_buffer is None else tanh_buffer[: h.size(0)]
            if tanh is None:
                torch.mm(h, weight.t(), out=logits)
            else:
                torch.mm(h, weight.t(), out=tanh).div_(cap).tanh_()
                torch.mul(tanh, cap, out=logits)
            picked = logits.gather(1, safe_targets[chunk])
            top = logits.amax(dim=1, keepdim=True)
            exps = logits.sub_(top).exp_()  # in place: the logits are not needed any more
            sums = exps.sum(dim=1, keepdim=True)
            row_losses[chunk] = top + sums.log() - picked
            if need_grads:
                scale = row_scale[chunk]
                grad_logits = exps.mul_(scale / sums).scatter_add_(1, safe_targets[chunk], -scale)
                if tanh is not None:  # d logits / d (h @ weight.T) = 1 - tanh^2
                    grad_logits.addcmul_(grad_logits, tanh.square_(), value=-1)
                torch.mm(grad_logits, weight, out=grad_hidden[chunk])
                grad_weight.addmm_(grad_logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return (row_losses * row_scale).sum()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_loss if ctx.needs_input_grad[0] else None,
            grad_weight * grad_loss if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    cap: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the logits ``soft_cap(hidden @ weight.T, cap)`` of (..., C) hidden states and a
    (V, C) bias-free head, and (...) targets, ``ignore_index`` skipped.

    Equal to ``cross_entropy(soft_cap(F.linear(hidden, weight), cap), targets, ignore_index)``, which computes it
    for logits below ``NATIVE_BELOW_ELEMENTS`` elements and under autocast or in lower precision; larger float32
    ones go to ``_LinearCrossEntropy``, which never holds them all in memory.
    """
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    large = flat_hidden.size(0) * weight.size(0) >= NATIVE_BELOW_ELEMENTS
    float32 = hidden.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(hidden.device.type)
    if not (large and float32):
        return cross_entropy(soft_cap(F.linear(flat_hidden, weight), cap), flat_targets, ignore_index)
    need_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(flat_hidden, weight, flat_targets, ignore_index, cap, need_grads)


class Loss:
    """Mean cross-entropy over the targets that are not ``ignore_index``."""

    metric_names: tuple[str, ...] = ()

    def __init__(self, ignore_index: int = -100):
        self.ignore_index = ignore_index

    def positions(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, T, ...) logits or hidden states and the (B, T) targets of the positions the loss counts: all."""
        return x, targets

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(*self.positions(logits, targets), self.ignore_index)

    def from_hidden(
        self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, cap: float | None = None
    ) -> torch.Tensor:
        """The loss of the logits ``soft_cap(hidden @ weight.T, cap)`` of (B, T, C) final hidden states and the
        (V, C) weight of a bias-free head (``DecoderMixin.linear_head``), computed without them in memory
        when they would be large (``linear_cross_entropy``)."""
        hidden, targets = self.positions(hidden, targets)
        return linear_cross_entropy(hidden, weight, targets, self.ignore_index, cap)

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
