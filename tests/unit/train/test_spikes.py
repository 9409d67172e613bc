"""Loss spikes (``training.spike``): the running check, and a planted spike (``planted_data``: every target of one
batch set to one token) rolled back, skipped or stopped at, on 1 and 2 processes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import launch_train, losses, one_process, tiny_params, write_params

from nanugpt.config.schema import SpikeParams
from nanugpt.errors import TrainingError
from nanugpt.train.spikes import RollBack, Spike, SpikeGuard

POISONED = 23  # the data step of the planted spike: the batch of step 24


def test_a_loss_above_factor_times_the_window_mean_is_a_spike_and_stays_out_of_the_window() -> None:
    guard = SpikeGuard(SpikeParams(action="stop", factor=2.0, window=3))
    assert [guard.observe(step, 10.0) for step in (1, 2, 3)] == [None] * 3  # the window fills first
    assert guard.observe(4, 19.9) is None and list(guard.recent) == [10.0, 10.0, 19.9]
    spike = guard.observe(5, 2.0 * (10.0 + 10.0 + 19.9) / 3 + 0.01)
    assert spike is not None and spike.step == 5 and list(guard.recent) == [10.0, 10.0, 19.9]
    with pytest.raises(TrainingError, match=r"loss spike at step 6: train loss 99.0000 is .* stopping"):
        guard.check_interval([(6, 99.0)], last_checkpoint=5)


def test_rollbacks_skip_the_batches_from_the_checkpoint_to_the_spike_and_are_limited() -> None:
    guard = SpikeGuard(SpikeParams(action="rollback", factor=2.0, window=1, max_rollbacks=2))
    guard.observe(1, 1.0)
    with pytest.raises(TrainingError, match="no checkpoint to roll back to yet"):
        guard.check_interval([(2, 5.0)], last_checkpoint=None)
    with pytest.raises(RollBack):
        guard.check_interval([(24, 5.0)], last_checkpoint=20)
    assert guard.record_rollback(Spike(24, 5.0, 1.0), 20)["skipped_batches"] == [20, 23]
    assert guard.data_offset == 4  # step 21 (from 1) now trains on data step 24
    assert guard.record_rollback(Spike(33, 5.0, 1.0), 30)["skipped_batches"] == [34, 36]
    assert guard.data_offset == 7
    with pytest.raises(TrainingError, match="2 rollbacks already"):
        guard.act(Spike(40, 5.0, 1.0), last_checkpoint=35)
    restored = SpikeGuard(guard.options)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict() and restored.data_offset == 7


def test_rollback_needs_checkpoints(tmp_path: Path, corpus: Path) -> None:
    from pipeline.schema import load

    params = spike_params(corpus, "rollback", [])
    params["training"]["checkpoint_every"] = 0
    with pytest.raises(Exception, match="needs checkpoints to roll back to"):
        load(write_params(tmp_path / "params.yaml", params))


def spike_params(corpus: Path, action: str, poisoned: list[int], **training: Any) -> dict[str, Any]:
    """40 steps of ``tiny_params`` logged every 5 with a checkpoint every 5, the batches ``poisoned`` planted."""
    params = tiny_params(
        corpus,
        training={
            "max_steps": 40,
            "log_every": 5,
            "checkpoint_every": 5,
            "spike": {"action": action, "factor": 1.3, "window": 10},
            **training,
        },
    )
    params["data"] = {**params["data"], "module": "planted_data:PoisonedDataOptions", "poisoned": poisoned}
    return params


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "train_summary.json").read_text())


def test_rollback_skips_the_planted_batch_and_a_rerun_repeats_it_bitwise(tmp_path: Path, corpus: Path) -> None:
    clean = one_process(tmp_path, spike_params(corpus, "rollback", []), "clean")
    spiked = one_process(tmp_path, spike_params(corpus, "rollback", [POISONED]), "spiked")
    (rollback,) = summary(tmp_path / "spiked")["spikes"]["rollbacks"]
    assert rollback["spike_step"] == POISONED + 1 and rollback["resumed_from"] == 20
    assert rollback["skipped_batches"] == [20, POISONED] and rollback["loss"] > 1.3 * rollback["window_mean"]
    assert json.loads((tmp_path / "spiked" / "run_info.json").read_text())["spikes"]["rollbacks"] == [rollback]
    # one row per step in the plots (the rolled-back steps' rows replaced), no spike in them
    with open(tmp_path / "spiked" / "plots" / "train.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(1, 41))
    assert spiked[:20] == clean[:20] and max(spiked[20:]) < rollback["loss"]
    # within noise of the clean run: the same model, trained past 4 other batches
    assert abs(summary(tmp_path / "spiked")["val_loss"] - summary(tmp_path / "clean")["val_loss"]) < 0.1
    rerun = one_process(tmp_path, spike_params(corpus, "rollback", [POISONED]), "rerun")
    assert rerun == spiked and summary(tmp_path / "rerun")["spikes"] == summary(tmp_path / "spiked")["spikes"]
    assert summary(tmp_path / "rerun")["val_loss"] == summary(tmp_path / "spiked")["val_loss"]


def test_skip_leaves_out_the_update_of_the_spiking_step(tmp_path: Path, corpus: Path) -> None:
    one_process(tmp_path, spike_params(corpus, "skip", [POISONED]), "skipped")
    assert summary(tmp_path / "skipped")["spikes"] == {"rollbacks": [], "skipped_updates": [POISONED + 1]}
    clean = one_process(tmp_path, spike_params(corpus, "none", []), "clean")
    assert math.isclose(summary(tmp_path / "skipped")["val_loss"], summary(tmp_path / "clean")["val_loss"], abs_tol=0.1)
    assert clean[:23] == losses(tmp_path / "skipped")[:23]


def test_stop_ends_the_run_at_the_spike_with_its_checkpoint_before_it(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(TrainingError, match=f"loss spike at step {POISONED + 1}: .*training.spike.action: stop"):
        one_process(tmp_path, spike_params(corpus, "stop", [POISONED]), "stopped")
    marker = json.loads((tmp_path / "stopped" / "checkpoints" / "last.json").read_text())
    assert marker["step"] == 20


@pytest.mark.slow
def test_two_processes_roll_back_at_the_same_step_as_one(tmp_path: Path, corpus: Path) -> None:
    params = spike_params(corpus, "rollback", [POISONED])
    one = one_process(tmp_path, params, "one")  # tokenizes too
    params_file = write_params(tmp_path / "two.yaml", {**params, "launch": {"nproc_per_node": 2}})
    result = launch_train(params_file, tmp_path / "data", tmp_path / "two")  # planted_data: on every rank's path
    assert "rolled back to the checkpoint of step 20" in result.stdout
    assert summary(tmp_path / "two")["spikes"]["rollbacks"][0]["skipped_batches"] == [20, POISONED]
    assert [r["spike_step"] for r in summary(tmp_path / "two")["spikes"]["rollbacks"]] == [POISONED + 1]
    assert losses(tmp_path / "two") == pytest.approx(one, rel=1e-4)  # the same global batches, summed apart
