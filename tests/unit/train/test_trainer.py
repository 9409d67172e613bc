"""The train loop on tiny data: loss falls, checkpoints round-trip, resume is exact, errors are clear."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from helpers import killed_after, tiny_params, write_params

from nanugpt.checkpoint.store import CheckpointError, load_checkpoint
from nanugpt.config.params import ParamsError, load_params
from nanugpt.data.tokenized import DataError
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError
from nanugpt.metrics.train_metrics import WARMUP_STEPS
from nanugpt.train.build import build_run, train_share
from stages import tokenize, train


def prepare(tmp_path: Path, corpus: Path, **sections) -> tuple:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections)))
    tokenize.run(params, data_root=tmp_path / "data")
    return params, tmp_path / "data"


def train_losses(out_dir: Path) -> dict[int, float]:
    with open(out_dir / "plots" / "train.csv") as f:
        return {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(f)}


def test_loss_falls_and_outputs_written(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus, training={"max_steps": 60})
    summary = train.run(params, data_root=data, out_dir=tmp_path / "out")
    losses = train_losses(tmp_path / "out")
    assert sorted(losses) == list(range(1, 61))
    assert losses[60] < losses[1] - 1.0, (losses[1], losses[60])
    assert summary["val_loss"] is not None and summary["step"] == 60
    assert summary["steady_tokens_per_s"] > 0 and summary["tokens_per_s"] > 0
    assert (tmp_path / "out" / "run_info.json").exists()
    kept = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    steps = [name for s in (20, 30, 40, 50, 60) for name in (f"step-{s:07d}.pt", f"step-{s:07d}.pt.sha256")]
    assert kept == [
        "best.pt",
        "best.pt.sha256",
        "last.json",
        "last.pt",
        "last.pt.sha256",
        *steps,
    ]  # keep_last 5, checksums beside
    assert json.loads((tmp_path / "out" / "checkpoints" / "last.json").read_text()) == {"step": 60, "last": "last.pt"}
    log = [json.loads(line) for line in (tmp_path / "out" / "logs" / "checkpoints.jsonl").read_text().splitlines()]
    written = [(r["kind"], r["step"]) for r in log]
    assert [r for r in written if r[0] == "step"] == [("step", s) for s in range(10, 61, 10)]
    assert {r[0] for r in written} == {"step", "best"}
    for record in log:
        if record["kind"] == "step" and record["step"] >= 20:  # still there: its sha256 is the file's
            path = Path(record["path"])
            assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert record["val_loss"] == load_checkpoint(path)["val_loss"]


def test_run_within_the_warmup_has_no_steady_throughput(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus, training={"max_steps": WARMUP_STEPS})
    summary = train.run(params, data_root=data, out_dir=tmp_path / "out")
    assert summary["steady_tokens_per_s"] is None and summary["tokens_per_s"] > 0


def test_checkpoint_holds_plain_values_and_round_trips(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    state = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")  # weights_only=True
    assert state["step"] == 20 and state["tokens_seen"] == 20 * 8 * 16
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "data", "params"}
    model = params.model.build(state["vocab_size"])
    model.load_state_dict(state["model"])
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])


def test_resume_reproduces_the_uninterrupted_losses(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus, model={"dropout": 0.1})
    train.run(params, data_root=data, out_dir=tmp_path / "full")
    resumed = killed_after(tmp_path / "full", 10, tmp_path / "resumed")
    train.run(params, data_root=data, out_dir=resumed)
    assert train_losses(resumed) == train_losses(tmp_path / "full")  # bitwise, float32 on CPU


def test_a_run_stopped_at_a_step_and_continued_by_path_equals_the_straight_run(tmp_path: Path, corpus: Path) -> None:
    """Successive halving's rungs: train to step 7 of a 20-step schedule, continue from that checkpoint in another
    folder, and every per-step loss is the straight run's, bitwise."""
    params, data = prepare(tmp_path, corpus, model={"dropout": 0.1})
    straight = train.run(params, data_root=data, out_dir=tmp_path / "straight")
    rung = load_params(tmp_path / "params.yaml", ["--training.stop_at", "7"])
    first = train.run(rung, data_root=data, out_dir=tmp_path / "rung-7")
    assert first["step"] == 7 and first["val_loss"] is not None
    assert json.loads((tmp_path / "rung-7" / "checkpoints" / "last.json").read_text())["step"] == 7
    checkpoint = str(tmp_path / "rung-7" / "checkpoints" / "last.pt")
    final = train.run(
        load_params(tmp_path / "params.yaml", ["--training.resume", checkpoint]),
        data_root=data,
        out_dir=tmp_path / "final",
    )
    losses = train_losses(tmp_path / "rung-7") | train_losses(tmp_path / "final")
    assert losses == train_losses(tmp_path / "straight")  # bitwise, float32 on CPU, dropout on
    assert final["val_loss"] == straight["val_loss"]
    info = json.loads((tmp_path / "final" / "run_info.json").read_text())
    assert info["resumed_from"] == {"checkpoint": checkpoint, "step": 7, "changed": {}}
    assert train.run(rung, data_root=data, out_dir=tmp_path / "rung-7")["step"] == 7  # a rerun: nothing to train


def test_stop_at_past_max_steps_is_refused(tmp_path: Path, corpus: Path) -> None:
    write_params(tmp_path / "params.yaml", tiny_params(corpus))
    with pytest.raises(ParamsError, match=r"training.stop_at: must be <= training.max_steps \(20\), got 21"):
        load_params(tmp_path / "params.yaml", ["--training.stop_at", "21"])


def test_truncated_checkpoint_falls_back_to_previous(tmp_path: Path, corpus: Path, capsys) -> None:
    params, data = prepare(tmp_path, corpus)
    out = tmp_path / "out"
    train.run(params, data_root=data, out_dir=out)
    last = out / "checkpoints" / "last.pt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 2)  # also truncates step-20, its hard link
    with pytest.raises(CheckpointError, match=r"last.pt: damaged: \d+ bytes where last.pt.sha256 says"):
        load_checkpoint(last)
    summary = train.run(params, data_root=data, out_dir=out)
    assert "resumed from step 10" in capsys.readouterr().out
    assert summary["step"] == 20


def test_resume_auto_ignores_checkpoint_of_other_params(tmp_path: Path, corpus: Path, capsys) -> None:
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    for override in (["--optimizer.lr", "1e-3"], ["--training.max_steps", "30"]):
        other = load_params(tmp_path / "params.yaml", override)
        train.run(other, data_root=data, out_dir=tmp_path / "out")
        printed = capsys.readouterr().out
        assert "trained with different params; starting from step 0" in printed
        assert (
            "set aside the earlier run's checkpoints, model, plots, dvclive, run_info.json, train_summary.json"
            in printed
        )
        assert not (tmp_path / "out" / ".previous-run").exists()  # deleted once this run saved a checkpoint
    assert train.run(other, data_root=data, out_dir=tmp_path / "out")["step"] == 30  # resumed at the end: no work


def test_checkpoint_of_another_shape_is_refused(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    wider = load_params(
        tmp_path / "params.yaml",
        ["--model.n_embd", "64", "--training.resume", str(tmp_path / "out" / "checkpoints" / "last.pt")],
    )
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train.run(wider, data_root=data, out_dir=tmp_path / "out2")


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_tokens_of_another_tokenizer_are_refused(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    (data / "tiny" / "char").rename(data / "tiny" / "byte")
    byte = load_params(tmp_path / "params.yaml", ["--tokenizer.module", "byte"])
    with pytest.raises(DataError, match="re-run the tokenize stage"):
        train.run(byte, data_root=data, out_dir=tmp_path / "out")


def test_global_batch_not_divisible_by_world(tmp_path: Path, corpus: Path) -> None:
    params = load_params(
        write_params(
            tmp_path / "params.yaml", tiny_params(corpus, training={"device_batch_size": 4, "global_batch_size": 4})
        )
    )
    assert train_share(params, DistInfo(0, 0, 1, torch.device("cpu"))).micro_steps == 1
    with pytest.raises(TrainingError, match=r"multiple of training.device_batch_size x world size \(4 x 2 = 8\)"):
        train_share(params, DistInfo(0, 0, 2, torch.device("cpu")))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_exactly(tmp_path: Path, corpus: Path) -> None:
    """With checkpoints written in the background (``training.async_checkpoint``; blocking saves stop alike), the
    save of the signal's step is complete before the process exits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO

    training = {"max_steps": 1500, "log_every": 10, "checkpoint_every": 25, "async_checkpoint": True}
    params, data = prepare(tmp_path, corpus, training=training)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_ROOT": str(data), "OUT_DIR": str(tmp_path / "out")}
    command = [sys.executable, "-m", "stages.train", str(tmp_path / "params.yaml")]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    csv_path = tmp_path / "out" / "plots" / "train.csv"
    while time.monotonic() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 30):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    stopped = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")["step"]
    assert 0 < stopped < 1500 and f"saved a checkpoint at step {stopped} and stopped" in output

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"resumed from step {stopped}" in rerun.stdout
    train.run(params, data_root=data, out_dir=tmp_path / "uninterrupted")
    assert train_losses(tmp_path / "out") == train_losses(tmp_path / "uninterrupted")


def test_lr_range_test_run_reports_a_suggested_lr(tmp_path: Path, corpus: Path) -> None:
    import json

    tree = tiny_params(corpus, training={"max_steps": 40, "checkpoint_every": 0}, eval={"eval_every": 0})
    tree["scheduler"] = {"module": "lr_range_test", "min_lr": 1e-5, "max_lr": 10.0}
    params = load_params(write_params(tmp_path / "params.yaml", tree))
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    report = json.loads((tmp_path / "out" / "train_summary.json").read_text())["schedule"]
    assert 1e-6 <= report["suggested_lr"] <= 1.0
    with open(tmp_path / "out" / "plots" / "train.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    assert lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(lrs, lrs[1:]))  # the sweep: loss vs lr


def test_keys_that_do_not_change_the_numbers_keep_the_resume(tmp_path: Path, corpus: Path, capsys) -> None:
    """Issue 30, case 4: how the data is checked or how fast it is tokenized never restarts a run."""
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "full")
    for i, override in enumerate((["--data.verify", "size"], ["--data.tokenize_workers", "1"])):
        resumed = killed_after(tmp_path / "full", 10, tmp_path / f"resumed-{i}")
        train.run(load_params(tmp_path / "params.yaml", override), data_root=data, out_dir=resumed)
        assert "resumed from step 10" in capsys.readouterr().out
        assert train_losses(resumed) == train_losses(tmp_path / "full")


def test_resume_by_path_trains_with_this_runs_optimizer_values_and_records_them(
    tmp_path: Path, corpus: Path, capsys
) -> None:
    """Issue 30, case 5: a checkpoint named by path continues at this run's lr, and the logs say so."""
    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "full")
    step_10 = str(tmp_path / "full" / "checkpoints" / "step-0000010.pt")
    other = load_params(tmp_path / "params.yaml", ["--training.resume", step_10, "--optimizer.lr", "1e-3"])
    train.run(other, data_root=data, out_dir=tmp_path / "1e-3")
    printed = capsys.readouterr().out
    assert "was trained with other values (optimizer.lr 0.003 -> 0.001)" in printed
    full, lower = train_losses(tmp_path / "full"), train_losses(tmp_path / "1e-3")
    assert lower[11] == full[11]  # step 11's loss is computed before its update: the same weights
    assert all(lower[s] != full[s] for s in range(12, 21))  # then the lower lr's updates
    with open(tmp_path / "1e-3" / "plots" / "train.csv") as f:
        assert max(float(row["lr"]) for row in csv.DictReader(f) if int(row["step"]) > 10) <= 1e-3
    info = json.loads((tmp_path / "1e-3" / "run_info.json").read_text())
    assert info["params"]["optimizer"]["lr"] == 1e-3
    assert info["resumed_from"] == {
        "checkpoint": step_10,
        "step": 10,
        "changed": {"optimizer.lr": {"checkpoint": 0.003, "this_run": 0.001}},
    }


def test_data_seed_changes_the_order_of_train_batches_alone(tmp_path: Path, corpus: Path) -> None:
    params, data = prepare(tmp_path, corpus)
    one = DistInfo(0, 0, 1, torch.device("cpu"))
    data_dir = data / "tiny" / "char"

    def parts(data_seed: int | None):  # general.seed 7 throughout
        tree = tiny_params(corpus, general={"seed": 7, "device_type": "cpu", "data_seed": data_seed})
        return build_run(load_params(write_params(tmp_path / "p.yaml", tree)), data_dir, one, print)

    default, same, other = parts(None), parts(7), parts(8)
    for run in (same, other):  # the same initialisation and the same val batches
        assert all(torch.equal(a, b) for a, b in zip(default.model.parameters(), run.model.parameters()))
        assert torch.equal(default.val_batches.micro_batch(0, 0)[0], run.val_batches.micro_batch(0, 0)[0])
    assert torch.equal(default.train_batches.micro_batch(3, 1)[0], same.train_batches.micro_batch(3, 1)[0])
    assert not torch.equal(default.train_batches.micro_batch(3, 1)[0], other.train_batches.micro_batch(3, 1)[0])
    assert load_params(write_params(tmp_path / "p.yaml", tiny_params(corpus))).general.order_seed == 7


def test_a_resume_in_another_environment_names_what_differs_or_is_refused(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanugpt.checkpoint.store import point_last_at, save_state
    from nanugpt.train.environment import fingerprint

    params, data = prepare(tmp_path, corpus)
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    info = json.loads((tmp_path / "out" / "run_info.json").read_text())
    assert info["environment"] == fingerprint() and len(info["environment"]["packages"]) == 64
    folder = tmp_path / "out" / "checkpoints"
    state = load_checkpoint(folder / "step-0000010.pt")
    other_lock = "f" * 64  # as if saved elsewhere: another lock file, numpy and thread count
    state["environment"] = {**state["environment"], "lock": other_lock, "numpy": "1.0.0", "threads": 64}
    save_state(folder / "step-0000010.pt", state)
    point_last_at(folder, folder / "step-0000010.pt")
    (folder / "step-0000020.pt").unlink()
    capsys.readouterr()
    train.run(params, data_root=data, out_dir=tmp_path / "out")
    current = fingerprint()
    assert (
        f"saved in another environment (lock {other_lock} -> {current['lock']}, numpy 1.0.0 -> {current['numpy']}, "
        f"threads 64 -> {current['threads']}): the run continues" in capsys.readouterr().out
    )
    point_last_at(folder, folder / "step-0000010.pt")
    (folder / "step-0000020.pt").unlink()
    strict = load_params(write_params(tmp_path / "strict.yaml", tiny_params(corpus, training={"resume_env": "strict"})))
    with pytest.raises(CheckpointError, match="lock f{64} -> .*numpy 1.0.0 -> .*training.resume_env is strict"):
        train.run(strict, data_root=data, out_dir=tmp_path / "out")
