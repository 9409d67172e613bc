"""``muon``: momentum SGD with orthogonalised updates for hidden matrices, AdamW for the rest.

Muon (Keller Jordan et al., 2024) keeps a Nesterov momentum buffer per 2-D
hidden weight and replaces the update by its nearest semi-orthogonal matrix
(all singular values ~1), computed by a quintic Newton-Schulz iteration. The
update's direction is the momentum's, its size is set by ``lr`` alone, and
every direction of the matrix moves at the same rate.

Parameters Muon is not meant for go to an auxiliary AdamW inside the same
optimizer: embeddings (``nn.Embedding``), the output head (a module named
``lm_head``, or the module a Hugging Face model returns from
``get_output_embeddings()``; a head tied to an embedding is that embedding)
and every scalar or vector (norm gains, biases).

Learning rates and the schedule: the train loop sets every param group's
``lr`` to ``optimizer.lr * factor(step)``. Each group also holds ``lr_ratio``
and steps with ``group["lr"] * group["lr_ratio"]``: 1 for the Muon group,
``embed_lr / lr`` for the embedding tables and ``adamw_lr / lr`` for the other
AdamW groups, so the schedule scales all of them and their ratios stay as
configured. Embeddings get an lr of their own because a table whose rows are
normalised before use (``nanogpt_modern``) learns at the pace of lr / row
scale, and its rows start at unit scale, far above the head's.

With ``torch.distributed`` initialised and more than one process, the
Newton-Schulz work is sharded: each rank orthogonalises a slice of the
matrices of each shape and the slices are all-gathered, so every rank applies
the same update. This assumes every rank holds the same gradients (DDP
all-reduces them), so momentum buffers agree and a rank-0 checkpoint holds
all of the optimizer's state.

Under FSDP (``training.strategy: fsdp``) parameters, gradients and momentum
buffers are DTensors sharded on dim 0: each rank keeps its rows of the
momentum, the updates are gathered whole (Newton-Schulz needs whole
matrices), orthogonalised with the work split across ranks as above, and
each rank applies its own rows of the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from pydantic import Field, field_validator
from torch import nn
from torch.distributed.tensor import DTensor, Replicate

from nanugpt.config.schema import OptimizerOptions

# Quintic Newton-Schulz coefficients of Muon: f(x) = a x + b x^3 + c x^5 is applied to every singular
# value (scaled into [0, 1]). The large slope at 0 (a = 3.4445, so small singular values grow ~480x over
# 5 steps) buys speed; the price is that 1 is not a fixed point: values settle in a band, about
# [0.68, 1.14] after 5 steps for any singular value >= 1% of the Frobenius norm, which Muon's authors
# found does not hurt training (tests/unit/optim/test_optimizers.py checks the band).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Modules whose parameters are the output head, by name (the last part of the qualified module name).
HEAD_MODULE_NAMES = ("lm_head",)


class MuonOptions(OptimizerOptions):
    """Muon: orthogonalised Nesterov momentum for hidden matrices; AdamW for embeddings, head and vectors."""

    lr: float = Field(gt=0, description="peak lr of the Muon (hidden matrix) updates, whose spectral norm is ~1")
    momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum after the warm-up")
    momentum_start: float = Field(0.85, ge=0, lt=1, description="Muon momentum at step 0")
    momentum_warmup_steps: int = Field(
        300, ge=0, description="steps over which momentum rises linearly from momentum_start to momentum; 0 = none"
    )
    nesterov: bool = Field(True, description="Nesterov momentum (orthogonalise g + momentum * buffer)")
    ns_steps: int = Field(5, gt=0, description="Newton-Schulz iterations per update")
    adamw_lr: float = Field(3e-3, gt=0, description="peak lr of the AdamW groups; the schedule scales it like lr")
    embed_lr: float | None = Field(None, gt=0, description="peak lr of the embedding tables (AdamW); null = adamw_lr")
    adamw_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW (beta1, beta2), each in [0, 1)")
    adamw_eps: float = Field(1e-8, gt=0, description="AdamW denominator epsilon")
    weight_decay: float = Field(
        0.0, ge=0, description="decoupled weight decay on Muon matrices, embeddings and head; never on vectors"
    )

    @field_validator("adamw_betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError("each beta must be in [0, 1)")
        return betas

    def build(self, model: nn.Module, device_type: str) -> Muon:
        """Split the model's parameters into Muon and AdamW groups and return the optimizer."""
        split = split_params(model)
        adamw = {
            "kind": "adamw",
            "lr": self.lr,
            "lr_ratio": self.adamw_lr / self.lr,
            "betas": self.adamw_betas,
            "eps": self.adamw_eps,
        }
        embed_lr = self.embed_lr if self.embed_lr is not None else self.adamw_lr
        groups = [
            {
                "kind": "muon",
                "params": split["muon"],
                "lr": self.lr,
                "lr_ratio": 1.0,
                "weight_decay": self.weight_decay,
                "momentum": self.momentum,
                "momentum_start": self.momentum_start,
                "momentum_warmup_steps": self.momentum_warmup_steps,
                "nesterov": self.nesterov,
                "ns_steps": self.ns_steps,
            },
            {**adamw, "params": split["embedding"], "lr_ratio": embed_lr / self.lr, "weight_decay": self.weight_decay},
            {**adamw, "params": split["adamw_decay"], "weight_decay": self.weight_decay},
            {**adamw, "params": split["adamw_no_decay"], "weight_decay": 0.0},
        ]
        return Muon([g for g in groups if g["params"]], lr=self.lr)


def split_params(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by destination: ``muon`` (2-D hidden matrices), ``embedding`` (tables of
    ``nn.Embedding`` modules), ``adamw_decay`` (the output head, matrices of 3 or more dims) and
    ``adamw_no_decay`` (scalars and vectors).

    Each parameter appears once, in ``model.parameters()`` order (a tied head is its embedding).
    """
    embeddings: set[int] = set()
    heads: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            embeddings.update(id(p) for p in module.parameters(recurse=False))
        elif name.rsplit(".", 1)[-1] in HEAD_MODULE_NAMES:
            heads.update(id(p) for p in module.parameters(recurse=False))
    output_embeddings = getattr(model, "get_output_embeddings", None)
    head = output_embeddings() if callable(output_embeddings) else None
    if isinstance(head, nn.Module):
        heads.update(id(p) for p in head.parameters(recurse=False))

    split: dict[str, list[nn.Parameter]] = {"muon": [], "embedding": [], "adamw_decay": [], "adamw_no_decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in embeddings:
            split["embedding"].append(p)
        elif p.dim() < 2:
            split["adamw_no_decay"].append(p)
        elif p.dim() == 2 and id(p) not in heads:
            split["muon"].append(p)
        else:
            split["adamw_decay"].append(p)
    return split


def newton_schulz(g: torch.Tensor, steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately orthogonalise each (m, n) matrix of ``g`` (shape (m, n) or (k, m, n)).

    Returns ``U f(S) V^T`` for ``g = U S V^T`` in ``dtype``, where ``f`` is the quintic NS polynomial
    iterated ``steps`` times on singular values scaled by the Frobenius norm (see NS_COEFFICIENTS).
    bfloat16 suits GPUs (tensor cores; the iteration corrects its own rounding); float32 suits CPUs,
    most of which multiply bfloat16 matrices far slower than float32. In float32, matrices far from
    square take the cheaper of the two equal computations (see ``gram_iterations_are_cheaper``).
    """
    x = g.to(dtype)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    wide = x.size(-2) <= x.size(-1)
    if not wide:  # iterate on the (k, small, large) side: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # all singular values now <= 1
    m, n = x.shape[-2:]
    if dtype == torch.float32 and gram_iterations_are_cheaper(m, n, steps):
        x = _gram_iterations(x, steps)
    else:
        x = _direct_iterations(x, steps)
    if not wide:
        x = x.mT
    return x if batched else x.squeeze(0)


def _direct_iterations(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` NS iterations on (k, m, n) ``x`` (m <= n): X <- a X + (b A + c A^2) X with A = X X^T."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT  # (k, m, m)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    return x


def _gram_iterations(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The same iterations as ``_direct_iterations``, carried out on (k, m, m) matrices only.

    Every iterate is ``X_i = Q_i X_0`` with ``Q_i`` a polynomial in ``A_0 = X_0 X_0^T``, so all the
    matrices involved are symmetric and commute: ``P_i = a I + b A_i + c A_i^2``, ``Q_{i+1} = P_i Q_i``
    and ``A_{i+1} = X_{i+1} X_{i+1}^T = P_i A_i P_i``. Only the first Gram matrix and the final
    ``Q X_0`` touch the long side n, which makes this cheaper when n is a few times m.
    """
    a, b, c = NS_COEFFICIENTS

    def polynomial(gram: torch.Tensor) -> torch.Tensor:
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        poly.diagonal(dim1=-2, dim2=-1).add_(a)  # a I + b A + c A^2
        return poly

    gram = x @ x.mT  # (k, m, m)
    q = poly = polynomial(gram)
    for _ in range(steps - 1):
        gram = poly @ gram @ poly
        poly = polynomial(gram)
        q = poly @ q
    return q @ x  # (k, m, n)


def gram_iterations_are_cheaper(m: int, n: int, steps: int) -> bool:
    """Whether ``_gram_iterations`` needs fewer FLOPs than ``_direct_iterations`` for (m, n), m <= n.

    Direct: each step multiplies X X^T, A^2 and P X, ``steps * (4 m^2 n + 2 m^3)``. Gram: X X^T and the
    final Q X once (``4 m^2 n``) plus ``4 steps - 3`` (m, m) products.
    """
    direct = steps * (4 * m * m * n + 2 * m**3)
    gram = 4 * m * m * n + (4 * steps - 3) * 2 * m**3
    return gram < direct


def shape_scale(shape: torch.Size) -> float:
    """Update multiplier for an (out, in) matrix: sqrt(max(1, out / in)).

    An orthogonalised update has spectral norm ~1 whatever its shape; a matrix that widens its input
    (out > in) gets a proportionally larger step so that its output changes as much per unit input.
    """
    return math.sqrt(max(1.0, shape[0] / shape[1]))


def shard(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """The ``[start, stop)`` slice of ``count`` matrices that ``rank`` orthogonalises; slices have equal
    length ``ceil(count / world_size)`` (the last ones may reach past ``count``: padding)."""
    per_rank = -(-count // world_size)
    return rank * per_rank, (rank + 1) * per_rank


def orthogonalise_all(updates: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
    """Newton-Schulz on every matrix of ``updates``, batched by shape; sharded over ranks when
    ``torch.distributed`` runs more than one process. Computes in bfloat16 on CUDA and float32
    elsewhere (see ``newton_schulz``); results come back in ``updates``' dtypes."""
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    by_shape: dict[torch.Size, list[int]] = {}
    for i, u in enumerate(updates):
        by_shape.setdefault(u.shape, []).append(i)
    results: dict[int, torch.Tensor] = {}
    for shape, indices in by_shape.items():
        stacked = torch.stack([updates[i] for i in indices])  # (k, m, n)
        dtype = torch.bfloat16 if stacked.is_cuda else torch.float32
        if world_size == 1:
            done = newton_schulz(stacked, steps, dtype)
        else:
            start, stop = shard(len(indices), dist.get_rank(), world_size)
            padded = (stop - start) * world_size
            if padded > len(indices):
                stacked = torch.cat([stacked, stacked.new_zeros(padded - len(indices), *shape)])
            mine = newton_schulz(stacked[start:stop], steps, dtype).contiguous()  # (per_rank, m, n)
            done = mine.new_empty(padded, *shape)
            dist.all_gather(list(done.chunk(world_size)), mine)  # rank r's slice lands at [r * per_rank, ...)
        for slot, i in enumerate(indices):
            results[i] = done[slot].to(updates[i].dtype)
    return [results[i] for i in range(len(updates))]


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``kind: "muon"``, AdamW for groups with ``kind: "adamw"`` (see the module doc).

    Every group steps with ``group["lr"] * group["lr_ratio"]``. State per parameter: ``step`` (int) and
    ``momentum_buffer`` (Muon), or ``step``, ``exp_avg`` and ``exp_avg_sq`` (AdamW).
    """

    def __init__(self, param_groups: list[dict[str, Any]], lr: float):
        super().__init__(param_groups, {"lr": lr, "lr_ratio": 1.0, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        updates = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["momentum_buffer"] = torch.zeros_like(p)
            warmup = group["momentum_warmup_steps"]
            ramp = min(1.0, state["step"] / warmup) if warmup else 1.0
            momentum = group["momentum_start"] + (group["momentum"] - group["momentum_start"]) * ramp
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - momentum)  # EMA of gradients; its scale is irrelevant after orthogonalising
            updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
            state["step"] += 1
        lr = group["lr"] * group["lr_ratio"]
        whole = [u.full_tensor() if isinstance(u, DTensor) else u for u in updates]
        for p, update in zip(params, orthogonalise_all(whole, group["ns_steps"])):
            if isinstance(p, DTensor):  # every rank holds the whole result: keep this rank's rows of it
                update = DTensor.from_local(update, p.device_mesh, [Replicate()], run_check=False)
                update = update.redistribute(p.device_mesh, p.placements)
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(update, alpha=-lr * shape_scale(p.shape))

    def _adamw_step(self, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"] * group["lr_ratio"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(p.grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.mul_(1 - lr * group["weight_decay"])
            denom = (exp_avg_sq / (1 - beta2 ** state["step"])).sqrt_().add_(group["eps"])
            p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** state["step"]))
