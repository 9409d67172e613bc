"""The parts of a training run, built from params before its first step (torchtitan's ``build`` step).

``build_run`` reads the token files' ``meta.json``, builds the batch sources,
the model (seeded by ``general.seed``, the same on every rank; masked at document
boundaries with ``data.packing: documents``), optimizer,
schedule, scaler and loss, and derives the gradient accumulation.
With ``training.activation_checkpointing: full`` each block recomputes its
activations; with ``training.strategy: fsdp`` on more than one process the model
is sharded (``nanugpt.distributed.fsdp``) before the optimizer is built on its sharded
parameters. ``wrap_model`` compiles and DDP-wraps an unsharded model after a
checkpoint, if any, has been loaded into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nanugpt.config.protocols import Batches, Scaler, Schedule
from nanugpt.config.schema import BatchShare, Params
from nanugpt.config.token_meta import DataError, TokenMeta, read_meta
from nanugpt.data.packing import mask_model_documents
from nanugpt.distributed.fsdp import checkpoint_blocks, is_sharded, mixed_precision, shard_model
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError
from nanugpt.optim.losses import Loss
from nanugpt.train.memory_check import check_train_memory


@dataclass
class RunParts:
    """Everything a run is made of. ``model`` is the plain module (never compiled or DDP-wrapped; sharded in place
    under ``training.strategy: fsdp``)."""

    model: torch.nn.Module
    meta: TokenMeta  # the token files' meta.json
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: Scaler
    loss_fn: Loss
    train_batches: Batches
    val_batches: Batches | None
    vocab_size: int
    accum: int  # micro-steps per optimizer step on each process
    tokens_per_step: int  # over all processes
    autocast_dtype: str  # general.dtype, or float32 (no autocast) where FSDP's mixed precision casts instead


def check_tokenized(meta: TokenMeta, params: Params, data_dir: Path) -> None:
    """Refuse token files written by another tokenizer than the params name."""
    expected = params.tokenizer.model_dump(mode="json")
    if meta.tokenizer != expected:
        raise DataError(
            f"{data_dir}/meta.json: tokenized with {meta.tokenizer}, but params say tokenizer {expected}; "
            "re-run the tokenize stage"
        )


def train_share(params: Params, info: DistInfo) -> BatchShare:
    """This process's share of each step's global batch; its ``micro_steps`` is the gradient accumulation."""
    t = params.training
    per_step_rows = t.device_batch_size * info.world_size
    if t.global_batch_size % per_step_rows:
        raise TrainingError(
            f"training.global_batch_size ({t.global_batch_size}) must be a multiple of training.device_batch_size "
            f"x world size ({t.device_batch_size} x {info.world_size} = {per_step_rows})"
        )
    return BatchShare(t.device_batch_size, t.global_batch_size, info.rank, info.world_size)


def build_run(params: Params, data_dir: Path, info: DistInfo, log: Callable[[str], None]) -> RunParts:
    """Build the parts of a run of ``params`` on the token files in ``data_dir``."""
    t, device = params.training, info.device
    share = train_share(params, info)
    if params.general.dtype != "float32" and device.type == "cpu":
        log(f"note: general.dtype {params.general.dtype} on CPU is slow without bf16/fp16 matmul hardware")
    meta = read_meta(data_dir)
    check_tokenized(meta, params, data_dir)
    check_train_memory(params.model, meta.vocab_size, device)  # before any allocation
    context, seed = params.model.context_length, params.general.seed
    order = params.general.order_seed
    train_batches = params.data.batches(data_dir, meta, "train", context_length=context, share=share, seed=order)
    if train_batches is None:
        raise DataError(f"{data_dir}: the train split is empty; re-run the tokenize stage with more data")
    val_share = BatchShare(t.device_batch_size, t.device_batch_size)
    val_batches = params.data.batches(data_dir, meta, "val", context_length=context, share=val_share, seed=seed)

    torch.manual_seed(seed)
    model = params.model.build(meta.vocab_size).to(device)
    mask_model_documents(model, params.data, eot_id=meta.eot_id, module=params.model.module)
    if t.activation_checkpointing == "full":
        checkpoint_blocks(model)
    autocast_dtype = params.general.dtype
    if t.strategy == "fsdp" and info.world_size > 1:
        policy = mixed_precision(device.type, params.general.dtype)
        model = shard_model(model, info, t.reshard_after_forward, policy, params.general.torch_compile)
        if policy is not None:
            autocast_dtype = "float32"
    optimizer = params.optimizer.build(model, device.type)
    for group in optimizer.param_groups:  # the schedule scales each group's own peak lr (e.g. Muon's AdamW part)
        group.setdefault("base_lr", group["lr"])
    return RunParts(
        model=model,
        meta=meta,
        optimizer=optimizer,
        schedule=params.scheduler.build(t.max_steps, params.optimizer.lr),
        scaler=params.scaler.build(device.type, params.general.dtype),
        loss_fn=params.loss.build(),
        train_batches=train_batches,
        val_batches=val_batches,
        vocab_size=meta.vocab_size,
        accum=share.micro_steps,
        tokens_per_step=t.global_batch_size * context,
        autocast_dtype=autocast_dtype,
    )


def wrap_model(model: torch.nn.Module, params: Params, info: DistInfo) -> torch.nn.Module:
    """The module the train step calls: ``model`` compiled (``general.torch_compile``) and DDP-wrapped on N ranks;
    a sharded model as it is (its blocks were compiled before sharding)."""
    if is_sharded(model):
        return model
    if params.general.torch_compile:
        model = torch.compile(model)
    if info.world_size > 1:
        model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return model
