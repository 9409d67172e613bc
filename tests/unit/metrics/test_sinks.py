"""Watching a run (issue 20): one set of metric names for every sink, read at log intervals only."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import (
    REPO,
    call_main,
    dvc_env,
    make_workspace,
    tiny_params,
    write_params,
)
from helpers import run as run_checked

import stages.train
from nanugpt.checkpoint.store import load_trained_model
from nanugpt.config.params import load_params
from nanugpt.config.token_meta import read_meta
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError, UserError
from nanugpt.eval.evaluate import evaluate_split
from nanugpt.files.hashing import sha256_file
from nanugpt.metrics.sinks import (
    PLOT_FILES,
    CsvSink,
    DvcLiveSink,
    ThreadedSink,
    WandbSink,
    csv_sinks,
    evaluation_figures,
    format_log_line,
    keep_rows_up_to,
    server_settings,
)
from nanugpt.metrics.train_metrics import TrainMetrics, predicted_loss
from nanugpt.train.build import train_share
from nanugpt.train.trainer import train
from pipeline.console_log import CONSOLE_IS_LOG_ENV, LogFile, TeeStream
from pipeline.publish import publish
from pipeline.schema import load
from stages import evaluate, tokenize

ONE_CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
EVERY_INTERVAL = {
    "train/grad_norm",
    "train/weight_norm",
    "train/tokens_per_s",
    "train/mfu",
    "train/step_time_s",
    "train/mem_gb",
    "time/elapsed_s",
    "time/eta_s",
    "train/pred_loss",
    "time/since_checkpoint_s",
    "run/parameters",
    "run/tokens_per_step",
    "run/max_tokens",
}
EVERY_STEP = {"train/loss", "train/lr", "train/tokens"}
EVERY_EVAL = {"val/loss", "val/ppl", "val/best_loss", "val/gap"}
EVERY_SCORING = {"tasks/hellaswag_acc", "tasks/hellaswag_acc_norm"}  # eval.tasks_every
# HellaSwag examples in the tiny corpus's characters (the char tokenizer knows no others), scored during training
HELLASWAG_EXAMPLES = [
    {"ctx": "First Citizen:", "endings": ["Before", "All:", "Speak", "die"], "label": 0},
    {"ctx": "All:\nSpeak,", "endings": ["speak.", "resolved", "famish", "Citizen"], "label": 0},
    {"ctx": "Resolved.", "endings": ["resolved.", "proceed", "speak", "further"], "label": 0},
]


class RecordingSink:
    """Keeps what it is sent: every step's rows, or one per log interval (``every_step``)."""

    def __init__(self, every_step: bool) -> None:
        self.every_step = every_step
        self.rows: dict[int, dict[str, float]] = {}
        self.closed = False

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        assert step not in self.rows, f"step {step} written twice"
        self.rows[step] = dict(metrics)

    def close(self, failed: bool = False) -> None:
        self.closed, self.failed = True, failed


def recorded_run(tmp_path: Path, corpus: Path, **sections) -> tuple[RecordingSink, RecordingSink]:
    """Train ``tiny_params`` with ``sections``; what a sink of every step and a sink of log intervals got."""
    sections.setdefault("training", {})["peak_flops"] = 1e12  # so that train/mfu is there on any CPU
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections)))
    tokenize.run(params, data_root=tmp_path / "data")
    steps, intervals = RecordingSink(every_step=True), RecordingSink(every_step=False)
    train(params, tmp_path / "data" / "tiny" / "char", tmp_path / "out", sinks=[steps, intervals])
    return steps, intervals


def scored_during_training(tmp_path: Path, every: int) -> dict[str, Any]:
    """The ``eval`` keys that score HELLASWAG_EXAMPLES (written into ``tmp_path``) every ``every`` steps."""
    path = tmp_path / "hellaswag.jsonl"
    path.write_text("".join(json.dumps(example) + "\n" for example in HELLASWAG_EXAMPLES))
    return {"tasks": ["hellaswag"], "tasks_every": every, "hellaswag_path": str(path), "hellaswag_sha256": None}


def test_every_metric_name_at_its_interval(tmp_path: Path, corpus: Path) -> None:
    scored = scored_during_training(tmp_path, every=15)  # at step 15 and at the last, 20
    sink, intervals = recorded_run(tmp_path, corpus, eval={"eval_every": 10, "eval_iters": 2, **scored})
    rows = sink.rows
    assert sink.closed and sorted(rows) == list(range(1, 21))
    for step, metrics in rows.items():
        expected = EVERY_STEP | (EVERY_INTERVAL if step % 5 == 0 else set()) | (EVERY_EVAL if step % 10 == 0 else set())
        expected |= EVERY_SCORING if step in (15, 20) else set()
        assert set(metrics) == expected, step  # AdamW's two groups share one lr: no train/lr_<group>
    # a sink of log intervals gets the row of each interval's last step, whole, and no other
    assert intervals.closed and intervals.rows == {step: rows[step] for step in (5, 10, 15, 20)}
    last = rows[20]
    assert last["train/weight_norm"] > 0 and last["train/grad_norm"] > 0 and last["train/step_time_s"] > 0
    assert 0.01 < last["train/mem_gb"] < 100  # the process's resident memory on CPU
    assert last["val/ppl"] == pytest.approx(math.exp(last["val/loss"]))
    assert last["val/best_loss"] == min(rows[10]["val/loss"], last["val/loss"])

    losses = [rows[step]["train/loss"] for step in range(1, 21)]
    assert math.isnan(rows[5]["train/pred_loss"])  # fewer than 8 steps: no trend yet
    for step in (10, 15, 20):  # the trend of the losses so far, read at training.max_steps
        assert rows[step]["train/pred_loss"] == pytest.approx(predicted_loss(losses[:step], step, 20), rel=1e-9)
    for step in (10, 20):  # val loss - the mean train loss of the interval (log_every 5: its 5 steps)
        assert rows[step]["val/gap"] == pytest.approx(rows[step]["val/loss"] - sum(losses[step - 5 : step]) / 5)

    out = tmp_path / "out"
    model, _, _ = load_trained_model(out / "checkpoints" / "last.pt", torch.device("cpu"))
    size = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_step": 8 * 16,
        "max_tokens": 8 * 16 * 20,
    }
    assert json.loads((out / "run_info.json").read_text())["size"] == size
    for step in (5, 10, 15, 20):
        assert {name: rows[step][f"run/{name}"] for name in size} == size, step
    # the seconds since the newest checkpoint (or the start): the save at step 10 came after that step's row
    since = {step: rows[step]["time/since_checkpoint_s"] for step in (5, 10, 15, 20)}
    assert since[5] < since[10] and 0 < since[15] < rows[15]["time/elapsed_s"] - rows[10]["time/elapsed_s"]
    assert since[20] > since[15]  # no save at step 15

    scorings = {step: (rows[step]["tasks/hellaswag_acc"], rows[step]["tasks/hellaswag_acc_norm"]) for step in (15, 20)}
    assert all(0 <= figure <= 1 for figures in scorings.values() for figure in figures)
    with open(out / "plots" / "tasks.csv", newline="") as f:
        table = [
            (int(r["step"]), int(r["tokens"]), float(r["hellaswag_acc"]), float(r["hellaswag_acc_norm"]))
            for r in csv.DictReader(f)
        ]
    assert table == [(step, 128 * step, *scorings[step]) for step in (15, 20)]


def test_train_metrics_of_a_loss_with_metrics_at_each_evaluation(tmp_path: Path) -> None:
    """``train/accuracy`` of the grokking loss: its accuracy on the fixed train batches of data steps 0, 1, ... at
    each evaluation, beside ``val/accuracy``."""
    shrink = ["--data.prime", "13", "--tokenizer.prime", "13", "--general.device_type", "cpu", "--model.n_layer", "1"]
    shrink += ["--model.n_embd", "32", "--training.max_steps", "4", "--training.device_batch_size", "16"]
    shrink += ["--training.global_batch_size", "16", "--training.checkpoint_every", "0", "--training.log_every", "1"]
    shrink += ["--eval.eval_every", "2", "--eval.eval_iters", "2", "--scheduler.warmup_steps", "1"]
    shrink += ["--logging.dvclive", "false"]
    params = load(REPO / "params" / "grokking_prime97.yaml", shrink)
    data_dir = tmp_path / "data" / params.data.dataset / params.tokenizer.module
    tokenize.run(params, data_root=tmp_path / "data")
    sink = RecordingSink(every_step=True)
    train(params, data_dir, tmp_path / "out", sinks=[sink])
    assert {step for step, metrics in sink.rows.items() if "train/accuracy" in metrics} == {2, 4}
    assert all(("val/accuracy" in metrics) == (step in (2, 4)) for step, metrics in sink.rows.items())
    # the figure is the loss's accuracy of the model of step 4 (the last checkpoint's) on those train batches
    model, trained, _ = load_trained_model(tmp_path / "out" / "checkpoints" / "last.pt", torch.device("cpu"))
    meta = read_meta(data_dir)
    share = train_share(trained, ONE_CPU)
    context, seed = trained.model.context_length, trained.general.seed
    batches = trained.data.batches(data_dir, meta, "train", context_length=context, share=share, seed=seed)
    loss_fn = trained.loss.build()
    figures = evaluate_split(model, batches, iters=2, info=ONE_CPU, dtype="float32", loss_fn=loss_fn)
    assert 0 <= figures["accuracy"] <= 1
    assert sink.rows[4]["train/accuracy"] == pytest.approx(figures["accuracy"])


def test_lr_per_parameter_group_where_they_differ(tmp_path: Path, corpus: Path) -> None:
    optimizer = {"module": "muon", "lr": 0.02, "adamw_lr": 3e-3, "embed_lr": 1e-2}
    sink, _ = recorded_run(tmp_path, corpus, optimizer=optimizer, training={"max_steps": 10})
    groups = {name: lr for name, lr in sink.rows[10].items() if name.startswith("train/lr_")}
    assert list(groups)[0] == "train/lr_0_muon" and len(groups) >= 3, groups
    factor = sink.rows[10]["train/lr"] / 0.02  # the schedule's factor at step 10
    assert sorted(set(groups.values())) == pytest.approx(sorted({0.02 * factor, 3e-3 * factor, 1e-2 * factor}))
    assert not any(name.startswith("train/lr_") for name in sink.rows[9])  # log intervals only


def test_console_line_has_memory() -> None:
    line = format_log_line(
        step=10,
        max_steps=20,
        train_loss=2.5,
        val_loss=None,
        lr=1e-3,
        grad_norm=0.5,
        tokens_per_s=1000,
        mfu=None,
        elapsed=5,
        eta=5,
        mem_gb=1.234,
    )
    assert (
        line
        == "step 10/20 | loss 2.5000 | lr 1.00e-03 | grad 0.500 | 1,000 tok/s | mem 1.23 GB | elapsed 0:05 | ETA 0:05"
    )


def stage_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)]),
        "DATA_ROOT": str(tmp_path / "data"),
        "OUT_DIR": str(tmp_path / "out"),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def test_tee_prefixes_other_ranks_and_keeps_progress_bars_off_the_log(tmp_path: Path) -> None:
    console = io.StringIO()
    log = LogFile(tmp_path / "logs" / "x.log")
    tee = TeeStream(console, log, "[rank 1] ")
    tee.write("a warning\nsecond ")
    tee.write("half\n\r  train: 50%|##   |\r  train: 100%|#####|\n")
    tee.write("no newline")
    tee.finish()
    log.close()
    assert console.getvalue() == (
        "[rank 1] a warning\n[rank 1] second half\n[rank 1] \r  train: 50%|##   |\r  train: 100%|#####|\n"
        "[rank 1] no newline"
    )
    assert (
        tmp_path / "logs" / "x.log"
    ).read_text() == "[rank 1] a warning\n[rank 1] second half\n[rank 1] no newline\n"


def test_a_stage_run_by_hand_appends_its_console_lines_to_out_logs(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params_file = write_params(tmp_path / "params.yaml", tiny_params(corpus, training={"max_steps": 10}))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OUT_DIR", str(tmp_path / "out"))

    def by_hand(stage: Callable[[list[str]], int]) -> str:
        """The stage's command, as ``python -m`` runs it; what it printed on stdout."""
        code, stdout, stderr = call_main(stage, [str(params_file)])
        assert code == 0, stderr
        return stdout

    by_hand(tokenize.main)
    printed = by_hand(stages.train.main)
    log = (tmp_path / "out" / "logs" / "train.log").read_text()
    assert log.splitlines() == [line for line in printed.splitlines() if line]
    assert "step 10/10 | loss" in log and "mem " in log and "done: 10 steps" in log
    assert "tokenized" in (tmp_path / "out" / "logs" / "tokenize.log").read_text()
    by_hand(stages.train.main)
    appended = (tmp_path / "out" / "logs" / "train.log").read_text()
    assert appended.startswith(log) and "nothing left to train" in appended[len(log) :]


RANK_WARNING = """
import os
import warnings

from nanugpt.optim.schedulers import CosineOptions


class WarningCosineOptions(CosineOptions):
    def build(self, max_steps, base_lr):
        if os.environ.get("RANK") == "1":
            warnings.warn("rank one was here")
        return super().build(max_steps, base_lr)
"""


@pytest.mark.slow
def test_a_rank_1_warning_reaches_stderr_and_the_log_with_its_prefix(tmp_path: Path, corpus: Path) -> None:
    (tmp_path / "rankwarn.py").write_text(RANK_WARNING)
    sections = {
        "training": {"max_steps": 4, "log_every": 2, "checkpoint_every": 4},
        "scheduler": {"module": "rankwarn:WarningCosineOptions", "warmup_steps": 1},
        "eval": {"eval_every": 0, "eval_iters": 1},
    }
    params_file = write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections))
    env = stage_env(tmp_path)
    tokenized = subprocess.run([sys.executable, "-m", "stages.tokenize", str(params_file)], cwd=tmp_path, env=env)
    assert tokenized.returncode == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*command, "-m", "stages.train", str(params_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    warned = [line for line in done.stderr.splitlines() if "UserWarning: rank one was here" in line]
    assert len(warned) == 1 and warned[0].startswith("[rank 1] "), done.stderr
    log = (tmp_path / "out" / "logs" / "train.log").read_text().splitlines()
    assert [line for line in log if "UserWarning: rank one was here" in line] == warned
    assert any(line.startswith("step 4/4 | loss") for line in log)  # rank 0's lines, unprefixed


def test_no_second_copy_where_the_console_already_is_the_log(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "train.log"
    path.parent.mkdir()
    with open(path, "w") as redirected:  # as Snakemake's `stage > {log} 2>&1` does
        code = "import sys; from pathlib import Path; from pipeline.console_log import tee_console\n"
        code += f"with tee_console(Path({str(path)!r})):\n    print('one line', file=sys.stderr)"
        subprocess.run([sys.executable, "-c", code], stdout=redirected, stderr=redirected, check=True, cwd=REPO)
    assert path.read_text() == "one line\n"


def test_no_second_copy_where_the_launcher_says_the_console_reaches_the_log(tmp_path: Path) -> None:
    """A rank under srun writes its console into a pipe that ends in the log: the launcher says so."""
    path = tmp_path / "logs" / "train.log"
    path.parent.mkdir()
    path.write_text("launcher's line\n")
    code = "import sys; from pathlib import Path; from pipeline.console_log import tee_console\n"
    code += f"with tee_console(Path({str(path)!r})):\n    print('one line')"
    env = {**os.environ, CONSOLE_IS_LOG_ENV: str(path.resolve())}
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO, env=env)
    assert piped.stdout == "one line\n" and path.read_text() == "launcher's line\n"


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar series of the event files in ``log_dir``, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    series: dict[str, dict[int, float]] = {}
    for tag in events.Tags()["scalars"]:
        points = events.Scalars(tag)
        series[tag] = {p.step: p.value for p in points}
        assert len(series[tag]) == len(points), f"{tag}: a step twice"
    return series


def test_tensorboard_events_read_back_with_the_same_names(tmp_path: Path, corpus: Path) -> None:
    pytest.importorskip("tensorboard")
    _, sink = recorded_run(tmp_path, corpus, logging={"tensorboard": True})
    series = tensorboard_scalars(tmp_path / "out" / "tensorboard")  # a point per log interval
    assert set(series) == {name for metrics in sink.rows.values() for name in metrics}
    for name, points in series.items():
        sent = {step: metrics[name] for step, metrics in sink.rows.items() if name in metrics}
        # events hold float32; train/pred_loss is NaN before 8 steps
        assert points == pytest.approx(sent, rel=1e-6, nan_ok=True), name


def test_tensorboard_resume_keeps_one_point_per_step(tmp_path: Path, corpus: Path) -> None:
    pytest.importorskip("tensorboard")
    recorded_run(tmp_path, corpus, logging={"tensorboard": True})
    out = tmp_path / "out"
    shutil.copy(out / "checkpoints" / "step-0000010.pt", out / "checkpoints" / "last.pt")  # killed after step 20
    params = load_params(tmp_path / "params.yaml")
    train(params, tmp_path / "data" / "tiny" / "char", out)
    losses = tensorboard_scalars(out / "tensorboard")["train/loss"]
    assert sorted(losses) == [5, 10, 15, 20]


def wandb_records(run_file: Path) -> list[Any]:
    """The records of an offline run's ``.wandb`` file (LevelDB's log format: 32 KiB blocks of chunks, each
    with a 7-byte header of crc, length and kind; the file starts with a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, records = run_file.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = payload if kind in (1, 2) else pending + payload  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def offline_run(out: Path, timeout_s: float = 30) -> list[Any]:
    """The records of the one offline run under ``out``, once its exit record is there: W&B's service process may
    write it a moment after ``finish()`` has returned (seen once in CI, on a loaded machine)."""
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout_s
    records = wandb_records(run_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = wandb_records(run_file)
    return records


def md5_digest(data: bytes) -> str:
    """A W&B manifest entry's digest of a file holding ``data``: its MD5, base64."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_wandb_offline_has_every_metric_the_params_and_checkpoint_artifacts_and_a_clean_exit(
    tmp_path: Path, corpus: Path, monkeypatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    scored = scored_during_training(tmp_path, every=10)
    _, sink = recorded_run(tmp_path, corpus, logging={"wandb": True}, eval=scored)  # evaluations at 10 and 20
    out = tmp_path / "out"
    records = offline_run(out)
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    assert [h.step.num for h in history] == [5, 10, 15, 20]  # a point per log interval
    points = {h.step.num: {item.key or "/".join(item.nested_key): item.value_json for item in h.item} for h in history}
    logged = {name for point in points.values() for name in point}
    assert logged >= {name for metrics in sink.rows.values() for name in metrics}
    for name in EVERY_SCORING:  # HellaSwag during training: a point at each scoring, the sinks' figure
        curve = {step: json.loads(point[name]) for step, point in points.items() if name in point}
        assert curve == {step: pytest.approx(sink.rows[step][name]) for step in (10, 20)}, name

    run_id = run_record(records).run_id
    run_files, *checkpoints = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert (run_files.type, run_files.name) == ("run-files", f"run-files-{run_id}")
    assert {e.path for e in run_files.manifest.contents} == {"params.yaml", "run_info.json"}

    # an artifact version per line of checkpoints.jsonl, in its order: of best-<run id> for the best.pt of each new
    # best val loss, of checkpoint-<run id> for each step file; its metadata is the line, its files the line and a
    # reference to the checkpoint
    written = [json.loads(line) for line in (out / "logs" / "checkpoints.jsonl").read_text().splitlines()]
    assert [(record["step"], record["kind"]) for record in written] == [
        (10, "best"),
        (10, "step"),
        (20, "best"),
        (20, "step"),
    ]
    assert len(checkpoints) == len(written)
    for artifact, record in zip(checkpoints, written):
        name = "best" if record["kind"] == "best" else "checkpoint"
        assert (artifact.type, artifact.name) == ("model", f"{name}-{run_id}")
        assert json.loads(artifact.metadata) == record
        own = {"best"} if record["kind"] == "best" else {f"step-{record['step']}"}
        assert set(artifact.aliases) == own | {"latest"}  # W&B puts "latest" on the newest version of each
        checkpoint = Path(record["path"])
        entries = {e.path: e for e in artifact.manifest.contents}
        assert set(entries) == {"checkpoint.json", checkpoint.name}
        assert entries["checkpoint.json"].digest == md5_digest(json.dumps(record).encode())
        reference = entries[checkpoint.name]
        assert reference.ref == checkpoint.resolve().as_uri() and not reference.local_path  # referenced, not copied
    assert len({artifact.digest for artifact in checkpoints}) == len(written)  # none is a no-op of the one before
    for record in written[1:]:  # the step files and best.pt as they are now (that of step 20): the recorded sha256
        assert record["sha256"] == sha256_file(Path(record["path"])), record

    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_wandb_run_that_raises_is_marked_failed(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(TrainingError, match="lower optimizer.lr"):
        recorded_run(tmp_path, corpus, logging={"wandb": True}, optimizer={"lr": 1e30})
    records = offline_run(tmp_path / "out")
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1
    summary = run_summary(records)
    assert summary["run/failed_attempts"] == 1
    assert summary["run/last_failure"].endswith("from step 0 ended by an exception or a signal")


def offline_attempts(out: Path) -> list[list[Any]]:
    """The records of every offline run file under ``out/wandb``, in the order the attempts started."""

    def started(path: Path) -> tuple[str, int]:  # offline-run-<yyyymmdd_hhmmss>-<id>[-<n> within one second]
        _, _, stamp, _, *again = path.parent.name.split("-")
        return stamp, int(again[0]) if again else 0

    return [wandb_records(path) for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb"), key=started)]


def run_record(records: list[Any]) -> Any:
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run


def run_summary(records: list[Any]) -> dict[str, Any]:
    """The summary an offline run's records leave (the last value of each key)."""
    updates = [item for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update]
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}


def exit_codes(records: list[Any]) -> list[int]:
    return [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]


def test_wandb_host_is_the_server_where_wandb_base_url_is_not_set() -> None:
    host = socket.gethostname()
    assert server_settings({}) == {}
    assert server_settings({"WANDB_HOST": "http://wandb.lab:8080"}) == {
        "base_url": "http://wandb.lab:8080",
        "host": host,
    }
    both = {"WANDB_BASE_URL": "https://api.wandb.ai", "WANDB_HOST": "http://wandb.lab:8080"}
    assert server_settings(both) == {"host": host}  # wandb reads WANDB_BASE_URL itself, and it wins
    assert server_settings({"WANDB_BASE_URL": "https://api.wandb.ai", "WANDB_HOST": "node17"}) == {}  # wandb's sense
    for name, value in [
        ("WANDB_HOST", "wandb.lab"),
        ("WANDB_HOST", "http://wandb.lab:80x"),
        ("WANDB_BASE_URL", "ftp://x"),
    ]:
        with pytest.raises(UserError, match=f"{name}='{re.escape(value)}' is not a W&B server address.*https://"):
            server_settings({name: value})


def test_a_malformed_wandb_host_stops_training_before_any_work(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, logging={"wandb": True})))
    monkeypatch.setenv("WANDB_HOST", "wandb.lab")
    with pytest.raises(UserError, match="WANDB_HOST='wandb.lab' is not a W&B server address"):
        train(params, tmp_path / "data" / "tiny" / "char", tmp_path / "out")  # no token files needed: it stops first
    assert not (tmp_path / "out").exists()


def test_wandb_offline_run_is_created_with_wandb_host_as_its_server(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    sink = WandbSink("p", "r", {}, tmp_path, stage="train", environ={"WANDB_HOST": "http://wandb.example.invalid:8080"})
    settings = sink.run.settings
    sink.close()
    assert settings.base_url == "http://wandb.example.invalid:8080" and settings.host == socket.gethostname()
    (records,) = offline_attempts(tmp_path)
    assert run_record(records).host == socket.gethostname()  # not the server's address, as wandb alone would put


def test_a_resume_continues_the_wandb_run_and_a_start_from_step_0_begins_a_new_one(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")

    def attempt(**how: Any) -> str:
        sink = WandbSink("p", "r", {}, tmp_path, **how)
        sink.close()
        return sink.run.id

    first = attempt(stage="train", new_run=True)
    assert attempt(stage="train", start_step=10) == attempt(stage="generate") == first
    second = attempt(stage="train", new_run=True)
    assert second != first
    state_file = tmp_path / "wandb" / "run.json"
    state = json.loads(state_file.read_text())
    assert state == {"id": second, "failed_attempts": 0, "open": None}
    killed = {"stage": "train", "host": "n1", "pid": 7, "started": "2026-12-01T12:00:00+00:00", "start_step": 0}
    state_file.write_text(json.dumps({**state, "open": killed}))  # what an attempt killed outright leaves
    assert attempt(stage="train", new_run=True) == second  # the restart of a killed run continues it
    assert json.loads(state_file.read_text())["failed_attempts"] == 1


KILLABLE_SCHEDULE = """
import os
import time
from pathlib import Path

from nanugpt.optim.schedulers import CosineOptions


class Stalling:
    \"\"\"A cosine schedule that, where $STALL_AT names a file, creates it at step 15 and stalls there.\"\"\"

    def __init__(self, schedule):
        self.schedule = schedule

    def factor(self, step):
        if step == 15 and os.environ.get("STALL_AT"):
            Path(os.environ["STALL_AT"]).touch()
            time.sleep(600)
        return self.schedule.factor(step)

    def state_dict(self):
        return self.schedule.state_dict()


class StallingCosineOptions(CosineOptions):
    def build(self, max_steps, base_lr):
        return Stalling(super().build(max_steps, base_lr))
"""


def test_a_wandb_attempt_killed_by_sigkill_is_recorded_as_failed_by_the_next(
    tmp_path: Path, corpus: Path, monkeypatch, capfd
) -> None:
    pytest.importorskip("wandb")
    (tmp_path / "stalling.py").write_text(KILLABLE_SCHEDULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # the params name the schedule by its module
    sections = {
        "scheduler": {"module": "stalling:StallingCosineOptions", "warmup_steps": 2},
        "logging": {"wandb": True},
    }
    params_file = write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections))
    tokenize.run(load_params(params_file), data_root=tmp_path / "data")
    stalled, out = tmp_path / "stalled", tmp_path / "out"
    # no WANDB_SERVICE: the stages start their own wandb service, not this process's (which outlives a kill)
    env = {k: v for k, v in stage_env(tmp_path).items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", STALL_AT=str(stalled))
    command = [sys.executable, "-m", "stages.train", str(params_file)]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not stalled.exists():  # steps 1-15 logged, the checkpoint of step 10 saved
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    state_before = json.loads((out / "wandb" / "run.json").read_text())
    assert state_before["open"]["pid"] == first.pid

    monkeypatch.setenv("WANDB_MODE", "offline")
    capfd.readouterr()
    assert train(load_params(params_file), tmp_path / "data" / "tiny" / "char", out)["step"] == 20  # the resume
    again = capfd.readouterr()
    assert "resumed from step 10" in again.out

    killed, resumed = offline_attempts(out)  # wandb writes its file every 15 s: the killed one may hold nothing
    assert exit_codes(killed) == [] and exit_codes(resumed) == [0]  # the killed attempt could not close its run
    assert run_record(resumed).run_id == state_before["id"] and run_record(resumed).resume
    summary = run_summary(resumed)
    assert summary["run/failed_attempts"] == 1
    failure = summary["run/last_failure"]
    assert re.fullmatch(
        rf"the train attempt started at \S+ on {re.escape(socket.gethostname())} \(pid {first.pid}\) from step 0 "
        r"ended without closing the run \(killed .*\); recorded by the train attempt .* from step 10",
        failure,
    ), failure
    (alert,) = [r.alert for r in resumed if r.WhichOneof("record_type") == "alert"]
    assert alert.level == "WARN" and alert.text == failure
    assert failure in again.err
    history = [r.history for r in resumed if r.WhichOneof("record_type") == "history"]
    assert [h.step.num for h in history] == [15, 20]  # the run goes on from its checkpoint, a point per interval
    state = json.loads((out / "wandb" / "run.json").read_text())
    assert state["failed_attempts"] == 1 and state["open"] is None


def test_evaluation_figures_are_every_number_of_metrics_json_but_the_step() -> None:
    metrics = {"step": 20, "tokens_seen": 160, "val_loss": 2.0, "test_loss": 2.5, "hellaswag_acc": 0.25, "ok": True}
    assert evaluation_figures({**metrics, "tokenizer": "char"}) == {
        "eval/tokens_seen": 160.0,
        "eval/val_loss": 2.0,
        "eval/test_loss": 2.5,
        "eval/hellaswag_acc": 0.25,
    }


def test_evaluate_figures_reach_tensorboard_and_the_wandb_run(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    recorded_run(tmp_path, corpus, logging={"tensorboard": True, "wandb": True})
    out, params = tmp_path / "out", load_params(tmp_path / "params.yaml")
    publish(out / "checkpoints", out / "model")  # what the train stage does after the loop above
    for _ in range(2):  # evaluating the same checkpoint again replaces its figures
        metrics = evaluate.run(params, data_root=tmp_path / "data", out_dir=out)
    figures = evaluation_figures(metrics)
    assert {"eval/val_loss", "eval/val_ppl"} <= set(figures)
    series = tensorboard_scalars(out / "tensorboard" / "evaluate")
    assert set(series) == set(figures)
    for name, value in figures.items():
        assert series[name] == {20: pytest.approx(value, rel=1e-6)}, name
    assert not any(name.startswith("eval/") for name in tensorboard_scalars(out / "tensorboard"))
    trained, *evaluations = offline_attempts(out)
    assert len(evaluations) == 2 and {run_record(r).run_id for r in evaluations} == {run_record(trained).run_id}
    summary = run_summary(evaluations[-1])
    assert {name: summary[name] for name in figures} == pytest.approx(figures)
    assert exit_codes(evaluations[-1]) == [0]


def dvclive_steps(series: Path) -> list[int]:
    with open(series, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]


def test_dvclive_files_and_a_resume_without_a_step_twice(tmp_path: Path, corpus: Path) -> None:
    sink, _ = recorded_run(tmp_path, corpus)  # logging.dvclive is on by default
    live = tmp_path / "out" / "dvclive"
    assert yaml.safe_load((live / "params.yaml").read_text())["training"]["max_steps"] == 20
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 20 and summary["train"]["loss"] == pytest.approx(sink.rows[20]["train/loss"])
    assert summary["val"]["loss"] == pytest.approx(sink.rows[20]["val/loss"])
    assert dvclive_steps(live / "plots" / "metrics" / "val" / "loss.tsv") == [10, 20]

    out = tmp_path / "out"
    shutil.copy(out / "checkpoints" / "step-0000010.pt", out / "checkpoints" / "last.pt")  # killed after step 20
    train(load_params(tmp_path / "params.yaml"), tmp_path / "data" / "tiny" / "char", out)
    for name in ("loss", "grad_norm"):  # a row per log interval
        assert dvclive_steps(live / "plots" / "metrics" / "train" / f"{name}.tsv") == [5, 10, 15, 20], name
    with open(out / "plots" / "train.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(1, 21))  # the CSV keeps every step
    assert json.loads((live / "metrics.json").read_text())["step"] == 20


def live_metrics(ws: Path, env: dict[str, str]) -> dict[str, Any]:
    """dvclive's metrics of the workspace row of ``dvc exp show --json``."""
    shown = json.loads(run_checked(["dvc", "exp", "show", "--json"], ws, env).stdout)
    (workspace,) = [row for row in shown if row["rev"] == "workspace"]
    return workspace["data"]["metrics"]["out/dvclive/metrics.json"]["data"]


@pytest.mark.slow
def test_dvc_exp_show_has_the_step_and_metrics_during_and_after_a_run(tmp_path: Path) -> None:
    env = dvc_env(tmp_path)
    sections = {
        "training": {"max_steps": 400, "log_every": 10, "checkpoint_every": 200},
        "eval": {"eval_every": 200, "eval_iters": 2},
    }
    ws = make_workspace(tmp_path, tiny_params("corpus.txt", **sections), env)
    run_checked(["dvc", "repro", "tokenize"], ws, env)
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=ws, env=env, stdout=subprocess.DEVNULL)
    try:
        summary = ws / "out" / "dvclive" / "metrics.json"
        deadline = time.monotonic() + 120
        while not summary.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        during = live_metrics(ws, env)
        assert proc.poll() is None, "the run ended before dvc exp show read it: make it longer"
        assert 10 <= during["step"] < 400 and during["train"]["loss"] > 0 and "tokens_per_s" in during["train"]
    finally:
        assert proc.wait(timeout=300) == 0
    after = live_metrics(ws, env)
    assert after["step"] == 400 and after["val"]["loss"] > 0 and after["val"]["best_loss"] > 0


class GatedSink(RecordingSink):
    """A ``RecordingSink`` whose writes wait for ``gate``, then raise ``fail_at``'s error at that step."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(every_step=False)
        self.gate, self.fail_at = threading.Event(), fail_at

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        assert self.gate.wait(timeout=30), "the gate was never opened"
        if step == self.fail_at:
            raise OSError(f"disk full at step {step}")
        super().write(step, metrics)


def test_a_threaded_sink_hands_rows_over_without_waiting_and_keeps_their_order() -> None:
    inner = GatedSink()
    sink = ThreadedSink(inner)
    assert sink.every_step is False
    for step in (10, 20, 30):
        sink.write(step, {"train/loss": step / 10})  # returns while the sink waits at its gate
    assert inner.rows == {}
    inner.gate.set()
    sink.flush()
    assert list(inner.rows.items()) == [(10, {"train/loss": 1.0}), (20, {"train/loss": 2.0}), (30, {"train/loss": 3.0})]
    sink.close(failed=True)
    assert inner.closed and inner.failed


def test_a_threaded_sinks_error_is_raised_on_the_training_thread_once() -> None:
    inner = GatedSink(fail_at=20)
    inner.gate.set()
    sink = ThreadedSink(inner)
    sink.write(10, {"train/loss": 1.0})
    sink.write(20, {"train/loss": 2.0})
    with pytest.raises(OSError, match="disk full at step 20"):
        sink.flush()
    sink.write(30, {"train/loss": 3.0})  # dropped: the sink is broken
    sink.close()  # the error was raised already
    assert list(inner.rows) == [10] and inner.closed


class SlowCloseSink(RecordingSink):
    def close(self, failed: bool = False) -> None:
        time.sleep(0.3)
        super().close(failed)


def test_closing_the_sinks_is_not_training_time() -> None:
    model = torch.nn.Linear(2, 2)
    metrics = TrainMetrics(
        [SlowCloseSink(every_step=False)],
        DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu")),
        log_every=1,
        max_steps=1,
        tokens_per_step=1,
        flops_per_token=1.0,
        peak_flops=None,
        start_step=0,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        model=model,
    )
    metrics.close()
    summary = metrics.summary(step=0, tokens_seen=0)
    assert summary["seconds"] - summary["train_seconds"] >= 0.3  # W&B's finish, e.g., is not training


class SlowSink(RecordingSink):
    """Takes 0.5 s to write a row, and notes when each row was written."""

    def __init__(self) -> None:
        super().__init__(every_step=False)
        self.written: dict[int, float] = {}

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        time.sleep(0.5)
        super().write(step, metrics)
        self.written[step] = time.time()


def test_a_checkpoint_is_saved_after_the_threaded_sinks_have_its_rows(tmp_path: Path, corpus: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, logging={"dvclive": False})))
    tokenize.run(params, data_root=tmp_path / "data")
    slow = SlowSink()
    train(params, tmp_path / "data" / "tiny" / "char", tmp_path / "out", sinks=[ThreadedSink(slow)])
    assert list(slow.rows) == [5, 10, 15, 20] and slow.closed
    saved = (tmp_path / "out" / "checkpoints" / "step-0000010.pt").stat().st_mtime
    assert saved >= slow.written[10] - 0.05  # the file clock is coarse; without the wait it is 0.5 s early


def test_a_torn_dvclive_summary_left_by_a_kill_does_not_stop_the_resume(tmp_path: Path) -> None:
    """SIGKILL while dvclive rewrote ``metrics.json`` (truncated first) leaves it empty; the resumed run's sink
    starts anyway, keeps the series up to the checkpoint, and writes the summary whole again."""
    live_dir = tmp_path / "dvclive"
    first = DvcLiveSink(live_dir, {"seed": 1}, 0)
    for step in (10, 20):
        first.write(step, {"train/loss": 3.0 - step / 100})
    first.close()
    (live_dir / "metrics.json").write_text("")  # torn by the kill
    resumed = DvcLiveSink(live_dir, {"seed": 1}, 10)
    resumed.write(20, {"train/loss": 2.5})
    resumed.close()
    assert json.loads((live_dir / "metrics.json").read_text())["train"]["loss"] == 2.5
    with open(live_dir / "plots" / "metrics" / "train" / "loss.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(row["step"], row["loss"]) for row in rows] == [("10", "2.9"), ("20", "2.5")]


def test_the_dvclive_summary_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    """``dvc exp show`` during a run reads ``metrics.json`` while rows are written: a reader that opened the file
    before a write still reads the whole previous summary (a rewrite in place would truncate it under it)."""
    live_dir = tmp_path / "dvclive"
    sink = DvcLiveSink(live_dir, {"seed": 1}, 0)
    sink.write(10, {"train/loss": 2.9})
    with open(live_dir / "metrics.json") as reader:
        sink.write(20, {"train/loss": 2.8})
        assert json.loads(reader.read()) == {"step": 10, "train": {"loss": 2.9}}
    sink.close()
    assert json.loads((live_dir / "metrics.json").read_text()) == {"step": 20, "train": {"loss": 2.8}}


def test_damaged_metric_tables_keep_their_readable_rows_on_resume(tmp_path: Path, capsys) -> None:
    """Issue 30, case 9: a non-UTF-8 ``plots/train.csv`` and a non-number row in a dvclive series used to end
    the resume in a traceback."""
    table = tmp_path / "plots" / "train.csv"
    table.parent.mkdir()
    table.write_bytes(b"step,train_loss\n1,4.0\n2,3.\xff9\nthree,3.8\n4,3.7\n5,3.6\n")
    sink = CsvSink(table, {"train_loss": "train/loss"}, "train/loss", resume_step=4)
    sink.write(5, {"train/loss": 3.5})
    sink.close()
    assert table.read_text().splitlines() == ["step,train_loss", "1,4.0", "4,3.7", "5,3.5"]
    series = tmp_path / "loss.tsv"
    series.write_text("timestamp\tstep\tloss\n0\t1\t4.0\n0\tNaN-step\t3.9\n0\t3\t3.8\n0\t9\t3.0\n")
    keep_rows_up_to(series, 5)
    assert series.read_text().splitlines() == ["timestamp\tstep\tloss", "0\t1\t4.0", "0\t3\t3.8"]
    printed = capsys.readouterr().out
    assert f"{table}: dropped 2 damaged row(s)" in printed and f"{series}: dropped 1 damaged row(s)" in printed


def test_the_tasks_table_has_a_row_per_scoring_and_its_header_in_a_run_without_one(tmp_path: Path) -> None:
    """``plots/tasks.csv``: a row at each step whose row has the figures of ``eval.tasks`` (``eval.tasks_every``,
    ``nanugpt.eval.task_curve``); a run without them writes its header alone (dvc.yaml and the Snakefile declare
    it an output of train, and a missing output fails the stage)."""
    header = "step,tokens,hellaswag_acc,hellaswag_acc_norm"
    for name, scored in (("on", {2: {"tasks/hellaswag_acc": 0.25, "tasks/hellaswag_acc_norm": 0.5}}), ("off", {})):
        sinks = csv_sinks(tmp_path / name, ("accuracy",), resume_step=0)
        assert [sink.path.name for sink in sinks] == list(PLOT_FILES)
        for step in (1, 2, 3):
            for sink in sinks:
                sink.write(
                    step, {"train/loss": 3.0, "train/lr": 1e-3, "train/tokens": 64 * step, **scored.get(step, {})}
                )
        for sink in sinks:
            sink.close()
        rows = [header, "2,128,0.25,0.5"] if scored else [header]
        assert (tmp_path / name / "tasks.csv").read_text().splitlines() == rows
        assert len((tmp_path / name / "train.csv").read_text().splitlines()) == 4
    for sink in csv_sinks(tmp_path / "on", ("accuracy",), resume_step=1):  # a resume from step 1: its rows kept
        sink.close()
    assert (tmp_path / "on" / "tasks.csv").read_text().splitlines() == [header]


def test_a_file_where_a_metrics_folder_belongs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dvclive").write_text("not a folder")
    with pytest.raises(UserError, match=f"{tmp_path / 'dvclive'}: a file stands where the metrics folder should be"):
        DvcLiveSink(tmp_path / "dvclive", {}, resume_step=10)
    (tmp_path / "plots").write_text("not a folder")
    with pytest.raises(UserError, match="a file stands where the metrics folder should be"):
        CsvSink(tmp_path / "plots" / "train.csv", {"train_loss": "train/loss"}, "train/loss", resume_step=10)
