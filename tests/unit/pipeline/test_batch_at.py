"""``python -m pipeline.batch_at``: the rows of a step's global batch are the tokens training consumed (recorded by
``planted_data``), at the first steps, after a resume and after a spike's rollback, for 1 and 2 ranks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import one_process, tiny_params, write_params

from nanugpt.checkpoint import store
from pipeline import batch_at
from pipeline.schema import load


def recorded_params(corpus: Path, record_to: Path, **training: Any) -> dict[str, Any]:
    params = tiny_params(corpus, training={"max_steps": 6, "checkpoint_every": 2, "log_every": 1, **training})
    params["data"] = {**params["data"], "module": "planted_data:RecordedDataOptions", "record_to": str(record_to)}
    return params


def consumed(record: Path) -> dict[int, list[list[int]]]:
    """Step (from 1) -> the rows training consumed at it, in micro-step order; a step run again (after a resume)
    keeps its last consumption."""
    steps: dict[int, dict[int, list[list[int]]]] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        steps.setdefault(entry["step"] + 1, {})[entry["micro_step"]] = entry["inputs"]
    return {step: [row for micro in sorted(by) for row in by[micro]] for step, by in steps.items()}


def test_batch_at_gives_the_rows_training_consumed(tmp_path: Path, corpus: Path, capsys, monkeypatch) -> None:
    params = recorded_params(corpus, tmp_path / "record")
    one_process(tmp_path, params, "out")
    folder = tmp_path / "out" / "checkpoints"  # killed after step 4's checkpoint was written: resumed at 4
    (folder / "step-0000006.pt").unlink()
    store.point_last_at(folder, folder / "step-0000004.pt")
    one_process(tmp_path, params, "out")
    record = consumed(tmp_path / "record-rank0.jsonl")
    plain = {**params, "data": {**tiny_params(corpus)["data"]}}  # the same token files, read as a user's run does
    loaded = load(write_params(tmp_path / "q.yaml", plain))
    data_dir = tmp_path / "data" / "tiny" / "char"
    for step in (1, 2, 5):  # the first two, and one after the resume
        rows = batch_at.batch_rows(loaded, data_dir, step, 1)
        assert [r["inputs"] for r in rows] == record[step], step
        assert all(isinstance(r["offset"], int) for r in rows)
        two = batch_at.batch_rows(loaded, data_dir, step, 2)  # 2 ranks: the same global batch, shared out
        by_position = sorted(two, key=lambda r: (r["micro_step"] * 2 + r["rank"], r["row"]))
        assert [r["inputs"] for r in by_position] == record[step], step
    # the command line, as a user runs it (its text is the decoded inputs)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    capsys.readouterr()  # the training's lines
    code = batch_at.main(["2", str(tmp_path / "q.yaml"), "--json", "--out", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["inputs"] for r in printed["rows"]] == record[2] and printed["data_offset"] == 0
    tokens = (data_dir / "train.bin").read_bytes()
    first = printed["rows"][0]
    assert first["text"] and len(tokens) > first["offset"]


def test_batch_at_follows_a_rollback(tmp_path: Path, corpus: Path) -> None:
    params = recorded_params(corpus, tmp_path / "record")
    params["training"] = {**params["training"], "max_steps": 40, "log_every": 5, "checkpoint_every": 5}
    params["training"]["spike"] = {"action": "rollback", "factor": 1.3, "window": 10}
    params["data"]["module"] = "planted_data:PoisonedDataOptions"  # the rollback, planted: data step 23
    params["data"]["poisoned"] = [23]
    params["data"].pop("record_to")
    one_process(tmp_path, params, "out")
    out = tmp_path / "out"
    assert batch_at.data_offset(20, out) == 0 and batch_at.data_offset(21, out) == 4
    loaded = load(write_params(tmp_path / "q.yaml", params))
    data_dir = tmp_path / "data" / "tiny" / "char"
    after = batch_at.batch_rows(loaded, data_dir, 21, 1, batch_at.data_offset(21, out))
    assert [r["inputs"] for r in after] == [r["inputs"] for r in batch_at.batch_rows(loaded, data_dir, 25, 1)]
