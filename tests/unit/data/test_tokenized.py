"""The token-file loader: determinism, independent rows, per-rank slices, resumable state, checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.tokenized import BatchSource, DataError, TokenFile, TokenizedDataOptions


def meta_of(n: int, dtype: str = "uint16", vocab_size: int = 60_000, **counts: int) -> TokenMeta:
    return TokenMeta(tokenizer={"module": "byte"}, vocab_size=vocab_size, dtype=dtype, train_tokens=n, **counts)


def make_split(tmp_path: Path, n: int, dtype: str = "uint16") -> tuple[TokenFile, TokenMeta]:
    tokens = (np.arange(n) % 60000).astype(np.dtype(dtype).newbyteorder("<"))
    tokens.tofile(tmp_path / "train.bin")
    meta = meta_of(n, dtype)
    return TokenFile(tmp_path / "train.bin", meta, "train"), meta


def test_windows_are_contiguous_targets_shifted(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    source = BatchSource(file, context_length=8, share=BatchShare(4, 4), seed=1, split="train")
    x, y = source.micro_batch(step=0, micro_step=0)
    assert x.shape == (4, 8) and y.shape == (4, 8)
    assert (y[:, :-1] == x[:, 1:]).all()
    assert ((x[:, 1:] - x[:, :-1]) == 1).all()  # consecutive tokens of the file


def test_same_step_same_batch_and_steps_differ(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    a = BatchSource(file, 8, share=BatchShare(4, 4), seed=1, split="train")
    b = BatchSource(file, 8, share=BatchShare(4, 4), seed=1, split="train")  # a "resumed" loader: state is (seed, step)
    assert (a.micro_batch(5, 0)[0] == b.micro_batch(5, 0)[0]).all()
    assert not (a.micro_batch(5, 0)[0] == a.micro_batch(6, 0)[0]).all()
    other_seed = BatchSource(file, 8, share=BatchShare(4, 4), seed=2, split="train")
    assert not (a.micro_batch(5, 0)[0] == other_seed.micro_batch(5, 0)[0]).all()


def test_rows_are_independent_windows(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 50_000)
    offsets = BatchSource(file, 8, share=BatchShare(64, 64), seed=3, split="train").offsets(0)
    gaps = np.diff(offsets)
    assert len(set(offsets.tolist())) > 60
    assert not (np.abs(gaps) == 9).all()  # not neighbouring slices of one long window


def test_ranks_take_distinct_slices_of_the_same_global_batch(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 10_000)
    single = BatchSource(file, 8, share=BatchShare(2, 8), seed=1, split="train")
    ranks = [BatchSource(file, 8, share=BatchShare(2, 8, r, 2), seed=1, split="train") for r in range(2)]
    assert single.share.micro_steps == 4 and ranks[0].share.micro_steps == 2
    one_process = [single.micro_batch(3, m)[0] for m in range(4)]
    two_processes = [ranks[r].micro_batch(3, m)[0] for m in range(2) for r in range(2)]
    assert all((a == b).all() for a, b in zip(one_process, two_processes))
    assert not (ranks[0].micro_batch(3, 0)[0] == ranks[1].micro_batch(3, 0)[0]).all()


def epoch_targets(source: BatchSource, steps: range) -> np.ndarray:
    """Token positions predicted by the rows of ``steps`` (one row per target), in order."""
    offsets = np.concatenate([source.offsets(step) for step in steps])
    return (offsets[:, None] + 1 + np.arange(source.context_length)).ravel()


def test_epochs_predict_every_token_once_per_pass(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 1003)  # 1002 targets: 125 windows of 8 per epoch, max shift 2
    source = BatchSource(file, 8, share=BatchShare(5, 5), seed=1, split="train", sampling="epochs")
    assert (source.windows_per_epoch, source.max_shift) == (125, 2)
    first, second = epoch_targets(source, range(25)), epoch_targets(source, range(25, 50))  # 125 rows each
    for targets in (first, second):
        assert len(np.unique(targets)) == 1000 and targets.min() >= 1 and targets.max() <= 1002
        assert (np.sort(targets)[1:] - np.sort(targets)[:-1] == 1).all()  # one block of consecutive tokens
    assert not (first == second).all()  # a new order (and shift) every pass


def test_epoch_boundary_inside_a_step_and_resumed_loaders(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 1003)
    source = BatchSource(file, 8, share=BatchShare(4, 8), seed=1, split="train", sampling="epochs")  # 125 = 15 * 8 + 5
    straddling = epoch_targets(source, range(15, 16))  # 5 rows of epoch 0, 3 of epoch 1
    whole = np.concatenate([epoch_targets(source, range(15)), straddling[: 5 * 8]])
    assert len(np.unique(whole)) == 1000  # epoch 0 completed by the first 5 rows
    fresh = BatchSource(file, 8, share=BatchShare(4, 8), seed=1, split="train", sampling="epochs")
    assert (fresh.micro_batch(15, 1)[0] == source.micro_batch(15, 1)[0]).all()  # a pure function of the step
    assert (fresh.micro_batch(3, 0)[0] == source.micro_batch(3, 0)[0]).all()


def test_val_batches_are_random_whatever_the_train_sampling(tmp_path: Path) -> None:
    make_split(tmp_path, 10_000)
    shutil.copy(tmp_path / "train.bin", tmp_path / "val.bin")
    meta = meta_of(10_000, val_tokens=10_000)
    opts = TokenizedDataOptions(module="tokenized", dataset="d", sampling="epochs", verify="size")
    sources = {
        split: opts.batches(tmp_path, meta, split, context_length=8, share=BatchShare(4, 4), seed=1)
        for split in ("train", "val")
    }
    assert sources["train"].sampling == "epochs" and sources["val"].sampling == "random"


def test_uint32_tokens(tmp_path: Path) -> None:
    tokens = np.array([70_000, 70_001, 70_002, 70_003] * 10, dtype="<u4")
    tokens.tofile(tmp_path / "train.bin")
    file = TokenFile(tmp_path / "train.bin", meta_of(40, "uint32", vocab_size=70_004), "train")
    x, _ = BatchSource(file, 4, share=BatchShare(1, 1), seed=0, split="train").micro_batch(0, 0)
    assert x.min() >= 70_000


def test_context_longer_than_data(tmp_path: Path) -> None:
    file, _ = make_split(tmp_path, 50)
    with pytest.raises(DataError, match="fewer than model.context_length"):
        BatchSource(file, context_length=64, share=BatchShare(1, 1), seed=0, split="train")
