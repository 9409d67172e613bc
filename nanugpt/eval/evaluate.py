"""Evaluation: loss and the loss's metrics on fixed batches, during training and of a trained checkpoint, and the
benchmarks of ``eval.tasks`` (HellaSwag) of a trained checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nanugpt.checkpoint.store import check_vocab, load_trained_model
from nanugpt.config.protocols import Batches
from nanugpt.config.schema import BatchShare, Params
from nanugpt.config.token_meta import read_meta
from nanugpt.data.packing import mask_model_documents
from nanugpt.data.tokenized import to_device
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.distributed.device import autocast_context, pick_device
from nanugpt.distributed.process_group import DistInfo, barrier
from nanugpt.eval.hellaswag import evaluate_hellaswag, hellaswag_file
from nanugpt.optim.losses import Loss


def batch_count(iters: int | None, batches: Batches) -> int:
    """``iters``, or for ``None`` (``eval.eval_iters: null``) the batches that cover ``batches``' split once."""
    return iters if iters is not None else int(batches.whole_split)  # type: ignore[attr-defined]


def evaluate_split(
    model: torch.nn.Module,
    batches: Batches,
    *,
    iters: int | None,
    info: DistInfo,
    dtype: str,
    loss_fn: Loss,
    plain: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Mean loss and the loss's metrics over ``iters`` fixed batches (the same on every call), split across ranks.

    Batch ``i`` is ``batches.micro_batch(i, 0)``: evaluation batches are addressed like training steps.
    ``plain``: ``model`` unwrapped, when it is compiled or DDP-wrapped. A loss without metrics is taken as in
    training (``Loss.of_model``: a decoder's from its hidden states, the cost of the logits' passes saved).
    """
    iters = batch_count(iters, batches)
    was_training = model.training
    model.eval()
    plain = plain or model
    names = ("loss", *loss_fn.metric_names)
    sums = torch.zeros(2 * len(names), device=info.device)  # (sum, count) per name
    rounds = -(-iters // info.world_size)
    with torch.no_grad():
        for i in range(info.rank, rounds * info.world_size, info.world_size):
            # Every rank runs the same number of forwards (under FSDP each one gathers parameters from all ranks);
            # a rank past the last batch runs batch 0 again and leaves it out of the sums.
            x, y = batches.micro_batch(i if i < iters else 0, 0)
            x, y = to_device(x, info.device), to_device(y, info.device)
            with autocast_context(info.device, dtype):
                if loss_fn.metric_names:
                    logits = model(x)
                    loss = loss_fn(logits, y).float()
                else:
                    loss = loss_fn.of_model(model, plain, x, y).float()
            if i >= iters:
                continue
            sums[0] += loss
            sums[1] += 1
            if loss_fn.metric_names:
                for j, (total, count) in enumerate(loss_fn.metrics(logits, y).values(), start=1):
                    sums[2 * j] += total
                    sums[2 * j + 1] += count
    if info.world_size > 1:
        torch.distributed.all_reduce(sums)
    model.train(was_training)
    values = (sums[0::2] / sums[1::2].clamp(min=1)).tolist()
    return dict(zip(names, values))


def evaluate_checkpoint(
    params: Params, ckpt_path: Path, data_dir: Path, info: DistInfo | None = None, data_root: Path | None = None
) -> dict[str, Any]:
    """Loss, perplexity and the loss's metrics of a checkpoint on ``eval.eval_iters`` fixed batches of val and test,
    and the figures of each benchmark in ``eval.tasks``; the work is shared by the ranks of ``info`` (default: one
    process on ``general.device_type``).

    The batches are those of the run's own ``data`` params, so a run that packed documents (``data.packing:
    documents``) is evaluated on packed windows, its model masked at document boundaries as in training.
    Each split present in ``data_dir`` is evaluated; figures are named ``<split>_loss``, ``<split>_ppl``, ...;
    a benchmark's ``<task>_<figure>`` (``hellaswag_acc``, ...). A benchmark file is downloaded into ``data_root``
    (default: the folder that holds ``data_dir``'s ``<dataset>/<tokenizer>``, i.e. DATA_ROOT).
    """
    info = info or DistInfo(0, 0, 1, pick_device(params.general.device_type))
    data_root = data_root or data_dir.parent.parent
    model, trained, state = load_trained_model(ckpt_path, info.device, params.general.verify_checkpoints)
    meta = read_meta(data_dir)
    check_vocab(state, meta, data_dir)
    mask_model_documents(model, trained.data, eot_id=meta.eot_id, module=trained.model.module)
    loss_fn = trained.loss.build()
    rows = params.training.device_batch_size
    metrics: dict[str, Any] = {"step": state["step"], "tokens_seen": state["tokens_seen"]}
    for split in ("val", "test"):
        if split == "test" and not (data_dir / "test.bin").exists():  # a test split is optional
            continue
        batches = trained.data.batches(
            data_dir,
            meta,
            split,
            context_length=trained.model.context_length,
            share=BatchShare(rows, rows),
            seed=params.general.seed,
        )
        if batches is None:
            continue
        figures = evaluate_split(
            model, batches, iters=params.eval.eval_iters, info=info, dtype=params.general.dtype, loss_fn=loss_fn
        )
        metrics[f"{split}_loss"] = figures.pop("loss")
        metrics[f"{split}_ppl"] = math.exp(metrics[f"{split}_loss"])
        metrics.update({f"{split}_{name}": value for name, value in figures.items()})
    if "hellaswag" in params.eval.tasks:
        encode = tokenizer_from_meta(meta).encode
        path = shared_file(
            info, lambda: hellaswag_file(params.eval.hellaswag_path, params.eval.hellaswag_sha256, data_root)
        )
        figures = evaluate_hellaswag(
            model,
            encode=encode,
            context_length=trained.model.context_length,
            rows_per_forward=rows,
            info=info,
            dtype=params.general.dtype,
            path=path,
        )
        metrics.update({f"hellaswag_{name}": value for name, value in figures.items()})
    return metrics


def shared_file(info: DistInfo, find: Callable[[], Path]) -> Path:
    """The path ``find`` returns, rank 0 calling it first (a download happens once), the other ranks after it."""
    if info.is_main:
        find()
    barrier(info)
    return find()
