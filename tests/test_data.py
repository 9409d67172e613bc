"""The token-file loader: determinism, independent rows, per-rank slices, resumable state, checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nanugpt.data import BatchSource, DataError, TokenFile


def make_split(tmp_path: Path, n: int, dtype: str = "uint16") -> tuple[TokenFile, dict]:
    tokens = (np.arange(n) % 60000).astype(np.dtype(dtype).newbyteorder("<"))
    tokens.tofile(tmp_path / "train.bin")
    meta = {"dtype": dtype, "train_tokens": n}
    return TokenFile(tmp_path / "train.bin", meta, "train"), meta


def test_windows_are_contiguous_targets_shifted(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    source = BatchSource(file, context_length=8, rows=4, global_rows=4, seed=1, split="train")
    x, y = source.micro_batch(step=0, micro_step=0)
    assert x.shape == (4, 8) and y.shape == (4, 8)
    assert (y[:, :-1] == x[:, 1:]).all()
    assert ((x[:, 1:] - x[:, :-1]) == 1).all()  # consecutive tokens of the file


def test_same_step_same_batch_and_steps_differ(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    a = BatchSource(file, 8, 4, 4, seed=1, split="train")
    b = BatchSource(file, 8, 4, 4, seed=1, split="train")  # a "resumed" loader: state is (seed, step)
    assert (a.micro_batch(5, 0)[0] == b.micro_batch(5, 0)[0]).all()
    assert not (a.micro_batch(5, 0)[0] == a.micro_batch(6, 0)[0]).all()
    other_seed = BatchSource(file, 8, 4, 4, seed=2, split="train")
    assert not (a.micro_batch(5, 0)[0] == other_seed.micro_batch(5, 0)[0]).all()


def test_rows_are_independent_windows(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 50_000)
    offsets = BatchSource(file, 8, 64, 64, seed=3, split="train").offsets(0)
    gaps = np.diff(offsets)
    assert len(set(offsets.tolist())) > 60
    assert not (np.abs(gaps) == 9).all()  # not neighbouring slices of one long window


def test_ranks_take_distinct_slices_of_the_same_global_batch(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    single = BatchSource(file, 8, rows=2, global_rows=8, seed=1, split="train")
    ranks = [BatchSource(file, 8, rows=2, global_rows=8, seed=1, split="train", rank=r, world_size=2) for r in range(2)]
    assert single.micro_steps == 4 and ranks[0].micro_steps == 2
    one_process = [single.micro_batch(3, m)[0] for m in range(4)]
    two_processes = [ranks[r].micro_batch(3, m)[0] for m in range(2) for r in range(2)]
    assert all((a == b).all() for a, b in zip(one_process, two_processes))
    assert not (ranks[0].micro_batch(3, 0)[0] == ranks[1].micro_batch(3, 0)[0]).all()


def test_uint32_tokens(tmp_path: Path) -> None:
    tokens = np.array([70_000, 70_001, 70_002, 70_003] * 10, dtype="<u4")
    tokens.tofile(tmp_path / "train.bin")
    file = TokenFile(tmp_path / "train.bin", {"dtype": "uint32", "train_tokens": 40}, "train")
    x, _ = BatchSource(file, 4, 1, 1, seed=0, split="train").micro_batch(0, 0)
    assert x.min() >= 70_000


def test_truncated_file_is_detected(tmp_path: Path) -> None:
    _, meta = make_split(tmp_path, 1000)
    with open(tmp_path / "train.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match="truncated or from another run"):
        TokenFile(tmp_path / "train.bin", meta, "train")


def test_dtype_disagreeing_with_meta_is_detected(tmp_path: Path) -> None:
    make_split(tmp_path, 1000, dtype="uint32")
    with pytest.raises(DataError, match="meta.json says 1000 uint16 tokens"):
        TokenFile(tmp_path / "train.bin", {"dtype": "uint16", "train_tokens": 1000}, "train")


def test_context_longer_than_data(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 50)
    with pytest.raises(DataError, match="fewer than model.context_length"):
        BatchSource(file, context_length=64, rows=1, global_rows=1, seed=0, split="train")
