"""DDP under the real torchrun (gloo on CPU): two processes train like one, only rank 0 writes, and two processes
share out the global batches of one, from a mixture too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import BYTE_EOT, DIGITS_TEXT, launch_train, mixture_data, tiny_params, write_params

from pipeline import batch_at
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


def consumed(record: Path) -> dict[int, dict[int, list[list[int]]]]:
    """Step (from 1) -> micro-step -> the rows a rank consumed (``planted_data``'s record)."""
    steps: dict[int, dict[int, list[list[int]]]] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        steps.setdefault(entry["step"] + 1, {})[entry["micro_step"]] = entry["inputs"]
    return steps


@pytest.mark.slow
def test_two_processes_consume_the_global_batches_of_one_from_a_mixture(tmp_path: Path, corpus: Path) -> None:
    digits = tmp_path / "digits.txt"
    digits.write_text(DIGITS_TEXT)
    data = mixture_data(corpus, digits) | {"module": "planted_data:RecordedMixtureOptions"}
    training = {"max_steps": 3, "device_batch_size": 2, "global_batch_size": 8, "checkpoint_every": 0}
    params = tiny_params(corpus, tokenizer=BYTE_EOT, training=training, launch={"nproc_per_node": 2})
    params_file = write_params(tmp_path / "params.yaml", params | {"data": data | {"record_to": str(tmp_path / "r")}})
    tokenize.run(load(params_file), data_root=tmp_path / "data")
    launch_train(params_file, tmp_path / "data", tmp_path / "two")
    records = {rank: consumed(tmp_path / f"r-rank{rank}.jsonl") for rank in range(2)}

    plain = load(write_params(tmp_path / "plain.yaml", params | {"data": mixture_data(corpus, digits)}))
    data_dir = tmp_path / "data" / "mix" / "byte"
    for step in (1, 2, 3):
        rows = batch_at.batch_rows(plain, data_dir, step, world_size=1)  # one process's global batch
        # the global batch's rows, micro-batch by micro-batch: rank 0's first, rank 1's first, rank 0's second, ...
        shared = [records[rank][step][micro] for micro in range(2) for rank in range(2)]
        assert [row for micro in shared for row in micro] == [r["inputs"] for r in rows], step
        assert {r["file"].split("/")[0] for r in rows} == {"letters", "digits"}
