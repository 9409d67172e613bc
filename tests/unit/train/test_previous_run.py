"""A failed or repeated train run loses nothing: the previous run's outputs stay as they were (issue 15)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_params, write_params

from nanugpt.checkpoint.store import load_checkpoint
from nanugpt.config.params import load_params
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import TrainingError
from nanugpt.files.atomic import write_json
from nanugpt.train.previous_run import TRAIN_OUTPUTS, PreviousRun
from nanugpt.train.validator import Validator
from stages import evaluate, tokenize, train


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path: Path, corpus: Path) -> tuple[Path, Path]:
    """A params file and a finished tiny run in tmp_path/out, with its data."""
    params_file = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    params = load_params(params_file)
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    return params_file, tmp_path / "data"


def test_a_diverging_run_leaves_the_previous_outputs_intact(tmp_path: Path, finished: tuple[Path, Path]) -> None:
    params_file, data = finished
    out = tmp_path / "out"
    before = snapshot(out)
    diverging = load_params(params_file, ["--optimizer.lr", "1e30"])
    with pytest.raises(TrainingError, match="lower optimizer.lr"):
        train.run(diverging, data_root=data, out_dir=out)
    assert snapshot(out) == before  # last.pt, best.pt, step files, plots, run_info.json, train_summary.json
    metrics = evaluate.run(load_params(params_file), data_root=data, out_dir=out)
    assert math.isfinite(metrics["val_loss"])


def test_rerunning_a_finished_run_changes_no_file(tmp_path: Path, finished: tuple[Path, Path], capsys) -> None:
    params_file, data = finished
    out = tmp_path / "out"
    before = snapshot(out)
    summary = train.run(load_params(params_file), data_root=data, out_dir=out)
    assert snapshot(out) == before
    assert summary == json.loads((out / "train_summary.json").read_text())
    assert summary["step"] == 20 and summary["tokens_per_s"] > 0
    assert "nothing left to train" in capsys.readouterr().out


def test_a_corrupt_last_checkpoint_is_replaced_by_the_newest_good_one(
    tmp_path: Path, finished: tuple[Path, Path], corpus: Path
) -> None:
    params_file, data = finished
    ckpt = tmp_path / "out" / "checkpoints"
    (ckpt / "last.pt").unlink()  # last.pt is a hard link to step 20: replace it by garbage, keep step 20
    (ckpt / "last.pt").write_bytes(b"not a checkpoint")
    summary = train.run(load_params(params_file), data_root=data, out_dir=tmp_path / "out")
    assert summary["step"] == 20
    assert load_checkpoint(ckpt / "last.pt")["step"] == 20
    assert (ckpt / "last.pt").samefile(ckpt / "step-0000020.pt")


def test_outputs_left_aside_by_a_killed_run_are_put_back(tmp_path: Path, finished: tuple[Path, Path]) -> None:
    params_file, data = finished
    out = tmp_path / "out"
    before = snapshot(out)
    previous = PreviousRun(out)
    assert previous.set_aside() == [n for n in TRAIN_OUTPUTS if n != "tensorboard"]  # what a new run does first ...
    (out / "plots").mkdir()
    (out / "plots" / "train.csv").write_text("step,tokens,train_loss,lr\n")  # ... then it is killed (SIGKILL)
    summary = train.run(load_params(params_file), data_root=data, out_dir=out)
    assert summary["step"] == 20 and snapshot(out) == before


def test_a_failed_first_run_without_an_earlier_one_sets_nothing_aside(tmp_path: Path, corpus: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, optimizer={"lr": 1e30})))
    tokenize.run(params, data_root=tmp_path / "data")
    with pytest.raises(TrainingError):
        train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / ".previous-run").exists()
    assert not (tmp_path / "out" / "checkpoints" / "last.pt").exists()


def test_a_non_finite_val_loss_stops_the_run_and_is_never_the_best() -> None:
    class Constant(torch.nn.Module):
        def __init__(self, value: float):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.full((5,), value))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(*x.shape, 5)

    class Batches:
        def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)

    from nanugpt.optim.losses import Loss

    validator = Validator(
        Batches(), every=10, iters=2, info=DistInfo(0, 0, 1, torch.device("cpu")), dtype="float32", loss_fn=Loss()
    )
    figures, improved = validator.validate(Constant(0.0), 10)
    assert improved and figures["loss"] == pytest.approx(math.log(5))
    with pytest.raises(TrainingError, match="val loss is nan at step 20"):
        validator.validate(Constant(math.nan), 20)
    assert validator.best_loss == pytest.approx(math.log(5))
    assert validator.state_dict() == {"best_val_loss": validator.best_loss, "val_loss": validator.best_loss}


def test_json_files_never_hold_nan_or_infinity(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"loss": math.nan, "rows": [math.inf, 1.5, -math.inf], "n": 3})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "rows": [None, 1.5, None], "n": 3}


def test_a_finished_run_writes_again_the_outputs_an_orchestrator_deleted(
    tmp_path: Path, finished: tuple[Path, Path]
) -> None:
    params_file, data = finished
    out = tmp_path / "out"
    kept = snapshot(out / "checkpoints")
    val_rows = (out / "plots" / "val.csv").read_text()
    deleted = (
        "run_info.json",
        "train_summary.json",
        "plots/train.csv",
        "checkpoints/last.json",
        "dvclive/metrics.json",
    )
    for name in (
        *deleted,
        "checkpoints/last.pt",
        "dvclive/plots/metrics/train/loss.tsv",
        "dvclive/plots/metrics/val/loss.tsv",
    ):
        (out / name).unlink()  # what Snakemake does before a forced rerun of the train rule
    summary = train.run(load_params(params_file), data_root=data, out_dir=out)
    assert summary["step"] == 20 and math.isfinite(summary["train_loss"]) and math.isfinite(summary["val_loss"])
    assert json.loads((out / "train_summary.json").read_text()) == summary
    assert json.loads((out / "run_info.json").read_text())["params"]["training"]["max_steps"] == 20
    assert (out / "plots" / "train.csv").read_text().splitlines() == ["step,tokens,train_loss,lr"]
    assert (out / "plots" / "val.csv").read_text() == val_rows
    assert snapshot(out / "checkpoints") == kept  # last.pt a link to step 20 again, last.json back
    assert json.loads((out / "dvclive" / "metrics.json").read_text())["step"] == 20
    for series in ("train", "val"):
        rows = (out / "dvclive" / "plots" / "metrics" / series / "loss.tsv").read_text().splitlines()
        assert len(rows) == 2 and rows[1].startswith("20\t"), rows


# A new run's moves over an earlier run's outputs, as the trainer makes them: set aside, write, then discard (its
# first checkpoint is saved) or restore (it failed). The child prints "go" once imported and its time at the end.
MOVES = """
import sys, time
from pathlib import Path
from nanugpt.train.previous_run import PreviousRun
out, ending = Path(sys.argv[1]), sys.argv[2]
print("go", flush=True)
start = time.monotonic()
previous = PreviousRun(out)
previous.recover()
previous.set_aside()
(out / "checkpoints").mkdir()
for i in range(300):
    (out / "checkpoints" / f"new-{i}.pt").write_text("new")
(out / "run_info.json").write_text("new")
previous.discard() if ending == "discard" else previous.restore()
print(time.monotonic() - start, flush=True)
"""


def earlier_run(out: Path) -> dict[str, bytes]:
    """An earlier run's outputs in ``out`` (enough files that deleting them takes a while); their snapshot."""
    for name in ("checkpoints", "plots", "dvclive"):
        (out / name).mkdir(parents=True)
        for i in range(400):
            (out / name / f"earlier-{i}").write_text(f"{name} {i}")
    (out / "run_info.json").write_text("earlier")
    return snapshot(out)


def moves(out: Path, ending: str, kill_after_s: float | None) -> float | None:
    """Run ``MOVES`` on ``out``, SIGKILLed ``kill_after_s`` after it is imported; its own time if it finished."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", MOVES, str(out), ending], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None and child.stdout.readline() == "go\n"
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        child.send_signal(signal.SIGKILL)
    output, _ = child.communicate(timeout=60)
    return float(output) if child.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["discard", "restore"])
def test_a_kill_at_any_moment_of_the_moves_leaves_one_whole_run(tmp_path: Path, ending: str) -> None:
    """Issue 30, case 3 and the set-aside / discard kill family: 20 SIGKILLs at random moments, each followed by the
    next run's recovery, leave the earlier run whole or (once discarding began) the new run alone; never a mix."""
    calibration = tmp_path / "calibration"
    earlier_run(calibration)
    duration = moves(calibration, ending, None)
    assert duration is not None
    rng = random.Random(30)
    outcomes = []
    for trial in range(20):
        out = tmp_path / f"trial-{trial}"
        earlier = earlier_run(out)
        moves(out, ending, rng.uniform(0, duration))
        PreviousRun(out).recover()
        after = snapshot(out)
        new = {f"checkpoints/new-{i}.pt": b"new" for i in range(300)} | {"run_info.json": b"new"}
        assert after in (earlier, new) if ending == "discard" else after == earlier, (trial, sorted(after)[:5])
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
        outcomes.append("earlier" if after == earlier else "new")
    print(ending, outcomes)
