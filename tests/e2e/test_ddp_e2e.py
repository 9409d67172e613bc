"""DDP under the real torchrun (gloo on CPU): two processes train like one, and only rank 0 writes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers import launch_train, tiny_params, write_params

from pipeline.schema import load
from stages import tokenize, train


def losses(out_dir: Path) -> list[float]:
    with open(out_dir / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, corpus: Path) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        tiny_params(corpus, training={"device_batch_size": 2, "global_batch_size": 8}, launch={"nproc_per_node": 2}),
    )
    params = load(params_file)
    tokenize.run(params, data_root=tmp_path / "data")
    single = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "one")

    result = launch_train(params_file, tmp_path / "data", tmp_path / "two")
    assert "--standalone --nproc-per-node=2" in result.stdout
    assert "on 2 x cpu, 2 micro-steps of 2 x 16 tokens per process" in result.stdout
    assert result.stdout.count("done: 20 steps") == 1  # only rank 0 logs

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 20
    # The same global batches in the same order: only float summation order differs (micro-batch
    # split and the gloo all-reduce), about 1e-7 relative per step, growing slowly over 20 steps.
    print("max relative difference", max(abs(a - b) / abs(a) for a, b in zip(one, two)))
    assert two == pytest.approx(one, rel=1e-4)
    # the same outputs; logs/ apart: the command line also appends its console to logs/train.log (train.run, called
    # directly, does not), beside the checkpoint log both write
    assert sorted(p.name for p in (tmp_path / "two").rglob("*") if p.is_file() and p.parent.name != "logs") == sorted(
        p.name for p in (tmp_path / "one").rglob("*") if p.is_file() and p.parent.name != "logs"
    )
    assert (tmp_path / "two" / "logs" / "checkpoints.jsonl").is_file() and (tmp_path / "one" / "logs").is_dir()
    assert single["step"] == 20
