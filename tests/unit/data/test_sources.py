"""Data versioning: the source record, the test split, the hf revision in meta.json, and no resume across data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TEXT, tiny_params, write_params

from nanugpt.config.params import ParamsError, load_params
from nanugpt.data.sources import RACY_NS, SourceError, known_hashes, source_record
from nanugpt.data.tokenize import tokenize_documents, tokenize_files
from nanugpt.data.tokenizers.byte import ByteTokenizerOptions
from nanugpt.errors import UserError
from nanugpt.files.hashing import sha256_file
from pipeline import paths
from pipeline.stages import corpus_inputs
from stages import source, tokenize, train

BYTE = ByteTokenizerOptions(module="byte")


def read_text(path: Path) -> str:
    return np.fromfile(path, dtype="<u2").astype(np.uint8).tobytes().decode("utf-8")


def test_test_fraction_holds_out_the_corpus_end_and_val_keeps_its_share(tmp_path: Path, corpus: Path) -> None:
    with_test = tokenize_files([corpus], BYTE, tmp_path / "a", 0.1, test_fraction=0.2)
    train_text, val_text, test_text = (read_text(tmp_path / "a" / f"{split}.bin") for split in ("train", "val", "test"))
    assert train_text + val_text + test_text == TINY_TEXT
    total = len(TINY_TEXT.encode())
    assert abs(len(test_text) - 0.2 * total) < 60 and abs(len(val_text) - 0.1 * total) < 60  # cut at a line start
    assert TINY_TEXT[len(train_text + val_text) - 1] == "\n" and TINY_TEXT[len(train_text) - 1] == "\n"
    assert (with_test.test_tokens, with_test.val_tokens) == (len(test_text), len(val_text))
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["test_tokens"] == len(test_text)


def test_test_fraction_zero_writes_what_it_wrote_before(tmp_path: Path, corpus: Path) -> None:
    meta = tokenize_files([corpus], BYTE, tmp_path / "a", 0.1)
    assert not (tmp_path / "a" / "test.bin").exists()
    assert "test_tokens" not in json.loads((tmp_path / "a" / "meta.json").read_text())
    with_test = tokenize_files([corpus], BYTE, tmp_path / "b", 0.1, test_fraction=0.05)
    assert abs(with_test.val_tokens - meta.val_tokens) < 60  # val keeps its share; train gives up the test's


def test_documents_test_fraction_takes_the_last_documents(tmp_path: Path) -> None:
    docs = [f"doc {i}" for i in range(20)]
    meta = tokenize_documents(lambda: [docs[:7], docs[7:]], 20, BYTE, tmp_path, 0.1, test_fraction=0.25)
    ids = {split: np.fromfile(tmp_path / f"{split}.bin", dtype="<u2").tolist() for split in ("train", "val", "test")}
    expected = {
        split: [i for doc in part for i in [*doc.encode(), 256]]
        for split, part in (("train", docs[:13]), ("val", docs[13:15]), ("test", docs[15:]))
    }
    assert ids == expected
    assert meta.test_tokens == len(expected["test"])


def hf_params(tmp_path: Path, **data: object) -> Path:
    rows = {"train": [f"train {i}" for i in range(40)], "test": [f"test {i}" for i in range(6)]}
    files = {}
    for split, texts in rows.items():
        files[split] = [str(tmp_path / f"{split}.jsonl")]
        Path(files[split][0]).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    hf = {"data_files": files, "revision": "v1.0"}
    params = tiny_params("hf:json", data={"hf": hf, **data}, tokenizer={"module": "byte"})
    return write_params(tmp_path / "params.yaml", params)


def test_hf_revision_is_recorded_and_the_datasets_own_test_split_is_used(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    meta = tokenize.run(load_params(hf_params(tmp_path)), data_root=tmp_path / "data")
    written = json.loads((tmp_path / "data" / "tiny" / "byte" / "meta.json").read_text())
    assert written["revision"] == meta.revision == "v1.0"
    assert meta.test_tokens == sum(len(f"test {i}") + 1 for i in range(6))  # each document + end-of-text
    assert meta.train_tokens + meta.val_tokens == sum(len(f"train {i}") + 1 for i in range(40))


def test_hf_test_fraction_beside_the_datasets_test_split_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    params = load_params(hf_params(tmp_path, test_fraction=0.1))
    with pytest.raises(UserError, match="data.test_fraction is 0.1, but hf:json has its own 'test' split"):
        tokenize.run(params, data_root=tmp_path / "data")


def test_val_and_test_fractions_must_leave_a_train_split(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "p.yaml", tiny_params(corpus, data={"val_fraction": 0.5, "test_fraction": 0.5}))
    with pytest.raises(ParamsError, match="val_fraction \\+ test_fraction is 1: it must be < 1"):
        load_params(path)


def test_source_record_follows_the_content_of_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("one\n")
    params_file = write_params(tmp_path / "params.yaml", tiny_params(folder))
    params = load_params(params_file)
    first = source.run(params, data_root=tmp_path / "data")
    assert json.loads(paths.source_record(params, tmp_path / "data").read_text()) == first
    assert corpus_inputs(str(params_file)) == [str(folder / "a.txt")]  # Snakemake's inputs
    (folder / "a.txt").touch()
    assert source.run(params, data_root=tmp_path / "data") == first  # a touch is no change
    (folder / "a.txt").write_text("two\n")
    assert source.run(params, data_root=tmp_path / "data") != first
    (folder / "b.txt").write_text("one\n")
    assert [f["path"] for f in source.run(params, data_root=tmp_path / "data")["files"]] == [
        str(folder / "a.txt"),
        str(folder / "b.txt"),
    ]


def test_an_unchanged_file_keeps_its_hash_without_being_read_again(tmp_path: Path) -> None:
    corpus, kept = tmp_path / "corpus.txt", tmp_path / "hashes.json"
    corpus.write_text("one\n")
    settled = corpus.stat().st_mtime_ns - 10 * RACY_NS
    os.utime(corpus, ns=(settled, settled))  # long before the hash is kept: the kept hash is trusted
    first = source_record([corpus], kept)
    corpus.write_text("two\n")
    os.utime(corpus, ns=(settled, settled))  # the same size and time: the kept hash stands, the file is not read
    assert source_record([corpus], kept) == first
    corpus.write_text("two\n")  # a real edit moves the time
    assert source_record([corpus], kept)["files"][0]["sha256"] == sha256_file(corpus) != first["files"][0]["sha256"]


def test_a_file_changed_just_before_its_hash_was_kept_is_read_again(tmp_path: Path) -> None:
    corpus, kept = tmp_path / "corpus.txt", tmp_path / "hashes.json"
    corpus.write_text("one\n")
    source_record([corpus], kept)  # hashed within the clock's resolution of its last change
    stat = corpus.stat()
    corpus.write_text("two\n")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # an edit the clock did not see
    assert source_record([corpus], kept)["files"][0]["sha256"] == sha256_file(corpus)


def test_url_and_hub_sources_have_no_local_files(tmp_path: Path) -> None:
    for name in ("https://example.invalid/corpus.txt", "hf:roneneldan/TinyStories"):
        params = load_params(write_params(tmp_path / "params.yaml", tiny_params(name)))
        record = source.run(params, data_root=tmp_path / "data")
        assert record["files"] == [] and record["settings"]["source"] == name  # its identity: the params


def test_a_missing_corpus_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="corpus files not found: .*gone.jsonl"):
        source_record([tmp_path / "gone.jsonl"])


def test_a_checkpoint_trained_on_other_tokens_is_not_resumed(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_TEXT)
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus, training={"max_steps": 10})))
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    corpus.write_text(TINY_TEXT.replace("Speak, speak.", "Speak, speak, I say.", 1))
    tokenize.run(params, data_root=tmp_path / "data")
    capsys.readouterr()
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert "trained on other token files (meta.json); starting from step 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damaged",
    ['{"written_ns": 5}', "[]", '{"written_ns": "x", "files": {}}', '{"written_ns": 1, "files": {"a": 3}}', "\xff"],
)
def test_a_damaged_hash_cache_is_rebuilt(tmp_path: Path, damaged: str) -> None:
    """Issue 30, case 9: a wrong-shaped ``.source-hashes.json`` was a ``KeyError: 'files'`` traceback."""
    corpus = tmp_path / "a"
    corpus.write_text(TINY_TEXT)
    kept = tmp_path / ".source-hashes.json"
    kept.write_text(damaged)
    assert known_hashes([corpus], kept) == [sha256_file(corpus)]
    assert set(json.loads(kept.read_text())["files"]) == {str(corpus)}
