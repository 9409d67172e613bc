"""Training metrics: per-step losses kept on the device until the loop flushes them, then sent to every sink.

Metric names are the same for every sink (``nanugpt.metrics.sinks``):

- each step: ``train/loss``, ``train/lr`` (``optimizer.lr`` x the schedule), ``train/tokens`` (a sink whose
  ``every_step`` is false gets them at the log intervals only, those of the interval's last step);
- at each log interval: ``train/lr_<i>_<kind>`` for every parameter group when the groups' lrs differ
  (e.g. Muon's and AdamW's), ``train/grad_norm`` (the total norm before clipping),
  ``train/weight_norm``, ``train/tokens_per_s``, ``train/mfu`` (when the peak is known),
  ``train/step_time_s``, ``train/mem_gb`` (CUDA: the most allocated since the last interval; CPU: the
  process's resident memory), ``time/elapsed_s`` and ``time/eta_s``, ``train/pred_loss`` (``predicted_loss``:
  where the train loss is heading at ``training.max_steps``); the trainer adds ``time/since_checkpoint_s``, the
  run's size (``run/parameters``, ``run/tokens_per_step``, ``run/max_tokens``) and, with ``training.spike`` on,
  ``spike/rollbacks`` and ``spike/skipped_updates``;
- at each evaluation: ``val/loss``, ``val/ppl``, ``val/best_loss``, ``val/gap`` (val loss - the mean train loss of
  the interval) and ``val/<metric>`` of the loss (e.g. ``val/accuracy``, ``val/exact_match``), with
  ``train/<metric>`` the same figure on fixed train batches; ``tasks/hellaswag_acc`` and ``_acc_norm`` where
  ``eval.tasks_every`` scores them.

Nothing here adds a host sync to a step: the interval figures are read once per interval, when the
loop already waits for the losses.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from nanugpt.config.protocols import MetricSink
from nanugpt.distributed.fsdp import is_dtensor
from nanugpt.distributed.process_group import DistInfo, all_reduce_mean
from nanugpt.metrics.sinks import ThreadedSink

# Steps of each process left out of ``steady_tokens_per_s``: the first ones pay for torch.compile,
# the allocator's first requests and the optimizer state's creation.
WARMUP_STEPS = 3


class Stopwatch:
    """Wall time, and the time outside ``paused()`` blocks, since start and since the last lap."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self._paused_total = self._paused_lap = 0.0

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent in this block out of ``elapsed()`` and ``lap()``."""
        began = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            self._paused_total += spent
            self._paused_lap += spent

    def lap(self) -> float:
        """Unpaused seconds since the previous lap."""
        now = time.perf_counter()
        lap, self.last, self._paused_lap = now - self.last - self._paused_lap, now, 0.0
        return lap

    def elapsed(self) -> float:
        """Unpaused seconds since start."""
        return time.perf_counter() - self.start - self._paused_total

    def wall(self) -> float:
        """All seconds since start."""
        return time.perf_counter() - self.start


class TrainMetrics:
    """Collects each step's loss on the device and, at the steps the loop flushes, reduces them over ranks,
    derives throughput, MFU and ETA, and writes every sink. Also times the run: ``clock`` leaves out the
    time spent in its ``paused()`` blocks (evaluation, checkpoints)."""

    def __init__(
        self,
        sinks: list[MetricSink],
        info: DistInfo,
        *,
        log_every: int,
        max_steps: int,
        tokens_per_step: int,
        flops_per_token: float,
        peak_flops: float | None,
        start_step: int,
        optimizer: torch.optim.Optimizer,
        model: torch.nn.Module,
    ):
        self.sinks, self.info, self.optimizer, self.model = sinks, info, optimizer, model
        self.log_every, self.max_steps, self.tokens_per_step = log_every, max_steps, tokens_per_step
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.clock = Stopwatch()
        self.start_step = self.interval_start = start_step
        self.warm_seconds: float | None = None  # training seconds when WARMUP_STEPS steps were done
        self.pending: list[tuple[int, int, float, torch.Tensor]] = []  # (step, tokens, lr, loss on device)
        self.losses: list[float] = []  # the reduced losses of ``pending``, after ``reduce()``
        # the lr and the train loss of every step this process ran
        self.history_lrs: list[float] = []
        self.history_losses: list[float] = []
        self.grad_norm: torch.Tensor | None = None
        self.train_loss = math.nan

    def record(self, step: int, tokens: int, lr: float, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Keep the figures of ``step`` (no host sync)."""
        self.pending.append((step, tokens, lr, loss))
        self.grad_norm = grad_norm
        if step - self.start_step == WARMUP_STEPS:
            if self.info.device.type == "cuda":
                torch.cuda.synchronize(self.info.device)  # the steps queued so far belong to the warm-up
            self.warm_seconds = self.clock.elapsed()

    def should_log(self, step: int) -> bool:
        """True every ``training.log_every`` steps (the loop also flushes wherever it evaluates or saves)."""
        return step % self.log_every == 0

    def reduce(self) -> list[float]:
        """The mean over ranks of each pending step's loss (one host sync for the whole interval)."""
        self.losses = all_reduce_mean(torch.stack([p[3] for p in self.pending]), self.info).tolist()
        self.history_lrs += [p[2] for p in self.pending]
        self.history_losses += self.losses
        self.train_loss = self.losses[-1]
        return self.losses

    def interval(self) -> list[tuple[int, float]]:
        """(step, loss) of each step of the interval, after ``reduce()``."""
        return [(p[0], loss) for p, loss in zip(self.pending, self.losses)]

    def write(
        self, step: int, val_figures: Mapping[str, float] | None, extra: Mapping[str, float] | None = None
    ) -> None:
        """Send the reduced interval ending at ``step`` to the sinks: a row per step to those that keep every
        step (``MetricSink.every_step``), the row of ``step`` alone to the others. The row of ``step`` also has
        the interval's figures, ``val_figures`` if it was evaluated, and ``extra``."""
        rows = [
            (s, {"train/loss": loss, "train/lr": lr, "train/tokens": tokens})
            for (s, tokens, lr, _), loss in zip(self.pending, self.losses)
        ]
        rows[-1][1].update(self.interval_figures(step))
        if val_figures:
            rows[-1][1].update(val_metrics(val_figures))
        rows[-1][1].update(extra or {})
        for sink in self.sinks:
            for s, metrics in rows if sink.every_step else rows[-1:]:
                sink.write(s, metrics)
        self.pending.clear()
        self.interval_start = step

    def interval_figures(self, step: int) -> dict[str, float]:
        """Throughput, MFU, norms, lrs, memory, elapsed time and ETA of the interval ending at ``step``."""
        steps_done = step - self.interval_start
        seconds = self.clock.lap()  # training time only: evaluation and checkpoints are paused out
        tokens_per_s = steps_done * self.tokens_per_step / seconds
        figures = {
            "train/grad_norm": full_value(self.grad_norm) if self.grad_norm is not None else math.nan,
            "train/weight_norm": total_norm(list(self.model.parameters())),
            "train/tokens_per_s": tokens_per_s,
            "train/step_time_s": seconds / steps_done,
            "train/mem_gb": memory_gb(self.info.device),
            "time/elapsed_s": self.clock.wall(),
            "time/eta_s": (self.max_steps - step) * seconds / steps_done,
            "train/pred_loss": predicted_loss(self.history_losses, step, self.max_steps),
            **group_lrs(self.optimizer),
        }
        if self.peak_flops:
            figures["train/mfu"] = self.flops_per_token * tokens_per_s / self.peak_flops
        return figures

    def summary(self, step: int, tokens_seen: int) -> dict[str, Any]:
        """Losses and throughput of the whole run so far (``train_summary.json``)."""
        train_seconds = self.clock.elapsed()
        steps_run = step - self.start_step
        warm = self.warm_seconds
        return {
            "step": step,
            "tokens_seen": tokens_seen,
            "train_loss": self.train_loss,
            "seconds": self.clock.wall(),
            "train_seconds": train_seconds,
            "tokens_per_s": steps_run * self.tokens_per_step / train_seconds if steps_run else None,
            "steady_tokens_per_s": (
                (steps_run - WARMUP_STEPS) * self.tokens_per_step / (train_seconds - warm)
                if warm is not None and steps_run > WARMUP_STEPS
                else None
            ),
        }

    def flush(self) -> None:
        """Wait until every sink has written the rows sent so far: before a checkpoint, so that a run resumed
        from it finds every row up to its step in the sinks' files."""
        for sink in self.sinks:
            if isinstance(sink, ThreadedSink):
                sink.flush()

    def close(self, failed: bool = False) -> None:
        """Close every sink (``failed``: the run ends by an exception or a signal), outside the training time:
        a sink's closing (W&B's ``finish``, which uploads when online) is not training."""
        with self.clock.paused():
            for sink in self.sinks:
                sink.close(failed)


def predicted_loss(losses: Sequence[float], step: int, max_steps: int) -> float:
    """Where the train loss is heading at ``max_steps``: a least-squares line through the losses of the last half of
    the steps so far (``losses``: one per step, the last of them ``step``'s) against log(step), read at
    log(``max_steps``). The log makes the usual decelerating curve nearly straight, and the line, like any
    extrapolation, is a trend, not a bound: NaN before 8 steps. Vectorized: the half grows with the run, and it is
    fitted at every log interval."""
    count = len(losses) // 2
    if count < 4:
        return math.nan
    xs = np.log(np.arange(step - count + 1, step + 1, dtype=np.float64))
    ys = np.asarray(losses[-count:], dtype=np.float64)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    slope = float(dx @ dy) / float(dx @ dx)
    return float(ys.mean()) + slope * (math.log(max_steps) - float(xs.mean()))


def val_metrics(figures: Mapping[str, float]) -> dict[str, float]:
    """The ``val/`` metrics of one evaluation's figures (``loss``, ``best_loss`` and the loss's own metrics)."""
    metrics = {f"val/{name}": value for name, value in figures.items()}
    metrics["val/ppl"] = math.exp(min(figures["loss"], 700.0))  # exp overflows a float past ~709
    return metrics


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``train/lr_<i>_<kind>`` of every parameter group when their lrs differ; nothing when they are all one.

    A group's lr is its ``lr`` x its ``lr_ratio`` (Muon scales its AdamW groups so).
    """
    lrs = [group["lr"] * group.get("lr_ratio", 1.0) for group in optimizer.param_groups]
    if len(set(lrs)) < 2:
        return {}
    kinds = [group.get("kind", "group") for group in optimizer.param_groups]
    return {f"train/lr_{i}_{kind}": lr for i, (kind, lr) in enumerate(zip(kinds, lrs))}


def total_norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of all ``tensors`` together. Under FSDP2 they may be a mix: sharded parameters (DTensors,
    whose norm is reduced over their mesh) and whole ones (an unsharded module's, e.g. the root's after an
    evaluation, which FSDP leaves gathered until the next step), so the two kinds are normed apart."""
    with torch.no_grad():
        sharded = [t.detach() for t in tensors if is_dtensor(t)]
        whole = [t.detach() for t in tensors if not is_dtensor(t)]
        parts = [full_value(torch.nn.utils.get_total_norm(group)) for group in (sharded, whole) if group]
        return math.sqrt(sum(part * part for part in parts))


def full_value(norm: torch.Tensor) -> float:
    """A norm as a float; an FSDP2 norm (a DTensor of partial sums) is reduced over its mesh first."""
    return float((norm.full_tensor() if is_dtensor(norm) else norm).item())


def memory_gb(device: torch.device) -> float:
    """GB of memory: on CUDA the most allocated since the previous call (the peak is reset), else this
    process's resident set (``/proc/self/statm`` on Linux, the peak from ``getrusage`` elsewhere)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 1e9
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 1e9
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux and BSD
        return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9
