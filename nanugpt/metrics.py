"""Where training metrics go: CSV files DVC plots, the console, and optionally W&B.

``plots/train.csv`` has ``step,tokens,train_loss,lr`` per step and
``plots/val.csv`` has ``step,tokens,val_loss`` per evaluation; ``dvc.yaml``
draws both on one plot. Only rank 0 creates these writers.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanugpt.errors import UserError

TRAIN_COLUMNS = ("step", "tokens", "train_loss", "lr")
VAL_COLUMNS = ("step", "tokens", "val_loss")


class CsvLog:
    """An append-only CSV whose rows after a resume point can be dropped."""

    def __init__(self, path: Path, columns: tuple[str, ...], resume_step: int):
        self.path = path
        self.columns = columns
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step > 0 and path.exists():
            with open(path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._writer.writerows(rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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
        self.run = wandb.init(
            project=project,
            name=run_name,
            config=config,
            dir=str(out_dir),
            id=run_id,
            resume="allow",
            settings=wandb.Settings(save_code=False),
        )
        id_file.write_text(self.run.id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

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
