"""Models beyond one device's memory: FSDP2 sharding and activation checkpointing, per transformer block.

The blocks come from the model itself (``LanguageModel.transformer_blocks()``), so no model is named here.

- ``checkpoint_blocks``: ``training.activation_checkpointing: full``: each block's activations are
  recomputed in backward instead of kept from forward (DDP and FSDP alike; the numbers do not change).
- ``shard_model``: ``training.strategy: fsdp``: ``fully_shard`` on each block, then on the root (embeddings,
  final norm, head). Parameters become DTensors sharded on dim 0 over the ranks; each block's are gathered
  for its forward and, with ``training.reshard_after_forward``, freed after it and gathered again in backward.
  Gradients are reduce-scattered, so every rank holds and updates 1/N of the optimizer state too.
- ``mixed_precision``: on CUDA with bfloat16, FSDP casts parameters and gradients itself, in place of autocast.
- ``no_sync``, ``clip_grad_norm``: the train step's gradient sync and norm, for a DDP or a sharded model.
- ``local_bytes``: what tensors hold on this rank (their local shards), for memory reports.

``torch.distributed.fsdp`` and ``torch.distributed.tensor`` are imported by the functions that shard or
recompute, not with this module: importing them takes about as long as importing torch, and a run that does
neither, like every evaluate, generate and export, never needs them (``bench/pipeline_overhead.py`` times a
stage's start against ``import torch``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError

if TYPE_CHECKING:
    from torch.distributed.fsdp import MixedPrecisionPolicy


def imported_class(module: str, name: str) -> type | None:
    """The class ``module.name`` where ``module`` is already imported, else None (then no object of it exists,
    so an ``isinstance`` test can answer without importing it)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name) if loaded is not None else None


def is_dtensor(tensor: object) -> bool:
    """True for a DTensor (a sharded parameter or gradient, or a value computed from them)."""
    dtensor = imported_class("torch.distributed.tensor", "DTensor")
    return dtensor is not None and isinstance(tensor, dtensor)


def blocks_of(model: nn.Module, setting: str) -> list[nn.Module]:
    """``model``'s transformer blocks; an error naming ``setting`` when the model names none."""
    blocks = model.transformer_blocks() if hasattr(model, "transformer_blocks") else []
    if not blocks:
        raise TrainingError(
            f"{setting} needs the model's transformer blocks, and {type(model).__name__} names none "
            "(transformer_blocks() is empty); use training.strategy ddp / training.activation_checkpointing none"
        )
    return blocks


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each transformer block's activations in backward (the parameters' names stay as they are)."""
    from torch.distributed._composable import checkpoint

    for block in blocks_of(model, "training.activation_checkpointing full"):
        checkpoint(block)


def mixed_precision(device_type: str, dtype: str) -> MixedPrecisionPolicy | None:
    """FSDP's own casting, in place of autocast, for ``general.dtype`` on ``device_type``: on CUDA with bfloat16,
    parameters are gathered in bfloat16 for compute and gradients reduced in float32 (the float32 master copy
    stays sharded); None elsewhere, where the train step's autocast does the casting as under DDP."""
    if device_type == "cuda" and dtype == "bfloat16":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def shard_model(
    model: nn.Module,
    info: DistInfo,
    reshard_after_forward: bool,
    policy: MixedPrecisionPolicy | None,
    compile_blocks: bool,
) -> nn.Module:
    """Shard ``model`` in place over the ranks of ``info`` (each block, then the root) and return it.

    Build the optimizer after this: it must hold the sharded parameters. ``policy``: ``mixed_precision``'s.
    ``compile_blocks`` compiles each block on its own (``general.torch_compile``), which FSDP's per-block hooks
    allow.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    policy = policy or MixedPrecisionPolicy()  # the default casts nothing
    for block in blocks_of(model, "training.strategy fsdp"):
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    # the root is left to FSDP's default: kept gathered from forward to backward, where it is needed at once
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True for a model ``shard_model`` has sharded."""
    fsdp_module = imported_class("torch.distributed.fsdp", "FSDPModule")
    return fsdp_module is not None and isinstance(model, fsdp_module)


@contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Gradients accumulate on this rank without being reduced (the micro-steps before the last)."""
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` to a global L2 norm of at most ``max_norm``; return the norm before.

    ``torch.nn.utils.clip_grad_norm_`` for plain tensors; for sharded gradients the norm of the local
    shards is reduced over the mesh first (a DTensor of partial sums), so every rank clips alike.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if is_dtensor(norm):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes that ``tensors`` hold on this rank: a DTensor's local shard, a plain tensor whole; each once."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        local = t.to_local() if is_dtensor(t) else t
        total += local.numel() * local.element_size()
    return total
