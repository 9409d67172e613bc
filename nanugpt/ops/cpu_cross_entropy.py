"""CPU-tuned autograd kernels of the cross-entropy: chunked over rows, with the linear head fused in.

Both win on CPU float32 for large logits only, where memory traffic dominates; ``nanugpt.ops.cross_entropy``
decides when they run (never on CUDA, where ``F.cross_entropy`` is one fused kernel). Chunk sizes are
arguments; their defaults are the sizes measured best on CPU.
"""

from __future__ import annotations

import math

import torch

# Elements of the logits that ChunkedCrossEntropy works on at a time (4 MiB of float32): small enough that a
# chunk's temporaries stay in cache, large enough that the per-chunk Python overhead is negligible.
CHUNK_ELEMENTS = 1 << 20
# Logits that LinearCrossEntropy computes at a time (128 MiB of float32). Its three matmuls run at the
# rate of one over the whole batch only from about 512 rows up (2048 x 384 hidden, GPT-2's vocabulary,
# 2 threads, head forward + backward: 2.40 s in chunks of 64 rows, 2.10 s of 128, 1.85 s of 512, 1.92 s in one).
HEAD_CHUNK_ELEMENTS = 1 << 25


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, V) logits over the rows whose target is not ``ignore_index``, computed
    ``chunk_elements`` logits at a time.

    ``F.cross_entropy`` materialises the (N, V) log-probabilities forward and, backward, a zero-filled
    (N, V) gradient of them and then the gradient of the logits: three full-size tensors, each a fresh
    allocation and several passes over memory. Here forward keeps only the (N,) log-sum-exp, computed
    in row chunks, and backward writes ``softmax - one_hot`` once, chunk by chunk. On a 2048 x 50304
    batch (GPT-2's vocabulary), 2 CPU threads, forward + backward took 0.62x the time of
    ``F.cross_entropy`` (median of 4 rounds, each call including a copy of the logits).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        chunk_elements: int,
    ) -> torch.Tensor:
        rows = ctx.rows = max(1, chunk_elements // logits.size(1))  # rows per chunk
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
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        logits, safe_targets, counted, lse, count = ctx.saved_tensors
        row_scale = (counted * (grad_loss / count))[:, None]  # (N, 1): d loss / d row loss
        grad = torch.empty_like(logits)
        rows = ctx.rows
        for start in range(0, logits.size(0), rows):
            chunk = grad[start : start + rows]
            torch.sub(logits[start : start + rows], lse[start : start + rows, None], out=chunk)
            chunk.exp_().mul_(row_scale[start : start + rows])  # softmax, weighted
        grad.scatter_add_(1, safe_targets[:, None], -row_scale)  # minus the one-hot targets
        return grad, None, None, None


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits ``soft_cap(hidden @ weight.T, cap)`` of (N, C) float32 hidden states and
    a (V, C) head, without the (N, V) logits in memory: they are computed ``chunk_elements`` at a time.

    Each chunk's gradients are computed at once, in forward (which is why ``need_grads`` exists): its softmax
    gives both the loss and d loss / d logits, so the exponential is taken once per logit, and the chunk's
    d hidden and its share of d weight follow by two matmuls. Backward only scales them by d loss. The
    unfused head writes two fresh (N, V) tensors per step (logits, their gradient; each page of them faults
    in) and exponentiates each logit twice. GPT-2's vocabulary, 2048 x 384 hidden states, 2 threads, head
    forward + backward, medians of 7 interleaved rounds: 1.80 s fused, 1.94 s with ``F.linear`` and the
    chunked cross-entropy, 2.26 s with ``F.cross_entropy``; 2 x 103 MB of logits held instead of 2 x 412 MB.
    """

    @staticmethod
    def forward(  # noqa: PLR0917 (called through LinearCrossEntropy.apply, which takes no keyword arguments)
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        cap: float | None,
        need_grads: bool,
        chunk_elements: int,
    ) -> torch.Tensor:
        n, vocab = hidden.size(0), weight.size(0)
        rows = math.ceil(n / math.ceil(n * vocab / chunk_elements))  # equal chunks, none much smaller
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
            None,
        )


def chunked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, chunk_elements: int = CHUNK_ELEMENTS
) -> torch.Tensor:
    """Mean cross-entropy of (N, V) logits and (N,) targets by ``ChunkedCrossEntropy``, ``chunk_elements`` logits
    at a time."""
    return ChunkedCrossEntropy.apply(logits, targets, ignore_index, chunk_elements)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    cap: float | None = None,
    chunk_elements: int = HEAD_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Mean cross-entropy of the logits ``soft_cap(hidden @ weight.T, cap)`` of (N, C) float32 hidden states and
    a (V, C) head by ``LinearCrossEntropy``, ``chunk_elements`` logits at a time."""
    need_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, cap, need_grads, chunk_elements)
