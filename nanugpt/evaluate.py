"""Evaluation of a trained checkpoint: loss and perplexity on the val (and test) split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nanugpt.checkpoint import load_trained_model
from nanugpt.data import BatchSource, TokenFile, read_meta, to_device
from nanugpt.device import autocast_context, pick_device
from nanugpt.distributed import DistInfo
from nanugpt.params import Params


def evaluate_loss(
    model: torch.nn.Module, source: BatchSource, iters: int, info: DistInfo, dtype: str, loss_fn: Any
) -> float:
    """Mean loss over ``iters`` fixed batches of ``source`` (the same batches on every call), split across ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=info.device)
    with torch.no_grad():
        for i in range(info.rank, iters, info.world_size):
            x, y = source.micro_batch(i, 0)
            x, y = to_device(x, info.device), to_device(y, info.device)
            with autocast_context(info.device, dtype):
                total[0] += loss_fn(model(x), y).float()
            total[1] += 1
    if info.world_size > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


def evaluate_checkpoint(params: Params, ckpt_path: Path, data_dir: Path) -> dict[str, Any]:
    """Loss and perplexity of the checkpoint on ``eval.eval_iters`` fixed batches of each split present."""
    device = pick_device(params.general.device_type)
    model, trained, state = load_trained_model(ckpt_path, device)
    meta = read_meta(data_dir)
    info = DistInfo(0, 0, 1, device)
    loss_fn = trained.loss.build()
    rows = params.training.device_batch_size
    metrics: dict[str, Any] = {"step": state["step"], "tokens_seen": state["tokens_seen"]}
    for split in ("val", "test"):
        path = data_dir / f"{split}.bin"
        if not path.exists() or (split == "val" and meta.get("val_tokens") == 0):
            continue
        source = BatchSource(TokenFile(path, meta, split), trained.model.context_length, rows, rows,
                             params.general.seed, split)
        loss = evaluate_loss(model, source, params.eval.eval_iters, info, params.general.dtype, loss_fn)
        metrics[f"{split}_loss"] = loss
        metrics[f"{split}_ppl"] = math.exp(loss)
    return metrics
