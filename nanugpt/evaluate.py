"""Evaluation of a trained checkpoint: loss and perplexity on the val (and test) split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nanugpt.checkpoint import load_checkpoint
from nanugpt.data import BatchSource, TokenFile, read_meta
from nanugpt.distributed import DistInfo, pick_device
from nanugpt.params import Params, params_from_checkpoint
from nanugpt.train import evaluate_loss


def load_trained_model(ckpt_path: Path, device: torch.device) -> tuple[torch.nn.Module, Params, dict[str, Any]]:
    """Rebuild the model of a checkpoint with its weights; return it with the params it was trained with."""
    state = load_checkpoint(ckpt_path, device)
    trained = params_from_checkpoint(state["params"])
    model = trained.model.build(state["vocab_size"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, trained, state


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
