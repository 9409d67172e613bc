"""Training metrics: per-step losses kept on the device until a log interval, then sent to every sink.

Metric names are the same for every sink: ``train/loss``, ``train/lr``,
``train/tokens`` each step; ``train/grad_norm``, ``train/tokens_per_s``,
``train/mfu``, ``time/elapsed_s`` and ``time/eta_s`` at each log interval;
``val/loss`` and ``val/<metric>`` of the loss (e.g. ``val/accuracy``) at each
evaluation. A sink is anything with ``write(step, metrics)`` and ``close()``
(``MetricSink``); adding one touches no loop code. The sinks:

- ``CsvSink``: ``plots/train.csv`` (``step,tokens,train_loss,lr`` per step) and
  ``plots/val.csv`` (``step,tokens,val_loss,...`` per evaluation), which
  ``dvc.yaml`` draws on one plot (``logging.dvclive``);
- ``WandbSink``: Weights & Biases (``logging.wandb``);
- ``ConsoleSink``: one line per log interval.

Only rank 0 creates sinks.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from nanugpt.distributed import DistInfo, all_reduce_mean
from nanugpt.errors import UserError

# Steps of each process left out of ``steady_tokens_per_s``: the first ones pay for torch.compile,
# the allocator's first requests and the optimizer state's creation.
WARMUP_STEPS = 3


class MetricSink(Protocol):
    """Where metrics go: ``write`` is called once per step that has metrics, in step order."""

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of ``step`` (names as in this module's docstring)."""
        ...

    def close(self) -> None:
        """Flush and release whatever the sink holds."""
        ...


class CsvSink:
    """An append-only CSV with a row for each step that has the metric ``trigger``; rows after a resume point
    are dropped. ``columns`` maps each CSV column after ``step`` to the metric it holds.
    """

    def __init__(self, path: Path, columns: Mapping[str, str], trigger: str, resume_step: int):
        self.path, self.columns, self.trigger = path, dict(columns), trigger
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step > 0 and path.exists():
            with open(path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=["step", *self.columns])
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.trigger in metrics:
            self._writer.writerow({"step": step, **{column: metrics.get(name) for column, name in self.columns.items()}})
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def csv_sinks(plots: Path, loss_metric_names: tuple[str, ...], resume_step: int) -> list[CsvSink]:
    """The two CSV files DVC plots: train losses per step, val figures per evaluation."""
    train = {"tokens": "train/tokens", "train_loss": "train/loss", "lr": "train/lr"}
    val = {"tokens": "train/tokens", "val_loss": "val/loss", **{f"val_{n}": f"val/{n}" for n in loss_metric_names}}
    return [
        CsvSink(plots / "train.csv", train, "train/loss", resume_step),
        CsvSink(plots / "val.csv", val, "val/loss", resume_step),
    ]


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_log_line(
    step: int,
    max_steps: int,
    train_loss: float,
    val_loss: float | None,
    lr: float,
    grad_norm: float,
    tokens_per_s: float,
    mfu: float | None,
    elapsed: float,
    eta: float,
) -> str:
    """The one console line per log interval."""
    parts = [f"step {step}/{max_steps}", f"loss {train_loss:.4f}"]
    if val_loss is not None:
        parts.append(f"val {val_loss:.4f}")
    parts += [f"lr {lr:.2e}", f"grad {grad_norm:.3f}", f"{tokens_per_s:,.0f} tok/s"]
    if mfu is not None:
        parts.append(f"MFU {100 * mfu:.1f}%")
    parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
    return " | ".join(parts)


class ConsoleSink:
    """``format_log_line`` for each step that ends a log interval."""

    def __init__(self, log: Callable[[str], None], max_steps: int):
        self.log, self.max_steps = log, max_steps

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if "train/tokens_per_s" in metrics:
            self.log(format_log_line(
                step, self.max_steps, metrics["train/loss"], metrics.get("val/loss"), metrics["train/lr"],
                metrics["train/grad_norm"], metrics["train/tokens_per_s"], metrics.get("train/mfu"),
                metrics["time/elapsed_s"], metrics["time/eta_s"],
            ))

    def close(self) -> None:
        pass


class WandbSink:
    """Weights & Biases logging (``logging.wandb: true``); ``WANDB_MODE=offline`` works with no network.

    The run id is kept in ``OUT_DIR/wandb/run_id`` so that later stages (generate's samples) log to the
    same run. Only params are sent as config: the process environment, and any secret in it, never is.
    """

    def __init__(self, project: str, run_name: str, config: dict[str, Any], out_dir: Path):
        try:
            import wandb
        except ImportError:
            raise UserError("logging.wandb is true but wandb is not installed: pip install 'nanugpt[wandb]'") from None
        self._wandb = wandb
        id_file = out_dir / "wandb" / "run_id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id = id_file.read_text().strip() if id_file.exists() else None
        self.run = wandb.init(project=project, name=run_name, config=config, dir=str(out_dir), id=run_id,
                              resume="allow", settings=wandb.Settings(save_code=False))
        id_file.write_text(self.run.id)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_samples(self, samples: list[str]) -> None:
        """Generated text, as a table."""
        self.run.log({"samples": self._wandb.Table(columns=["sample"], data=[[s] for s in samples])})

    def close(self) -> None:
        self.run.finish()


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

    def __init__(self, sinks: list[MetricSink], info: DistInfo, log_every: int, max_steps: int,
                 tokens_per_step: int, flops_per_token: float, peak_flops: float | None, start_step: int):
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
        rows = [(s, {"train/loss": loss, "train/lr": lr, "train/tokens": tokens})
                for (s, tokens, lr, _), loss in zip(self.pending, self.losses)]
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
                if warm is not None and steps_run > WARMUP_STEPS else None
            ),
        }

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()
