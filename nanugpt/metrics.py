"""Training metrics: per-step losses kept on the device until the loop flushes them, then sent to every sink.

Metric names are the same for every sink (``nanugpt.sinks``): ``train/loss``,
``train/lr``, ``train/tokens`` each step; ``train/grad_norm``,
``train/tokens_per_s``, ``train/mfu``, ``time/elapsed_s`` and ``time/eta_s``
at each log interval; ``val/loss`` and ``val/<metric>`` of the loss (e.g.
``val/accuracy``) at each evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from nanugpt.distributed import DistInfo, all_reduce_mean
from nanugpt.sinks import MetricSink

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
        log_every: int,
        max_steps: int,
        tokens_per_step: int,
        flops_per_token: float,
        peak_flops: float | None,
        start_step: int,
    ):
        self.sinks, self.info = sinks, info
        self.log_every, self.max_steps, self.tokens_per_step = log_every, max_steps, tokens_per_step
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.clock = Stopwatch()
        self.start_step = self.interval_start = start_step
        self.warm_seconds: float | None = None  # training seconds when WARMUP_STEPS steps were done
        self.pending: list[tuple[int, int, float, torch.Tensor]] = []  # (step, tokens, lr, loss on device)
        self.losses: list[float] = []  # the reduced losses of ``pending``, after ``reduce()``
        self.history: list[tuple[float, float]] = []  # (lr, train loss) of every step this process ran
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
        self.history += [(lr, loss) for (_, _, lr, _), loss in zip(self.pending, self.losses)]
        self.train_loss = self.losses[-1]
        return self.losses

    def write(self, step: int, val_figures: Mapping[str, float] | None) -> None:
        """Send the reduced interval ending at ``step``, and ``val_figures`` if it was evaluated, to the sinks."""
        rows = [
            (s, {"train/loss": loss, "train/lr": lr, "train/tokens": tokens})
            for (s, tokens, lr, _), loss in zip(self.pending, self.losses)
        ]
        rows[-1][1].update(self.interval_figures(step))
        rows[-1][1].update({f"val/{name}": value for name, value in (val_figures or {}).items()})
        for sink in self.sinks:
            for s, metrics in rows:
                sink.write(s, metrics)
        self.pending.clear()
        self.interval_start = step

    def interval_figures(self, step: int) -> dict[str, float]:
        """Throughput, MFU, grad norm, elapsed time and ETA of the interval ending at ``step``."""
        steps_done = step - self.interval_start
        seconds = self.clock.lap()  # training time only: evaluation and checkpoints are paused out
        tokens_per_s = steps_done * self.tokens_per_step / seconds
        figures = {
            "train/grad_norm": self.grad_norm.item() if self.grad_norm is not None else math.nan,
            "train/tokens_per_s": tokens_per_s,
            "time/elapsed_s": self.clock.wall(),
            "time/eta_s": (self.max_steps - step) * seconds / steps_done,
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

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()
