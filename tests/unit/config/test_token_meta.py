"""meta.json: one typed model, written by every data component and checked against itself when read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_params, write_params

from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import DataError, TokenMeta, read_meta
from nanugpt.data.tokenize import tokenize_files
from nanugpt.data.tokenized import BatchSource, TokenFile
from nanugpt.data.tokenizers.char import CharTokenizerOptions
from nanugpt.files.checksum import checksum_path
from stages import train


@pytest.fixture
def tokenized(tmp_path: Path, corpus: Path) -> Path:
    """A char-tokenized copy of the tiny corpus; returns its folder."""
    tokenize_files([corpus], CharTokenizerOptions(module="char"), tmp_path / "tok", 0.1)
    return tmp_path / "tok"


def edit_meta(folder: Path, **changes: object) -> Path:
    """``meta.json`` rewritten with ``changes`` as by hand (or by a version before checksums): no checksum."""
    path = folder / "meta.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))
    checksum_path(path).unlink()
    return path


def one_line_error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        read_meta(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / "meta.json"))
    assert message.endswith("re-run the tokenize stage (python -m stages.tokenize)")
    return message


def test_written_and_read_back_the_same(tokenized: Path) -> None:
    meta = read_meta(tokenized)
    assert isinstance(meta, TokenMeta) and meta.dtype == "uint16" and meta.vocab_size == len(meta.vocab or [])
    assert meta.split_tokens("train") == (tokenized / "train.bin").stat().st_size // 2


def test_invalid_json_is_one_line(tokenized: Path) -> None:
    (tokenized / "meta.json").write_text('{"vocab_size": 65,')
    assert "damaged: 18 bytes where meta.json.sha256 says" in one_line_error(tokenized)
    checksum_path(tokenized / "meta.json").unlink()
    assert "not valid JSON" in one_line_error(tokenized)


def test_a_meta_json_changed_after_it_was_written_fails_its_checksum(tokenized: Path) -> None:
    """Issue 30: every meta.json carries a checksum, checked whenever it is read."""
    text = (tokenized / "meta.json").read_text()
    (tokenized / "meta.json").write_text(text.replace('"source_bytes": ', '"source_bytes": 1'))
    assert "meta.json: damaged: " in one_line_error(tokenized)


@pytest.mark.parametrize(
    "value, phrase",
    [
        ("65", "vocab_size: input should be a valid integer, got '65'"),
        (65.5, "vocab_size: input should be a valid integer, got 65.5"),
        (None, "vocab_size: field required"),
    ],
)
def test_vocab_size_must_be_an_integer(tokenized: Path, value: object, phrase: str) -> None:
    edit_meta(tokenized, vocab_size=value)
    assert phrase in one_line_error(tokenized)


def test_vocab_size_must_match_its_own_vocabulary(tokenized: Path) -> None:
    entries = read_meta(tokenized).vocab_size
    edit_meta(tokenized, vocab_size=50)
    assert f"vocab_size is 50 but its vocab has {entries} entries" in one_line_error(tokenized)


def test_token_counts_must_match_the_file_sizes(tokenized: Path) -> None:
    with open(tokenized / "val.bin", "r+b") as f:
        f.truncate(10)
    assert "but val.bin has 10 bytes" in one_line_error(tokenized)


def test_dtype_disagreeing_with_the_files_is_detected(tokenized: Path) -> None:
    edit_meta(tokenized, dtype="uint32")
    assert "train_tokens is" in one_line_error(tokenized)


def test_out_of_range_ids_under_verify_size_are_one_line(
    tmp_path: Path, corpus: Path, tokenized: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    ids = np.fromfile(tokenized / "train.bin", dtype="<u2")
    ids[::7] = 60_000  # corrupt, but the size is right
    ids.tofile(tokenized / "train.bin")
    meta = read_meta(tokenized)  # verify: size reads no token
    source = BatchSource(
        TokenFile(tokenized / "train.bin", meta, "train"), 16, share=BatchShare(4, 4), seed=0, split="train"
    )
    with pytest.raises(DataError, match=f"token id 60000 is >= vocab_size {meta.vocab_size} of meta.json"):
        source.micro_batch(0, 0)

    data_root = tmp_path / "data"
    (data_root / "tiny").mkdir(parents=True)
    tokenized.rename(data_root / "tiny" / "char")
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, data={"verify": "size"}))
    monkeypatch.setenv("DATA_ROOT", str(data_root))
    monkeypatch.setenv("OUT_DIR", str(tmp_path / "out"))
    assert train.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is >= vocab_size" in err


def test_val_fraction_zero_is_refused(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, data={"val_fraction": 0}))
    with pytest.raises(ParamsError, match="data.val_fraction: must be > 0: training evaluates the val split"):
        load_params(path)


@pytest.mark.parametrize("rows, global_rows, rank, world_size", [(0, 4, 0, 1), (3, 8, 0, 1), (2, 8, 2, 2)])
def test_a_batch_share_must_divide_the_global_batch(rows: int, global_rows: int, rank: int, world_size: int) -> None:
    with pytest.raises(ValueError, match="global_rows must be a positive multiple of rows x world_size"):
        BatchShare(rows, global_rows, rank, world_size)


def test_a_batch_share_walks_ranks_inside_micro_steps() -> None:
    share = BatchShare(rows=2, global_rows=8, rank=1, world_size=2)
    assert share.micro_steps == 2 and [share.first_row(m) for m in range(2)] == [2, 6]
