"""The training loop: one code path for one CPU process, N processes under torchrun, and N nodes.

``train(params, data_dir, out_dir)`` runs ``training.max_steps`` optimizer
steps. Each step accumulates gradients over ``global_batch_size /
(device_batch_size * world_size)`` micro-batches per process (DDP syncs
gradients only on the last one), clips, and steps the optimizer at the lr of
the schedule. Losses stay on the device until a log interval, so the hot loop
has no host sync per micro-step.

Outputs under ``out_dir`` (rank 0 only): ``checkpoints/`` (``last.pt`` and the
newest step files), ``plots/train.csv`` and ``plots/val.csv``,
``run_info.json``, and ``train_summary.json`` (final losses, tokens/s over all
steps and after the first ``WARMUP_STEPS``, and the schedule's
``report(lrs, losses)`` when it has one, e.g. an lr range test). SIGTERM,
SIGINT and SIGUSR1 save a checkpoint at the end of the current step and stop,
so a preempted or requeued job resumes where it was (``training.resume: auto``).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nanugpt import checkpoint, run_info
from nanugpt.atomic import write_json
from nanugpt.data import DataError, read_meta, to_device
from nanugpt.device import autocast_context, peak_flops
from nanugpt.distributed import DistInfo, all_reduce_mean, any_rank, process_group
from nanugpt.errors import UserError
from nanugpt.evaluate import evaluate_split
from nanugpt.metrics import TRAIN_COLUMNS, VAL_COLUMNS, CsvLog, Stopwatch, WandbSink, format_log_line
from nanugpt.models.nanogpt import DecoderMixin
from nanugpt.params import Params

# What must match for ``resume: auto`` to continue a checkpoint: everything that shapes the numbers
# (not logging, checkpointing or launch settings), so a resumed run equals an uninterrupted one.
RESUME_KEYS = (
    "general.seed",
    "general.dtype",
    "data",
    "tokenizer",
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "scaler",
    "training.max_steps",
    "training.device_batch_size",
    "training.global_batch_size",
    "training.grad_clip",
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# Steps of each process left out of ``steady_tokens_per_s``: the first ones pay for torch.compile,
# the allocator's first requests and the optimizer state's creation.
WARMUP_STEPS = 3


class TrainingError(UserError):
    """A run that cannot start or continue as configured."""


@dataclass
class RunState:
    """What a checkpoint needs besides model and optimizer."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float | None = None


def check_tokenized(meta: dict[str, Any], params: Params, data_dir: Path) -> None:
    """Refuse token files written by another tokenizer than the params name."""
    expected = params.tokenizer.model_dump(mode="json")
    if meta.get("tokenizer") != expected:
        raise DataError(
            f"{data_dir}/meta.json: tokenized with {meta.get('tokenizer')}, but params say tokenizer {expected}; "
            "re-run the tokenize stage"
        )


class StopRequest:
    """Turns SIGTERM/SIGINT/SIGUSR1 into a flag checked between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _resume_state(params: Params, ckpt_dir: Path, device: torch.device, log: Any) -> dict[str, Any] | None:
    setting = params.training.resume
    if setting == "never":
        return None
    if setting != "auto":
        return checkpoint.load_checkpoint(Path(setting), device)
    found = checkpoint.newest_loadable(ckpt_dir, device)
    if found is None:
        return None
    path, state = found
    if state.get("params_digest") != params.digest(RESUME_KEYS):
        log(f"not resuming from {path}: it was trained with different params; starting from step 0")
        return None
    if state["step"] >= params.training.max_steps:
        log(f"{path} is at step {state['step']} >= training.max_steps; nothing left to train")
    return state


def _load_state(
    raw_model: torch.nn.Module, optimizer: Any, scaler: Any, state: dict[str, Any], source: str
) -> RunState:
    try:
        raw_model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise checkpoint.CheckpointError(f"{source}: checkpoint does not fit this model.* shape ({first})") from None
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return RunState(state["step"], state["tokens_seen"], state.get("best_val_loss"))


def _checkpoint_state(
    raw_model: torch.nn.Module,
    optimizer: Any,
    schedule: Any,
    scaler: Any,
    run: RunState,
    params: Params,
    vocab_size: int,
) -> dict[str, Any]:
    return {
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "step": run.step,
        "tokens_seen": run.tokens_seen,
        "best_val_loss": run.best_val_loss,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "data": {"seed": params.general.seed, "next_step": run.step},
        "params": params.to_dict(),
        "params_digest": params.digest(RESUME_KEYS),
        "vocab_size": vocab_size,
    }


def train(params: Params, data_dir: Path, out_dir: Path, launch_command: str | None = None) -> dict[str, Any]:
    """Run the training loop; return a summary (final losses, steps, tokens/s)."""
    with process_group(params.general.device_type) as info:
        return _train(params, data_dir, out_dir, info, launch_command)


def _train(params: Params, data_dir: Path, out_dir: Path, info: DistInfo, launch_command: str | None) -> dict[str, Any]:
    t = params.training
    device = info.device

    def log(message: str) -> None:
        if info.is_main:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    per_step_rows = t.device_batch_size * info.world_size
    if t.global_batch_size % per_step_rows:
        raise TrainingError(
            f"training.global_batch_size ({t.global_batch_size}) must be a multiple of training.device_batch_size "
            f"x world size ({t.device_batch_size} x {info.world_size} = {per_step_rows})"
        )
    if params.general.dtype != "float32" and device.type == "cpu":
        log(f"note: general.dtype {params.general.dtype} on CPU is slow without bf16/fp16 matmul hardware")

    meta = read_meta(data_dir)
    check_tokenized(meta, params, data_dir)
    context = params.model.context_length
    train_source = params.data.batches(
        data_dir,
        meta,
        "train",
        context,
        t.device_batch_size,
        t.global_batch_size,
        params.general.seed,
        info.rank,
        info.world_size,
    )
    if train_source is None:
        raise DataError(f"{data_dir}: the train split is empty; re-run the tokenize stage with more data")
    val_source = params.data.batches(
        data_dir, meta, "val", context, t.device_batch_size, t.device_batch_size, params.general.seed
    )
    vocab_size = meta["vocab_size"]

    torch.manual_seed(params.general.seed)
    raw_model = params.model.build(vocab_size).to(device)
    optimizer = params.optimizer.build(raw_model, device.type)
    for group in optimizer.param_groups:  # the schedule scales each group's own peak lr (e.g. Muon's AdamW part)
        group.setdefault("base_lr", group["lr"])
    schedule = params.scheduler.build(t.max_steps, params.optimizer.lr)
    scaler = params.scaler.build(device.type, params.general.dtype)
    loss_fn = params.loss.build()

    ckpt_dir = out_dir / "checkpoints"
    run = RunState()
    state = _resume_state(params, ckpt_dir, device, log)
    if state is not None:
        checkpoint.check_vocab(state, meta, data_dir)
        run = _load_state(raw_model, optimizer, scaler, state, params.training.resume)
        log(f"resumed from step {run.step} ({run.tokens_seen:,} tokens seen)")
    elif info.is_main and (removed := checkpoint.clear_checkpoints(ckpt_dir)):
        log(f"removed {removed} checkpoint files of an earlier run from {ckpt_dir}")
    del state
    # Dropout masks and anything else random continue from the seed per rank (same init everywhere).
    if run.step == 0:
        torch.manual_seed(params.general.seed + info.rank)

    model: torch.nn.Module = raw_model
    if params.general.torch_compile:
        model = torch.compile(model)
    if info.world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    accum = t.global_batch_size // per_step_rows
    tokens_per_step = t.global_batch_size * context
    flops_per_token = raw_model.flops_per_token() if hasattr(raw_model, "flops_per_token") else None
    peak = peak_flops(device, t.peak_flops, params.general.dtype) if flops_per_token else None

    train_log = val_log = wandb = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            out_dir / "run_info.json",
            run_info.collect(params.to_dict(), str(device), info.world_size, launch_command),
        )
        if params.logging.dvclive:
            train_log = CsvLog(out_dir / "plots" / "train.csv", TRAIN_COLUMNS, run.step)
            val_columns = (*VAL_COLUMNS, *(f"val_{name}" for name in loss_fn.metric_names))
            val_log = CsvLog(out_dir / "plots" / "val.csv", val_columns, run.step)
        if params.logging.wandb:
            wandb = WandbSink(params.general.project_name, params.general.run_name, params.to_dict(), out_dir)
        log(
            f"training {sum(p.numel() for p in raw_model.parameters()):,} parameters on {info.world_size} x {device}, "
            f"{accum} micro-steps of {t.device_batch_size} x {context} tokens per process per step, "
            f"{tokens_per_step:,} tokens per step"
        )

    def checkpoint_state() -> dict[str, Any]:
        return _checkpoint_state(raw_model, optimizer, schedule, scaler, run, params, vocab_size)

    def save() -> None:
        if info.is_main:
            checkpoint.save_checkpoint(ckpt_dir, run.step, checkpoint_state(), t.keep_last)

    trainable = [p for p in raw_model.parameters() if p.requires_grad]

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over the global batch of ``run.step``; returns (mean loss, grad norm) on device."""
        step_loss = torch.zeros((), device=device)
        for micro in range(accum):
            x, y = train_source.micro_batch(run.step, micro)
            x, y = to_device(x, device), to_device(y, device)
            last_micro = micro == accum - 1
            with contextlib.nullcontext() if last_micro or info.world_size == 1 else model.no_sync():
                with autocast_context(device, params.general.dtype):
                    if isinstance(raw_model, DecoderMixin):  # large logits never fill memory: Loss.from_hidden
                        weight, cap = raw_model.linear_head()
                        loss = loss_fn.from_hidden(model(x, hidden_only=True), weight, y, cap)
                    else:
                        loss = loss_fn(model(x), y)
                    if accum > 1:
                        loss = loss / accum
                scaler.scale(loss).backward()
            step_loss += loss.detach()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip or math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm

    stop = StopRequest()
    progress = tqdm(total=t.max_steps, initial=run.step, desc="train", disable=None if info.is_main else True)
    pending: list[tuple[int, int, float, torch.Tensor]] = []  # (step, tokens, lr, loss on device)
    clock, interval = Stopwatch(), Stopwatch()
    interval_start_step = start_step = run.step
    warm_seconds: float | None = None  # training seconds when WARMUP_STEPS steps were done
    last_val: float | None = None
    train_loss = float("nan")
    history: list[tuple[float, float]] = []  # (lr, train loss) of every step this process ran
    model.train()
    try:
        while run.step < t.max_steps:
            factor = schedule.factor(run.step)
            lr = params.optimizer.lr * factor
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            step_loss, grad_norm = train_step()
            run.step += 1
            run.tokens_seen += tokens_per_step
            pending.append((run.step, run.tokens_seen, lr, step_loss))
            progress.update(1)
            if run.step - start_step == WARMUP_STEPS:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # the steps queued so far belong to the warm-up
                warm_seconds = clock.elapsed()

            final = run.step == t.max_steps
            stopping = any_rank(stop.signal is not None, info)  # a signal may reach the ranks at different steps
            val_loss = None
            if val_source is not None and (
                final or (params.eval.eval_every and run.step % params.eval.eval_every == 0)
            ):
                with clock.paused(), interval.paused():
                    figures = evaluate_split(
                        raw_model, val_source, params.eval.eval_iters, info, params.general.dtype, loss_fn
                    )
                val_loss = last_val = figures["loss"]
                if run.best_val_loss is None or val_loss < run.best_val_loss:
                    run.best_val_loss = val_loss
                    if info.is_main:
                        with clock.paused(), interval.paused():
                            checkpoint.save_best(ckpt_dir, checkpoint_state())
                if val_log:
                    val_log.write(
                        [
                            {
                                "step": run.step,
                                "tokens": run.tokens_seen,
                                **{f"val_{name}": value for name, value in figures.items()},
                            }
                        ]
                    )
            if final or run.step % t.log_every == 0 or val_loss is not None or stopping:
                losses = all_reduce_mean(torch.stack([p[3] for p in pending]), info).tolist()
                train_loss = losses[-1]
                history += [(r, l) for (_, _, r, _), l in zip(pending, losses)]
                if not math.isfinite(train_loss):
                    if not hasattr(schedule, "report"):
                        raise TrainingError(f"train loss is {train_loss} at step {run.step}; lower optimizer.lr")
                    log(f"train loss is {train_loss} at step {run.step}: the sweep diverged; stopping it here")
                    break
                if train_log:
                    train_log.write(
                        [{"step": s, "tokens": n, "train_loss": l, "lr": r} for (s, n, r, _), l in zip(pending, losses)]
                    )
                steps_done = run.step - interval_start_step
                seconds = interval.lap()  # training time only: evaluation and checkpoints are paused out
                tokens_per_s = steps_done * tokens_per_step / seconds
                mfu = flops_per_token * tokens_per_s / peak if flops_per_token and peak else None
                eta = (t.max_steps - run.step) * seconds / steps_done
                log(
                    format_log_line(
                        run.step,
                        t.max_steps,
                        train_loss,
                        val_loss,
                        lr,
                        grad_norm.item(),
                        tokens_per_s,
                        mfu,
                        clock.wall(),
                        eta,
                    )
                )
                if wandb:
                    metrics = {
                        "train_loss": train_loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                        "tokens": run.tokens_seen,
                    }
                    if val_loss is not None:
                        metrics["val_loss"] = val_loss
                    wandb.log(metrics, run.step)
                pending.clear()
                interval_start_step = run.step
            if final or (t.checkpoint_every and run.step % t.checkpoint_every == 0) or stopping:
                with clock.paused(), interval.paused():
                    save()
            if stopping and not final:
                signum = stop.signal or signal.SIGTERM
                log(f"received signal {signum}: saved a checkpoint at step {run.step} and stopped")
                raise SystemExit(128 + signum)
    finally:
        stop.restore()
        progress.close()
        for sink in (train_log, val_log, wandb):
            if sink:
                sink.close()

    if info.is_main and not (ckpt_dir / "last.pt").exists():  # resumed from an older step file at the end
        save()
    train_seconds = clock.elapsed()
    steps_run = run.step - start_step
    summary = {
        "step": run.step,
        "tokens_seen": run.tokens_seen,
        "train_loss": train_loss,
        "val_loss": last_val,
        "best_val_loss": run.best_val_loss,
        "seconds": clock.wall(),
        "train_seconds": train_seconds,
        "tokens_per_s": steps_run * tokens_per_step / train_seconds if steps_run else 0.0,
        "steady_tokens_per_s": (
            (steps_run - WARMUP_STEPS) * tokens_per_step / (train_seconds - warm_seconds)
            if warm_seconds is not None and steps_run > WARMUP_STEPS
            else None
        ),
    }
    if hasattr(schedule, "report") and history:  # e.g. an lr range test's suggested lr
        summary["schedule"] = schedule.report([lr for lr, _ in history], [loss for _, loss in history])
    if info.is_main:
        write_json(out_dir / "train_summary.json", summary)
    log(
        f"done: {run.step} steps, val loss {last_val}, {summary['tokens_per_s']:,.0f} tok/s while training, "
        f"{summary['seconds']:.1f} s in all"
    )
    return summary
