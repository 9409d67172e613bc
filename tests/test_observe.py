"""Watching a run (issue 20): one set of metric names for every sink, read at log intervals only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import tiny_params, write_params

from nanugpt.params import load_params
from nanugpt.sinks import format_log_line
from nanugpt.train import train
from stages import tokenize

EVERY_INTERVAL = {
    "train/grad_norm",
    "train/weight_norm",
    "train/tokens_per_s",
    "train/mfu",
    "train/step_time_s",
    "train/mem_gb",
    "time/elapsed_s",
    "time/eta_s",
}
EVERY_STEP = {"train/loss", "train/lr", "train/tokens"}
EVERY_EVAL = {"val/loss", "val/ppl", "val/best_loss"}


class RecordingSink:
    """Keeps what it is sent."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, float]] = {}
        self.closed = False

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        assert step not in self.rows, f"step {step} written twice"
        self.rows[step] = dict(metrics)

    def close(self) -> None:
        self.closed = True


def recorded_run(tmp_path: Path, corpus: Path, **sections) -> RecordingSink:
    sections.setdefault("training", {})["peak_flops"] = 1e12  # so that train/mfu is there on any CPU
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, **sections)))
    tokenize.run(params, data_root=tmp_path / "data")
    sink = RecordingSink()
    train(params, tmp_path / "data" / "tiny" / "char", tmp_path / "out", sinks=[sink])
    return sink


def test_every_metric_name_at_its_interval(tmp_path: Path, corpus: Path) -> None:
    sink = recorded_run(tmp_path, corpus, eval={"eval_every": 10, "eval_iters": 2})
    assert sink.closed and sorted(sink.rows) == list(range(1, 21))
    for step, metrics in sink.rows.items():
        expected = EVERY_STEP | (EVERY_INTERVAL if step % 5 == 0 else set()) | (EVERY_EVAL if step % 10 == 0 else set())
        assert set(metrics) == expected, step  # AdamW's two groups share one lr: no train/lr/<group>
    last = sink.rows[20]
    assert last["train/weight_norm"] > 0 and last["train/grad_norm"] > 0 and last["train/step_time_s"] > 0
    assert 0.01 < last["train/mem_gb"] < 100  # the process's resident memory on CPU
    assert last["val/ppl"] == pytest.approx(math.exp(last["val/loss"]))
    assert last["val/best_loss"] == min(sink.rows[10]["val/loss"], last["val/loss"])


def test_lr_per_parameter_group_where_they_differ(tmp_path: Path, corpus: Path) -> None:
    optimizer = {"module": "muon", "lr": 0.02, "adamw_lr": 3e-3, "embed_lr": 1e-2}
    sink = recorded_run(tmp_path, corpus, optimizer=optimizer, training={"max_steps": 10})
    groups = {name: lr for name, lr in sink.rows[10].items() if name.startswith("train/lr/")}
    assert list(groups)[0] == "train/lr/0_muon" and len(groups) >= 3, groups
    factor = sink.rows[10]["train/lr"] / 0.02  # the schedule's factor at step 10
    assert sorted(set(groups.values())) == pytest.approx(sorted({0.02 * factor, 3e-3 * factor, 1e-2 * factor}))
    assert not any(name.startswith("train/lr/") for name in sink.rows[9])  # log intervals only


def test_console_line_has_memory() -> None:
    line = format_log_line(10, 20, 2.5, None, 1e-3, 0.5, 1000, None, 5, 5, mem_gb=1.234)
    assert (
        line
        == "step 10/20 | loss 2.5000 | lr 1.00e-03 | grad 0.500 | 1,000 tok/s | mem 1.23 GB | elapsed 0:05 | ETA 0:05"
    )
