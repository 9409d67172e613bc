"""Where metrics go. Every sink receives the same names (``nanugpt.metrics.train_metrics``'s docstring lists
them) through one interface, ``MetricSink``: ``write(step, metrics)`` and ``close()``. A sink's ``every_step``
says which rows it gets: every step's (the CSV files, whose row is one line), or one per log interval, at the interval's
last step (the others: their rows cost far more, and ``bench/sink_overhead.py`` checks that with them all on,
a step at ``log_every: 10`` is within 1% of its speed with them off). Adding a sink touches no loop code.
The sinks:

- ``CsvSink`` (every step): ``plots/train.csv`` (``step,tokens,train_loss,lr`` per step) and
  ``plots/val.csv`` (``step,tokens,val_loss,...`` per evaluation), which
  ``dvc.yaml`` draws on one plot, and ``plots/tasks.csv`` (``step,tokens,hellaswag_acc,hellaswag_acc_norm`` per
  scoring of ``eval.tasks`` during training, ``nanugpt.eval.task_curve``), drawn on another (``logging.dvclive``);
- ``DvcLiveSink`` (per interval): DVC's own logger in ``OUT_DIR/dvclive/`` (``logging.dvclive``), written on a
  thread of its own (``ThreadedSink``);
- ``WandbSink`` (per interval): Weights & Biases (``logging.wandb``), with the run's failed attempts (killed
  ones too);
- ``TensorBoardSink`` (per interval): event files in ``OUT_DIR/tensorboard/`` (``logging.tensorboard``);
- ``ConsoleSink`` (per interval): one line per log interval.

Only rank 0 creates sinks. ``log_evaluation`` sends the evaluate stage's figures to TensorBoard and W&B.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nanugpt.config.protocols import MetricSink
from nanugpt.config.schema import Params
from nanugpt.errors import UserError
from nanugpt.files.atomic import write_json


class CsvSink:
    """An append-only CSV with a row for each step that has the metric ``trigger``; rows after a resume point
    are dropped. ``columns`` maps each CSV column after ``step`` to the metric it holds.
    """

    every_step = True  # a row is one line in a file

    def __init__(self, path: Path, columns: Mapping[str, str], trigger: str, resume_step: int):
        self.path, self.columns, self.trigger = path, dict(columns), trigger
        make_folder(path.parent)
        kept = rows_up_to(path, resume_step) if resume_step > 0 else []
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=["step", *self.columns])
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.trigger in metrics:
            self._writer.writerow(
                {"step": step, **{column: metrics.get(name) for column, name in self.columns.items()}}
            )
            self._file.flush()

    def close(self, failed: bool = False) -> None:
        self._file.close()


class ThreadedSink:
    """Another sink whose rows are written on a thread of its own, in order: the training thread hands a row
    over and goes on. For a sink whose writes wait on the disk: dvclive's row is an append per metric and a
    rewritten ``metrics.json``, which ext4 flushes to disk when it is closed (a truncated file: its
    ``auto_da_alloc``), 3.5-6 ms of an interval on this project's machine; longer on a network file system.

    ``flush`` waits for the rows handed over so far. An error of the thread is raised on the training thread,
    once, at the next ``write``, ``flush`` or ``close``; the rows after it are dropped.
    """

    def __init__(self, sink: MetricSink):
        self.sink, self.every_step = sink, sink.every_step
        self._rows: queue.Queue[tuple[int, dict[str, float]] | None] = queue.Queue()
        self._error: BaseException | None = None  # raised on the training thread, then cleared
        self._broken = False
        self._thread = threading.Thread(target=self._run, name=f"nanugpt-{type(sink).__name__}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (row := self._rows.get()) is not None:
            try:
                if not self._broken:
                    self.sink.write(*row)
            except BaseException as exc:  # raised on the training thread
                self._broken, self._error = True, exc
            finally:
                self._rows.task_done()
        self._rows.task_done()

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self._raise_error()
        self._rows.put((step, dict(metrics)))

    def flush(self) -> None:
        """Wait until the sink has written every row handed over."""
        self._rows.join()
        self._raise_error()

    def close(self, failed: bool = False) -> None:
        self._rows.put(None)
        self._thread.join()
        self.sink.close(failed)
        self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error


PLOT_FILES = ("train.csv", "val.csv", "tasks.csv")  # csv_sinks' files in OUT_DIR/plots/, each always written


def csv_sinks(plots: Path, loss_metric_names: tuple[str, ...], resume_step: int) -> list[CsvSink]:
    """The CSV files DVC plots (``PLOT_FILES``): train losses per step, val figures per evaluation, benchmark
    figures per scoring during training (``eval.tasks_every``). Each file is written, its header at least, even
    where it gets no row (``tasks.csv`` of a run without ``eval.tasks_every``): dvc.yaml and the Snakefile
    declare them all as the train stage's outputs, and an output that is missing fails the stage."""
    train = {"tokens": "train/tokens", "train_loss": "train/loss", "lr": "train/lr"}
    val = {"tokens": "train/tokens", "val_loss": "val/loss", **{f"val_{n}": f"val/{n}" for n in loss_metric_names}}
    tasks = {
        "tokens": "train/tokens",
        "hellaswag_acc": "tasks/hellaswag_acc",
        "hellaswag_acc_norm": "tasks/hellaswag_acc_norm",
    }
    return [
        CsvSink(plots / "train.csv", train, "train/loss", resume_step),
        CsvSink(plots / "val.csv", val, "val/loss", resume_step),
        CsvSink(plots / "tasks.csv", tasks, "tasks/hellaswag_acc", resume_step),
    ]


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_log_line(
    *,
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
    mem_gb: float | None = None,
) -> str:
    """The one console line per log interval (``mem_gb``: see ``train/mem_gb`` in ``nanugpt.metrics.train_metrics``)."""
    parts = [f"step {step}/{max_steps}", f"loss {train_loss:.4f}"]
    if val_loss is not None:
        parts.append(f"val {val_loss:.4f}")
    parts += [f"lr {lr:.2e}", f"grad {grad_norm:.3f}", f"{tokens_per_s:,.0f} tok/s"]
    if mfu is not None:
        parts.append(f"MFU {100 * mfu:.1f}%")
    if mem_gb is not None:
        parts.append(f"mem {mem_gb:.2f} GB")
    parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
    return " | ".join(parts)


class ConsoleSink:
    """``format_log_line`` for each step that ends a log interval."""

    every_step = False

    def __init__(self, log: Callable[[str], None], max_steps: int):
        self.log, self.max_steps = log, max_steps

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.log(
            format_log_line(
                step=step,
                max_steps=self.max_steps,
                train_loss=metrics["train/loss"],
                val_loss=metrics.get("val/loss"),
                lr=metrics["train/lr"],
                grad_norm=metrics["train/grad_norm"],
                tokens_per_s=metrics["train/tokens_per_s"],
                mfu=metrics.get("train/mfu"),
                elapsed=metrics["time/elapsed_s"],
                eta=metrics["time/eta_s"],
                mem_gb=metrics.get("train/mem_gb"),
            )
        )

    def close(self, failed: bool = False) -> None:
        pass


class DvcLiveSink:
    """dvclive's files in ``live_dir`` (``logging.dvclive: true``): ``params.yaml``, a ``plots/metrics/<name>.tsv``
    series per metric (``step`` and the value, a row per log interval), and ``metrics.json`` (the step and the
    latest value of each metric, rewritten at every log interval), which ``dvc exp show`` reads, during the run
    too. Every step's loss is in ``CsvSink``'s ``plots/train.csv``.

    On a resume the series keep their rows up to ``resume_step`` and continue from there, so a run killed
    after its last checkpoint leaves no step twice. ``metrics.json`` is replaced whole (``write_summary``), never
    rewritten in place, so ``dvc exp show`` during a run never reads it half-written.
    """

    every_step = False  # a row appends to one file per metric

    def __init__(self, live_dir: Path, params: dict[str, Any], resume_step: int):
        try:
            from dvclive import Live
        except ImportError:
            raise UserError("logging.dvclive is true but dvclive is not installed: pip install dvclive") from None
        make_folder(live_dir)
        if resume_step > 0:
            for series in (live_dir / "plots" / "metrics").rglob("*.tsv"):
                keep_rows_up_to(series, resume_step)
            drop_torn_summary(live_dir / "metrics.json")
        self.live = Live(str(live_dir), resume=resume_step > 0, save_dvc_exp=False, dvcyaml=None)
        # dvclive's own make_summary truncates metrics.json and writes it again, which a reader can catch
        # half-way; its end() calls make_summary too, so this instance's is replaced
        self.live.make_summary = self.write_summary
        self.live.log_params(params)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.write_summary()  # what dvc exp show reads

    def write_summary(self) -> None:
        """dvclive's ``metrics.json`` (the step and the latest value of each metric), replaced atomically."""
        write_json(self.live.metrics_file, {**self.live.summary, "step": self.live.step})

    def close(self, failed: bool = False) -> None:
        self.live.end()


def drop_torn_summary(summary: Path) -> None:
    """Remove dvclive's ``metrics.json`` when a killed run left it torn: dvclive rewrites it (truncated first) at
    each row and cannot resume from a file that does not parse; the next row writes it again whole."""
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        summary.unlink()


def make_folder(folder: Path) -> None:
    """Create a sink's ``folder``; a file in its place is an error naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(
            f"{folder}: a file stands where the metrics folder should be; move it away and run again"
        ) from None


def rows_up_to(path: Path, step: int, delimiter: str = ",") -> list[dict[str, str]]:
    """The rows of a metrics table (``step`` first) up to ``step``, for a resume; a damaged table (bytes that are
    not UTF-8, a row without a number of a step) keeps its readable rows, and the rest is named and dropped."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    kept, dropped = [], 0
    for row in csv.DictReader(text.splitlines(), delimiter=delimiter):
        try:
            row_step = int(row.get("step") or "")
        except ValueError:
            dropped += 1
            continue
        if row_step <= step and "\ufffd" not in "".join(str(v) for v in row.values()):
            kept.append(row)
        elif row_step <= step:
            dropped += 1
    if dropped:
        print(f"warning: {path}: dropped {dropped} damaged row(s) while resuming; the others are kept", flush=True)
    return kept


def keep_rows_up_to(series: Path, step: int) -> None:
    """Drop the rows of a dvclive ``.tsv`` series whose ``step`` is past ``step`` (and damaged rows)."""
    with open(series, newline="", encoding="utf-8", errors="replace") as f:
        fields = csv.DictReader(f, delimiter="\t").fieldnames or []
    rows = rows_up_to(series, step, delimiter="\t")
    with open(series, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


class TensorBoardSink:
    """TensorBoard event files (``logging.tensorboard: true``): one scalar series per metric name, a point per
    log interval.

    On a resume, TensorBoard is told to drop the events past ``resume_step`` that the interrupted run
    wrote (its ``purge_step``), so no series has a step twice.
    """

    every_step = False

    def __init__(self, log_dir: Path, resume_step: int):
        try:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import scalar
        except ImportError:
            raise UserError(
                "logging.tensorboard is true but tensorboard is not installed: pip install 'nanugpt[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step else None, flush_secs=30)
        self.scalar, self.summary = scalar, Summary

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        # One event holding every metric's value (what ``add_scalar`` writes, a value per event): the
        # writer's thread then serializes and writes once per row, not once per metric.
        values = [value for name, number in metrics.items() for value in self.scalar(name, number).value]
        self.writer.file_writer.add_summary(self.summary(value=values), step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbSink:
    """Weights & Biases logging (``logging.wandb: true``); ``WANDB_MODE=offline`` works with no network. The
    server is wandb's ``WANDB_BASE_URL``, else ``WANDB_HOST`` (``server_settings``).

    ``OUT_DIR/wandb/run.json`` keeps the run's id, so that a resumed training and the later stages
    (evaluate's figures, generate's samples) log to the same run, and the attempt that has the run open:
    ``new_run`` (a training that starts from step 0) begins a new run, unless the last attempt was killed.
    Only params are sent as config: the process environment, and any secret in it, never is. ``files``
    (the resolved params, ``run_info.json``) are logged as one artifact of type ``run-files``.

    A failed attempt is recorded in the run's summary: ``run/failed_attempts`` (the attempts that raised or
    were killed) and ``run/last_failure`` (which, when, where). One that raises or is stopped by a signal is
    marked failed at once (exit code 1). One killed outright (SIGKILL, the out-of-memory killer, a lost
    node) cannot do so: the next attempt finds it still open in ``run.json``, records it, and sends a W&B
    alert (level WARN).

    Metrics: a ``run.log`` per log interval, at its step.
    """

    every_step = False

    def __init__(
        self,
        project: str,
        run_name: str,
        config: dict[str, Any],
        out_dir: Path,
        files: Sequence[Path] = (),
        *,
        stage: str,
        new_run: bool = False,
        start_step: int = 0,
        environ: Mapping[str, str] = os.environ,
    ):
        try:
            import wandb
        except ImportError:
            raise UserError("logging.wandb is true but wandb is not installed: pip install 'nanugpt[wandb]'") from None
        settings = server_settings(environ)  # a malformed server address stops here, before anything is written
        self._wandb = wandb
        self.state_file = out_dir / "wandb" / "run.json"
        state, killed = self._previous_state(new_run)
        self.run = wandb.init(
            project=project,
            name=run_name,
            config=config,
            dir=str(out_dir),
            id=state.get("id"),
            resume="allow",
            settings=wandb.Settings(save_code=False, **settings),
        )
        self.failed_attempts: int = state.get("failed_attempts", 0) + (killed is not None)
        self.attempt: dict[str, Any] = new_attempt(stage, start_step)
        self.save_state(open_attempt=self.attempt)
        self.run.summary["run/failed_attempts"] = self.failed_attempts
        if killed:
            self._record_killed(killed)
        if files:
            self._log_files(files)

    def _previous_state(self, new_run: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``run.json`` (empty for a new run, unless the last attempt was killed) and the killed attempt it
        records as still open, if any."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = read_run_state(self.state_file)
        killed = state.get("open")
        if new_run and not killed:
            state = {}
        return state, killed

    def _record_killed(self, killed: dict[str, Any]) -> None:
        """Record the attempt ``killed`` outright in the run's summary, and send an alert."""
        text = (
            f"{describe_attempt(killed)} ended without closing the run (killed by SIGKILL or the out-of-memory "
            f"killer, or its node was lost); recorded by {describe_attempt(self.attempt)}"
        )
        self.run.summary["run/last_failure"] = text
        self.run.alert(title="nanuGPT: an attempt of this run was killed", text=text, level="WARN")
        print(f"W&B run {self.run.id}: {text}", file=sys.stderr)

    def _log_files(self, files: Sequence[Path]) -> None:
        """``files`` as one artifact of type ``run-files``."""
        artifact = self._wandb.Artifact(f"run-files-{self.run.id}", type="run-files")
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_checkpoint(self, record: Mapping[str, Any]) -> None:
        """A written checkpoint (its ``logs/checkpoints.jsonl`` record) as a version of an artifact of type ``model``:
        ``checkpoint-<run id>`` for step checkpoints (aliased ``step-N``; W&B's own ``latest`` is then the newest),
        ``best-<run id>`` for ``best.pt``. The artifact references the file or folder where it lies rather than
        uploading a copy; the record, sha256 included, is its metadata and a small file in it, so each checkpoint
        is a version of its own."""
        name = "best" if record["kind"] == "best" else "checkpoint"
        artifact = self._wandb.Artifact(f"{name}-{self.run.id}", type="model", metadata=dict(record))
        with artifact.new_file("checkpoint.json") as file:
            json.dump(dict(record), file)
        artifact.add_reference(Path(record["path"]).resolve().as_uri(), checksum=False)
        self.run.log_artifact(artifact, aliases=["best"] if record["kind"] == "best" else [f"step-{record['step']}"])

    def log_samples(self, samples: list[str]) -> None:
        """Generated text, as a table."""
        self.run.log({"samples": self._wandb.Table(columns=["sample"], data=[[s] for s in samples])})

    def log_summary(self, figures: Mapping[str, float]) -> None:
        """Figures of the whole run (evaluate's), in the run's summary: the runs table shows and compares them."""
        self.run.summary.update(dict(figures))

    def close(self, failed: bool = False) -> None:
        if failed:
            self.failed_attempts += 1
            self.run.summary["run/failed_attempts"] = self.failed_attempts
            self.run.summary["run/last_failure"] = f"{describe_attempt(self.attempt)} ended by an exception or a signal"
        self.run.finish(exit_code=1 if failed else 0)
        self.save_state(open_attempt=None)  # after finish: an attempt killed while finishing stays open

    def save_state(self, open_attempt: dict[str, Any] | None) -> None:
        """Write ``run.json``: the run's id, its failed attempts, and the attempt that has it open (or null)."""
        write_json(self.state_file, {"id": self.run.id, "failed_attempts": self.failed_attempts, "open": open_attempt})


def new_attempt(stage: str, start_step: int) -> dict[str, Any]:
    """This attempt of ``stage``, as ``run.json`` and ``describe_attempt`` hold it: where, when, from which step."""
    return {
        "stage": stage,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "start_step": start_step,
    }


def read_run_state(path: Path) -> dict[str, Any]:
    """``run.json`` of ``WandbSink``; empty when there is none."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise UserError(f"{path}: not the JSON nanuGPT writes ({exc}); delete it to start a new W&B run") from None


def describe_attempt(attempt: Mapping[str, Any]) -> str:
    """``the train attempt started at <time> on <host> (pid <pid>) from step <step>``."""
    text = f"the {attempt['stage']} attempt started at {attempt['started']} on {attempt['host']} (pid {attempt['pid']})"
    return text + (f" from step {attempt['start_step']}" if attempt["stage"] == "train" else "")


def check_sinks(params: Params, environ: Mapping[str, str] = os.environ) -> None:
    """Raise now what would stop a sink later, so that a stage fails before any work: with ``logging.wandb``,
    a malformed W&B server address."""
    if params.logging.wandb:
        server_settings(environ)


def server_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``wandb.Settings`` the environment asks for. wandb reads ``WANDB_BASE_URL`` (the server) itself;
    nanuGPT's seed names the server ``WANDB_HOST``, so a ``WANDB_HOST`` is the server when ``WANDB_BASE_URL``
    is not set. wandb reads ``WANDB_HOST`` as the machine's name, so where it holds a URL the run's host is set
    to this machine's name. A malformed address is an error naming the variable."""
    base_url, host = (environ.get(name, "").strip() for name in ("WANDB_BASE_URL", "WANDB_HOST"))
    if base_url:
        check_server_url("WANDB_BASE_URL", base_url)
        return {"host": socket.gethostname()} if "://" in host else {}
    if not host:
        return {}
    check_server_url("WANDB_HOST", host)
    return {"base_url": host, "host": socket.gethostname()}


def check_server_url(name: str, url: str) -> None:
    """Raise ``UserError`` unless ``url`` is an http(s) address with a host (and a valid port)."""
    parts = urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)
        parts.port  # noqa: B018 (reading the port parses it: a bad one raises ValueError)
    except ValueError:
        valid = False
    if not valid:
        raise UserError(
            f"{name}={url!r} is not a W&B server address: give the server's URL with its scheme, e.g. "
            f"{name}=https://api.wandb.ai or {name}=http://wandb.example.com:8080 (or unset it for wandb's default)"
        )


def evaluation_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``eval/<name>`` of every number in evaluate's ``metrics.json`` but its ``step``: val (and test) loss and
    perplexity, the loss's metrics, and any task's figures (e.g. HellaSwag's accuracy) when present."""
    return {
        f"eval/{name}": float(value)
        for name, value in metrics.items()
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def log_evaluation(params: Params, out_dir: Path, metrics: Mapping[str, Any]) -> None:
    """Send evaluate's figures (``evaluation_figures``) of the checkpoint at ``metrics["step"]`` to the sinks
    that are on: TensorBoard (a point at that step in ``OUT_DIR/tensorboard/evaluate/``; evaluating the same
    step again replaces it) and W&B (the training run's summary). dvclive's folder is the train stage's
    output, so evaluate leaves it alone: ``dvc exp show`` reads evaluate's own ``metrics.json``."""
    figures, step = evaluation_figures(metrics), int(metrics["step"])
    if params.logging.tensorboard:
        board = TensorBoardSink(out_dir / "tensorboard" / "evaluate", resume_step=step - 1)
        board.write(step, figures)
        board.close()
    if params.logging.wandb:
        run = WandbSink(
            params.general.project_name, params.general.run_name, params.to_dict(), out_dir, stage="evaluate"
        )
        run.log_summary(figures)
        run.close()
