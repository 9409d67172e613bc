"""Trustworthy runs: crash recovery, best checkpoint, corrupt inputs, disk full, secrets, W&B offline."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, tiny_params, write_params

from nanugpt.checkpoint.store import CheckpointError, load_checkpoint
from nanugpt.config.params import ParamsError, load_params
from nanugpt.data.tokenized import DataError
from nanugpt.errors import UserError
from nanugpt.metrics.sinks import format_log_line
from stages import evaluate, generate, tokenize, train


def prepare(tmp_path: Path, corpus: Path, **sections) -> tuple:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections)))
    tokenize.run(params, data_root=tmp_path / "data")
    return params, tmp_path / "data"


def train_losses(out_dir: Path) -> list[tuple[int, float]]:
    with open(out_dir / "plots" / "train.csv") as f:
        return [(int(row["step"]), float(row["train_loss"])) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted(tmp_path: Path, corpus: Path) -> None:
    sections = {"training": {"max_steps": 600, "log_every": 5, "checkpoint_every": 25}, "model": {"dropout": 0.1}}
    params, data = prepare(tmp_path, corpus, **sections)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_ROOT": str(data), "OUT_DIR": str(tmp_path / "out")}
    command = [sys.executable, "-m", "stages.train", str(tmp_path / "params.yaml")]
    kill_after = random.Random().randint(60, 400)  # a random step past the first checkpoints
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv_path = tmp_path / "out" / "plots" / "train.csv"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > kill_after:
            break
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no chance to save anything
    proc.wait(timeout=60)
    killed_at = len(csv_path.read_text().splitlines()) - 1
    resumed_from = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")["step"]
    assert 0 < resumed_from <= killed_at < 600, (resumed_from, killed_at)
    assert killed_at - resumed_from < 25 + 5  # at most one checkpoint interval (+ one log interval) lost

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from step {resumed_from}" in rerun.stdout
    train.run(params, data_root=data, out_dir=tmp_path / "uninterrupted")
    assert train_losses(tmp_path / "out") == train_losses(tmp_path / "uninterrupted")  # bitwise, float32 CPU


def test_best_checkpoint_is_the_lowest_val_loss(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(
        tmp_path, corpus, training={"max_steps": 40}, eval={"eval_every": 5, "eval_iters": 2}, optimizer={"lr": 3e-2}
    )
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    with open(tmp_path / "out" / "plots" / "val.csv") as f:
        rows = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f)]
    best_step, best_loss = min(rows, key=lambda r: r[1])
    best = load_checkpoint(tmp_path / "out" / "checkpoints" / "best.pt")
    assert (best["step"], best["best_val_loss"]) == (best_step, best_loss)


def test_corrupt_token_file_is_refused(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    train_bin = data / "tiny" / "char" / "train.bin"
    raw = bytearray(train_bin.read_bytes())
    raw[100] ^= 0xFF  # same size, different content
    train_bin.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="sha256 differs from meta.json"):
        train.run(params, data_root=data, out_dir=tmp_path / "out")


def test_checkpoint_of_other_data_is_refused_by_evaluate_and_generate(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    (tmp_path / "other.txt").write_text("xyz\n" * 500)
    other = load_params(write_params(tmp_path / "other.yaml", tiny_params(tmp_path / "other.txt")))
    tokenize.run(other, data_root=tmp_path / "data2")
    for stage in (evaluate, generate):
        with pytest.raises(CheckpointError, match="trained on other data"):
            stage.run(other, data_root=tmp_path / "data2", out_dir=tmp_path / "out")


def test_disk_full_leaves_nothing_partial(tmp_path: Path) -> None:
    target = tmp_path / "small_disk"
    target.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
    try:
        (tmp_path / "big.txt").write_text("All the world's a stage.\n" * 40_000)  # 1 MB > 256 KiB
        params = load_params(
            write_params(tmp_path / "p.yaml", tiny_params(tmp_path / "big.txt", tokenizer={"module": "byte"}))
        )
        with pytest.raises(UserError, match="disk full while writing"):
            tokenize.run(params, data_root=target)
        assert [p for p in target.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["300k", "3m"])
def test_a_train_on_a_full_disk_is_one_line_naming_the_folder_and_leaves_no_empty_file(
    tmp_path: Path, corpus: Path, size: str
) -> None:
    """Issue 30, case 7: torch.save's RuntimeError came as a traceback, and at 300 KB dvclive left a 0-byte
    metrics.json. The train runs as the command does (``main``): the one line and exit 1."""
    target = tmp_path / "small_disk"
    target.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
    try:
        prepare(tmp_path, corpus, model={"n_embd": 64}, training={"max_steps": 40, "checkpoint_every": 10})
        env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_ROOT": str(tmp_path / "data"), "OUT_DIR": str(target)}
        result = subprocess.run(
            [sys.executable, "-m", "stages.train", str(tmp_path / "params.yaml")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.stderr.startswith(("error: disk full while writing", "error: quota exceeded")), result.stderr
        assert f"in {target}" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
        assert [p for p in target.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.suffix == ".json"] == []
        assert [p for p in target.rglob(".*.tmp-*")] == []
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_secrets_in_the_environment_are_never_written(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    secret = "sk-test-8f3a1c9e5b7d"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    evaluate.run(params, data_root=data, out_dir=tmp_path / "out")
    generate.run(params, data_root=data, out_dir=tmp_path / "out")
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert secret.encode() not in path.read_bytes(), path


def test_paths_from_params_cannot_escape_the_roots(tmp_path: Path, corpus: Path) -> None:
    for section, values in (
        ("data", {"dataset": "../../etc"}),
        ("data", {"dataset": "/abs"}),
        ("tokenizer", {"module": "../../x"}),
    ):
        with pytest.raises(ParamsError):
            load_params(write_params(tmp_path / "p.yaml", tiny_params(corpus, **{section: values})))


def test_log_line_has_every_field() -> None:
    line = format_log_line(
        step=120,
        max_steps=2000,
        train_loss=1.2345,
        val_loss=1.4,
        lr=3e-4,
        grad_norm=0.52,
        tokens_per_s=14_200,
        mfu=0.46,
        elapsed=65,
        eta=1020,
    )
    assert line == (
        "step 120/2000 | loss 1.2345 | val 1.4000 | lr 3.00e-04 | grad 0.520 | 14,200 tok/s | "
        "MFU 46.0% | elapsed 1:05 | ETA 17:00"
    )


def test_wandb_offline_logs_params_metrics_and_no_environment(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    secret = "sk-wandb-3e9f0a"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("MY_SECRET", secret)
    params, data = prepare(tmp_path, corpus, logging={"wandb": True})
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    samples = generate.run(params, data_root=data, out_dir=tmp_path / "out")
    runs = [run for run in (tmp_path / "out").rglob("offline-run-*") if run.is_dir()]
    run_ids = {record.stem.removeprefix("run-") for run in runs for record in run.glob("*.wandb")}
    assert len(run_ids) == 1, f"generate logs to the training run, got runs {run_ids}"
    files = [p for run in runs for p in run.rglob("*") if p.is_file()]
    assert len(runs) == 2 and sum(p.suffix == ".wandb" for p in files) == 2  # train, then generate's samples
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    record = b"".join(p.read_bytes() for run in runs for p in run.glob("*.wandb"))  # what `wandb sync` uploads
    assert b"adamw_nanogpt" in record and b"max_steps" in record and b"train/loss" in record
    tables = [p.read_text() for run in runs for p in run.rglob("samples_*.table.json")]
    assert len(tables) == 1 and json.loads(tables[0])["data"] == [[s] for s in samples]
