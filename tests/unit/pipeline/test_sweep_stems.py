"""Warmup-stable-decay branches: which points share a stable phase, and a branch equals the straight run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml
from helpers import tiny_params, write_params

from pipeline.schema import load
from pipeline.sweep.spec import earlier_runs, expand, write_params_files
from stages import tokenize, train

WSD = {"module": "constant", "warmup_steps": 2, "cooldown_steps": 4}


def sweep_file(folder: Path, corpus: Path, grid: dict[str, list[Any]], scheduler: dict[str, Any] = WSD) -> Path:
    write_params(folder / "base.yaml", tiny_params(corpus, scheduler=scheduler))
    path = folder / "wsd.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": grid}))
    return path


def losses(folder: Path) -> dict[int, float]:
    with open(folder / "plots" / "train.csv") as f:
        return {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(f)}


def test_budgets_and_cooldowns_of_one_setting_share_the_steps_before_the_first_decay(
    tmp_path: Path, corpus: Path
) -> None:
    sweep = expand(sweep_file(tmp_path, corpus, {"training.max_steps": [12, 16], "scheduler.cooldown_steps": [2, 4]}))
    (stem,) = sweep.stems
    assert stem.steps == 8 and stem.members == tuple(point.name for point in sweep.points)  # 12 - 4
    assert stem.tree["training"]["max_steps"] == 8 and stem.tree["scheduler"]["cooldown_steps"] == 0
    other_lr = expand(sweep_file(tmp_path, corpus, {"training.max_steps": [12, 16], "optimizer.lr": [1e-3, 3e-3]}))
    assert [s.members for s in other_lr.stems] == [
        ("lr=0.001,max_steps=12", "lr=0.001,max_steps=16"),
        ("lr=0.003,max_steps=12", "lr=0.003,max_steps=16"),
    ]
    cosine = expand(sweep_file(tmp_path, corpus, {"training.max_steps": [12, 16]}, {"module": "cosine"}))
    assert cosine.stems == ()  # its lr at a step depends on the budget


def test_each_branch_continues_the_stem_and_equals_its_straight_run(tmp_path: Path, corpus: Path) -> None:
    sweep = expand(sweep_file(tmp_path, corpus, {"training.max_steps": [12, 16]}, {**WSD, "cooldown_steps": 3}))
    out = tmp_path / "out"
    write_params_files(sweep, out, tmp_path / "tokenize")
    (stem,) = sweep.stems
    assert stem.steps == 9
    stem_params = load(stem.folder(out) / "params.yaml")
    data = tmp_path / "data"
    tokenize.run(stem_params, data_root=data)
    train.run(stem_params, data_root=data, out_dir=stem.folder(out))
    for point in sweep.points:
        assert earlier_runs(point, sweep, out) == [stem.folder(out)]
        branch = load(out / point.name / "params.yaml")
        assert branch.training.resume == str(stem.folder(out) / "model" / "last.pt")
        summary = train.run(branch, data_root=data, out_dir=out / point.name)
        straight = train.run(point.params, data_root=data, out_dir=tmp_path / "straight" / point.name)
        stitched = losses(stem.folder(out)) | losses(out / point.name)
        assert stitched == losses(tmp_path / "straight" / point.name)  # bitwise, float32 on CPU
        assert summary["val_loss"] == straight["val_loss"]
