"""``hf_dataset``: a Hugging Face dataset tokenized on the fly, addressed by step like the token files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_TEXT, tiny_params

from nanugpt.params import validate_params
from stages import evaluate, tokenize, train

pytest.importorskip("datasets")


def hf_params(tmp_path: Path, **training: int):
    lines = TINY_TEXT.splitlines(keepends=True)
    (tmp_path / "train.txt").write_text("".join(lines[: len(lines) * 9 // 10]))
    (tmp_path / "val.txt").write_text("".join(lines[len(lines) * 9 // 10 :]))
    tree = tiny_params("unused", training=training, tokenizer={"module": "byte"})
    tree["data"] = {
        "module": "hf_dataset",
        "dataset": "tiny_stream",
        "name": "text",
        "data_files": {"train": [str(tmp_path / "train.txt")], "validation": [str(tmp_path / "val.txt")]},
    }
    return validate_params(tree, "test")


def test_rows_are_consecutive_pieces_of_the_token_stream(tmp_path: Path) -> None:
    params = hf_params(tmp_path)
    meta = tokenize.run(params, data_root=tmp_path / "data")
    data_dir = tmp_path / "data" / "tiny_stream" / "byte"
    assert json.loads((data_dir / "meta.json").read_text())["vocab_size"] == 257 and meta["streamed"]
    source = params.data.batches(data_dir, meta, "train", 16, 4, 8, seed=0)
    stream = [i for line in (tmp_path / "train.txt").read_text().splitlines() for i in (*line.encode(), 256)]
    x, y = source.micro_batch(step=1, micro_step=1)  # rows 12..15 of the stream
    assert x[0].tolist() == stream[12 * 17 : 12 * 17 + 16] and y[0].tolist() == stream[12 * 17 + 1 : 13 * 17]
    fresh = params.data.batches(data_dir, meta, "train", 16, 4, 8, seed=0)  # a resumed run: same rows
    assert (fresh.micro_batch(1, 1)[0] == x).all() and (source.micro_batch(0, 0)[0] == fresh.micro_batch(0, 0)[0]).all()
    ranks = [params.data.batches(data_dir, meta, "train", 16, 2, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    assert (ranks[1].micro_batch(1, 0)[0] == source.micro_batch(1, 0)[0][2:]).all()


def test_trains_and_evaluates_through_the_stages(tmp_path: Path) -> None:
    params = hf_params(tmp_path, max_steps=10)
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    metrics = evaluate.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert summary["step"] == 10 and metrics["val_loss"] > 0
