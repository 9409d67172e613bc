"""Time-based checkpoints (``training.checkpoint_every_min``): taken when the minutes pass and not before, with a
clock the test drives; every rank saves at the same step even when the ranks' clocks disagree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_params, write_params
from time_checkpoint_worker import RecordingTrainer, StepClock

from nanugpt.config.params import ParamsError, load_params
from nanugpt.distributed.process_group import DistInfo, process_group
from nanugpt.train.checkpointer import Checkpointer
from pipeline import paths
from stages import tokenize

TIMED = {"max_steps": 14, "checkpoint_every": 0, "checkpoint_every_min": 0.1, "log_every": 5}  # 6 s
ONE = DistInfo(0, 0, 1, torch.device("cpu"))
_LAYER = torch.nn.Linear(2, 2)
_OPTIMIZER = torch.optim.SGD(_LAYER.parameters(), lr=0.1)  # _LAYER and _OPTIMIZER: what a Checkpointer saves states of


class ManualClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_due_when_the_minutes_pass_not_before(tmp_path: Path, corpus: Path) -> None:
    params = load_params(write_params(tmp_path / "p.yaml", tiny_params(corpus, training={"checkpoint_every_min": 2})))
    clock = ManualClock()
    checkpointer = Checkpointer(
        tmp_path / "ckpt", params, ONE, log=print, model=_LAYER, optimizer=_OPTIMIZER, clock=clock
    )
    clock.now = 119.9
    assert not checkpointer.time_due()
    assert not checkpointer.should_save(3, final=False, stopping=False, time_due=checkpointer.time_due())
    clock.now = 120.0
    assert checkpointer.time_due() and checkpointer.should_save(3, final=False, stopping=False, time_due=True)
    checkpointer.save(3, {"step": 3})  # the next two minutes start at the save
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    clock.now = 239.9
    assert not checkpointer.time_due()
    clock.now = 240.0
    assert checkpointer.time_due()


def test_zero_minutes_is_off(tmp_path: Path, corpus: Path) -> None:
    params = load_params(write_params(tmp_path / "p.yaml", tiny_params(corpus)))
    assert params.training.checkpoint_every_min == 0
    clock = ManualClock()
    checkpointer = Checkpointer(
        tmp_path / "ckpt", params, ONE, log=print, model=_LAYER, optimizer=_OPTIMIZER, clock=clock
    )
    clock.now = 1e9
    assert not checkpointer.time_due()


def test_negative_minutes_are_refused_at_load_time(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "p.yaml", tiny_params(corpus, training={"checkpoint_every_min": -5}))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert f"{path}: training.checkpoint_every_min: input should be greater than or equal to 0, got -5" in str(
        caught.value
    )


def test_training_saves_when_the_minutes_pass(tmp_path: Path, corpus: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, training=TIMED)))
    tokenize.run(params, data_root=tmp_path / "data")
    with process_group("cpu") as info:
        trainer = RecordingTrainer(
            params,
            paths.tokenized_dir(params, tmp_path / "data"),
            tmp_path / "out",
            info=info,
            launch_command=None,
            clock=StepClock(1.0),
        )
        trainer.run()
    # one reading per step and one per save: 6 s pass at step 6, then 6 s more after the save at step 12
    assert trainer.saved == [6, 12, 14]
    files = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("step-*.pt"))
    assert files == ["step-0000006.pt", "step-0000012.pt", "step-0000014.pt"]


@pytest.mark.slow
def test_ranks_with_different_clocks_save_at_the_same_steps(tmp_path: Path, corpus: Path) -> None:
    tree = tiny_params(corpus, training={**TIMED, "device_batch_size": 2, "global_batch_size": 8})
    params_file = write_params(tmp_path / "params.yaml", tree)
    params = load_params(params_file)
    tokenize.run(params, data_root=tmp_path / "data")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += [str(REPO / "tests" / "time_checkpoint_worker.py"), str(params_file)]
    command += [str(paths.tokenized_dir(params, tmp_path / "data")), str(out), "--rates", "1", "1.5"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = [json.loads((out / f"saved-rank{rank}.json").read_text()) for rank in (0, 1)]
    # alone, rank 0's clock (1 s a reading) would save at 6, 12 and rank 1's (1.5 s) at 4, 8, 12: the faster
    # clock decides for both, and both restart their minutes at each save
    assert saved[0] == saved[1] == [4, 8, 12, 14]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*.pt"))[:2] == ["step-0000004.pt", "step-0000008.pt"]
