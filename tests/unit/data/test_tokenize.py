"""The tokenize step: token files equal the tokenizer's output, splits, dtypes, streaming, errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TINY_TEXT, killed_at_random, time_in_child

from nanugpt.config.token_meta import DataError, read_meta
from nanugpt.data.tokenize import (
    CorpusError,
    token_dtype,
    tokenize_documents,
    tokenize_files,
)
from nanugpt.data.tokenizers.byte import ByteTokenizerOptions
from nanugpt.data.tokenizers.char import CharTokenizerOptions
from nanugpt.data.tokenizers.tiktoken import TiktokenOptions
from nanugpt.errors import UserError
from nanugpt.files.atomic import remove_stale_temporaries
from nanugpt.files.hashing import sha256_file


def read_bin(path: Path, dtype: str) -> list[int]:
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).tolist()


@pytest.mark.parametrize(
    "options",
    [CharTokenizerOptions(module="char"), ByteTokenizerOptions(module="byte"), TiktokenOptions(module="tiktoken")],
    ids=["char", "byte", "gpt2"],
)
def test_bins_equal_tokenizer_output(tmp_path: Path, corpus: Path, options) -> None:
    meta = tokenize_files([corpus], options, tmp_path / "out", val_fraction=0.1)
    tok = options.build(vocab=meta.vocab)
    train = read_bin(tmp_path / "out" / "train.bin", meta.dtype)
    val = read_bin(tmp_path / "out" / "val.bin", meta.dtype)
    assert train + val == tok.encode(TINY_TEXT)
    assert tok.decode(train) + tok.decode(val) == TINY_TEXT
    assert meta.train_tokens == len(train) and meta.val_tokens == len(val)
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    assert meta.tokenizer == options.model_dump(mode="json") and meta.vocab_size == tok.vocab_size


def test_split_is_at_a_line_end_without_shuffling(tmp_path: Path) -> None:
    text = "".join(f"line {i:04d}\n" for i in range(1000))
    (tmp_path / "c.txt").write_text(text)
    meta = tokenize_files([tmp_path / "c.txt"], CharTokenizerOptions(module="char"), tmp_path / "o", 0.25)
    tok = CharTokenizerOptions(module="char").build(vocab=meta.vocab)
    val_text = tok.decode(read_bin(tmp_path / "o" / "val.bin", meta.dtype))
    assert val_text.startswith("line 0750\n") and val_text.endswith("line 0999\n")


def test_meta_records_dtype_and_hashes(tmp_path: Path, corpus: Path) -> None:
    import hashlib

    meta = tokenize_files([corpus], ByteTokenizerOptions(module="byte"), tmp_path, 0.1, source="corpus.txt")
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert read_meta(tmp_path) == meta and on_disk["vocab_size"] == 257 and "vocab" not in on_disk  # nulls left out
    assert meta.dtype == "uint16"
    assert meta.source_sha256 == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert meta.train_sha256 == hashlib.sha256((tmp_path / "train.bin").read_bytes()).hexdigest()
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32 and token_dtype(100277) == np.uint32


def test_chunking_and_workers_do_not_change_the_output(tmp_path: Path, corpus: Path) -> None:
    options = TiktokenOptions(module="tiktoken")
    whole = tokenize_files([corpus], options, tmp_path / "whole", 0.1)
    chunked = tokenize_files(
        [corpus], options, tmp_path / "chunked", 0.1, workers=2, chunk_bytes=97, parallel_min_bytes=0
    )
    assert chunked.train_sha256 == whole.train_sha256 and chunked.val_sha256 == whole.val_sha256


def test_several_files_are_documents_separated_by_eot(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha\n")
    (tmp_path / "docs" / "b.txt").write_text("beta\n")
    files = sorted((tmp_path / "docs").glob("*.txt"))
    meta = tokenize_files(files, ByteTokenizerOptions(module="byte"), tmp_path / "o", 0.0)
    assert read_bin(tmp_path / "o" / "train.bin", meta.dtype) == list(b"alpha\n") + [256] + list(b"beta\n")


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        tokenize_files([tmp_path / "empty.txt"], CharTokenizerOptions(module="char"), tmp_path / "o", 0.1)
    assert not (tmp_path / "o" / "train.bin").exists()


def test_non_utf8_corpus(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\nworld \xff\xfe here\n" * 30)
    for options in (CharTokenizerOptions(module="char"), TiktokenOptions(module="tiktoken")):
        with pytest.raises(CorpusError, match=r"not valid UTF-8 at corpus byte 12"):
            tokenize_files([bad], options, tmp_path / "o", 0.1)
    meta = tokenize_files([bad], ByteTokenizerOptions(module="byte"), tmp_path / "o", 0.1)
    assert meta.train_tokens + meta.val_tokens == bad.stat().st_size


def test_failed_tokenize_leaves_previous_outputs(tmp_path: Path, corpus: Path) -> None:
    options = CharTokenizerOptions(module="char")
    first = tokenize_files([corpus], options, tmp_path / "o", 0.1)
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(CorpusError):
        tokenize_files([tmp_path / "bad.txt"], options, tmp_path / "o", 0.1)
    assert read_meta(tmp_path / "o") == first
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "meta.json",
        "meta.json.sha256",
        "train.bin",
        "val.bin",
    ]


def _peak_rss_mb(corpus: Path, out: Path) -> float:
    code = (
        "import resource, sys; from pathlib import Path;"
        "from nanugpt.data.tokenize import tokenize_files;"
        "from nanugpt.data.tokenizers.byte import ByteTokenizerOptions;"
        f"tokenize_files([Path({str(corpus)!r})], ByteTokenizerOptions(module='byte'), Path({str(out)!r}), 0.1,"
        " workers=1, chunk_bytes=1 << 16);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def test_memory_stays_flat_as_the_corpus_grows(tmp_path: Path) -> None:
    line = b"The quick brown fox jumps over the lazy dog.\n"
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_bytes(line * (1 << 13))  # ~0.4 MB
    large.write_bytes(line * (1 << 19))  # ~24 MB, far more than the 64 KiB chunk
    grown = _peak_rss_mb(large, tmp_path / "l") - _peak_rss_mb(small, tmp_path / "s")
    assert grown < 12, f"peak memory grew by {grown:.1f} MB for a 60x larger corpus"


def test_documents_split_in_order_with_eot(tmp_path: Path) -> None:
    docs = [f"story {i}" for i in range(10)]
    meta = tokenize_documents(
        lambda: iter([docs[:4], docs[4:]]),
        10,
        ByteTokenizerOptions(module="byte"),
        tmp_path,
        val_fraction=0.2,
        source="docs",
    )
    train = read_bin(tmp_path / "train.bin", meta.dtype)
    val = read_bin(tmp_path / "val.bin", meta.dtype)
    assert train == [i for d in docs[:8] for i in (*d.encode(), 256)]
    assert val == [i for d in docs[8:] for i in (*d.encode(), 256)]


def test_documents_in_parallel_equal_serial(tmp_path: Path) -> None:
    docs = [f"line {i} of the corpus\n" * (i % 5 + 1) for i in range(3000)]
    batches = lambda: (docs[i : i + 256] for i in range(0, len(docs), 256))  # noqa: E731
    options = TiktokenOptions(module="tiktoken")
    serial = tokenize_documents(batches, len(docs), options, tmp_path / "a", 0.1, workers=1)
    parallel = tokenize_documents(batches, len(docs), options, tmp_path / "b", 0.1, workers=2, parallel_min_documents=0)
    assert serial.train_sha256 == parallel.train_sha256 and serial.val_sha256 == parallel.val_sha256


def test_hf_datasets_source_from_local_files(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from nanugpt.data.sources import load_hf_documents

    (tmp_path / "a.txt").write_text("".join(f"row {i}\n" for i in range(50)))
    (batches, count), test, val = load_hf_documents("hf:text", "train", "text", data_files=[str(tmp_path / "a.txt")])
    assert count == 50 and test is None and val is None
    meta = tokenize_documents(
        batches, count, CharTokenizerOptions(module="char"), tmp_path / "o", 0.1, source="hf:text"
    )
    tok = CharTokenizerOptions(module="char").build(vocab=meta.vocab)
    assert tok.decode(read_bin(tmp_path / "o" / "val.bin", meta.dtype)) == "".join(f"row {i}" for i in range(45, 50))


def test_an_hf_datasets_own_val_split_becomes_val_bin(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from nanugpt.data.tokenized import TokenizedDataOptions

    (tmp_path / "train.txt").write_text("".join(f"row {i}\n" for i in range(40)))
    (tmp_path / "valid.txt").write_text("".join(f"held {i}\n" for i in range(5)))
    files = {"train": [str(tmp_path / "train.txt")], "validation": [str(tmp_path / "valid.txt")]}
    hf = {"data_files": files, "val_split": "validation", "test_split": None}
    data = TokenizedDataOptions(module="tokenized", dataset="d", source="hf:text", hf=hf)
    meta = data.tokenize(CharTokenizerOptions(module="char"), tmp_path / "o", tmp_path / "raw")
    tok = CharTokenizerOptions(module="char").build(vocab=meta.vocab)
    assert tok.decode(read_bin(tmp_path / "o" / "val.bin", meta.dtype)) == "".join(f"held {i}" for i in range(5))
    assert tok.decode(read_bin(tmp_path / "o" / "train.bin", meta.dtype)) == "".join(f"row {i}" for i in range(40))
    missing = TokenizedDataOptions(module="tokenized", dataset="d", source="hf:text", hf={**hf, "val_split": "dev"})
    with pytest.raises(UserError, match="data.hf.val_split 'dev' is not a split of hf:text"):
        missing.tokenize(CharTokenizerOptions(module="char"), tmp_path / "p", tmp_path / "raw")


@pytest.mark.slow
def test_a_tokenize_killed_at_20_moments_leaves_a_whole_set_or_none_and_no_temporary(tmp_path: Path) -> None:
    """Issue 30, the tokenize kill family (case 8's leftovers): SIGKILL at a random moment of a tokenize over an
    earlier complete set, then the next run's clean-up: no temporary is left, and the folder holds a complete,
    consistent set (the earlier or the new) or no meta.json at all (``train`` then says to tokenize), never
    token files that disagree with a meta.json."""
    corpus, out = tmp_path / "corpus.txt", tmp_path / "tokens"
    options = CharTokenizerOptions(module="char")
    texts = [TINY_TEXT * 300, TINY_TEXT.upper() * 300]
    corpus.write_text(texts[0])
    tokenize_files([corpus], options, out, 0.1)
    within = time_in_child(lambda: tokenize_files([corpus], options, out, 0.1, workers=1))
    rng, outcomes = random.Random(30), {"whole": 0, "no meta.json": 0, "killed": 0}
    for trial in range(20):
        corpus.write_text(texts[trial % 2])
        outcomes["killed"] += killed_at_random(
            lambda: tokenize_files([corpus], options, out, 0.1, workers=1), within_s=within, rng=rng
        )
        remove_stale_temporaries(out)
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
        try:
            meta = read_meta(out)  # the files' sizes against meta.json; their content below
            assert all(sha256_file(out / f"{split}.bin") == meta.split_sha256(split) for split in ("train", "val"))
            outcomes["whole"] += 1
        except DataError as exc:
            assert "not found: run the tokenize stage first" in str(exc), exc
            outcomes["no meta.json"] += 1
            tokenize_files([corpus], options, out, 0.1)
    print(outcomes)
