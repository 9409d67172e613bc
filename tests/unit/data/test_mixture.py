"""Mixtures: rows drawn from each source at its weight, deterministic per (seed, step) and rank share; each source
tokenized once into a shared folder; a new weight re-tokenizes nothing, an edited source only itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import BYTE_EOT, DIGITS_TEXT, call_main, killed_after, mixture_data, tiny_params, write_params

from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import BatchShare, tokens_settings
from nanugpt.config.token_meta import read_meta
from nanugpt.data.mixture import MixtureBatches
from pipeline import batch_at
from stages import source, tokenize, train

LETTERS = "".join(f"the quick brown fox {i % 7} jumps\n" for i in range(400))  # one digit per line


def mixture_params(tmp_path: Path, weights: tuple[float, float] = (0.7, 0.3), **sections: Any) -> dict[str, Any]:
    letters, digits = tmp_path / "letters.txt", tmp_path / "digits.txt"
    letters.write_text(LETTERS)
    digits.write_text(DIGITS_TEXT)
    return tiny_params(letters, tokenizer=BYTE_EOT, **sections) | {"data": mixture_data(letters, digits, weights)}


def prepared(tmp_path: Path, name: str = "params.yaml", **kwargs: Any):
    params = load_params(write_params(tmp_path / name, mixture_params(tmp_path, **kwargs)))
    tokenize.run(params, data_root=tmp_path / "data")
    return params, tmp_path / "data" / "mix" / "byte"


def mixed(params, data_dir: Path, share: BatchShare, split: str = "train") -> MixtureBatches:
    meta = read_meta(data_dir)
    batches = params.data.batches(data_dir, meta, split, context_length=16, share=share, seed=params.general.seed)
    assert isinstance(batches, MixtureBatches)
    return batches


def is_digits(row: torch.Tensor) -> bool:
    """True for a window of the digits corpus: it holds no letter."""
    return not any(chr(i).isalpha() for i in row.tolist() if i < 128)


def test_rows_match_the_weights_within_one_percent_over_10000_windows(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    batches = mixed(params, data_dir, BatchShare(rows=50, global_rows=100))
    digit_rows = 0
    for step in range(100):
        for micro in range(2):
            x, _ = batches.micro_batch(step, micro)
            digit_rows += sum(is_digits(row) for row in x)
    assert abs(digit_rows / 10_000 - 0.3) < 0.001, digit_rows  # the issue asks for 1%; the sequence gives ~0.01%
    assert batches.tokens_by_source(100) == {"letters": (10_000 - digit_rows) * 16, "digits": digit_rows * 16}


def test_weights_are_relative(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path, weights=(3, 1))
    tokens = mixed(params, data_dir, BatchShare(rows=8, global_rows=8)).tokens_by_source(1250)
    assert tokens["digits"] / (tokens["digits"] + tokens["letters"]) == pytest.approx(0.25, abs=0.001)


def test_two_ranks_share_the_global_batch_of_one(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    one = mixed(params, data_dir, BatchShare(rows=8, global_rows=8))
    ranks = [mixed(params, data_dir, BatchShare(rows=2, global_rows=8, rank=r, world_size=2)) for r in range(2)]
    for step in (0, 1, 57):
        pieces = [ranks[r].micro_batch(step, micro)[0] for micro in range(2) for r in range(2)]
        assert torch.equal(torch.cat(pieces), one.micro_batch(step, 0)[0])


def test_a_step_is_the_same_whatever_was_drawn_before(tmp_path: Path) -> None:
    params, data_dir = prepared(tmp_path)
    walked = mixed(params, data_dir, BatchShare(rows=4, global_rows=4))
    for step in range(5):
        walked.micro_batch(step, 0)
    fresh = mixed(params, data_dir, BatchShare(rows=4, global_rows=4))
    assert torch.equal(fresh.micro_batch(4, 0)[0], walked.micro_batch(4, 0)[0])
    assert not torch.equal(fresh.micro_batch(3, 0)[0], fresh.micro_batch(4, 0)[0])


def test_each_source_is_tokenized_once_and_a_new_weight_reuses_it(tmp_path: Path, capsys) -> None:
    params, data_dir = prepared(tmp_path)
    shared = {name: next((tmp_path / "data" / name / "shared").iterdir()) for name in ("letters", "digits")}
    inodes = {name: (folder / "train.bin").stat().st_ino for name, folder in shared.items()}
    assert (data_dir / "letters" / "train.bin").stat().st_ino == inodes["letters"]  # a hard link, not a copy
    assert read_meta(data_dir).sources == ["letters", "digits"]
    capsys.readouterr()

    heavier, _ = prepared(tmp_path, name="heavier.yaml", weights=(0.5, 0.5))
    assert "letters: token files up to date" in capsys.readouterr().out
    assert {name: (folder / "train.bin").stat().st_ino for name, folder in shared.items()} == inodes
    assert tokens_settings(heavier.data) == tokens_settings(params.data)  # what source.json records: no weights
    assert "weight" not in json.dumps(tokens_settings(params.data))


def test_an_edited_source_is_tokenized_again_alone(tmp_path: Path, capsys) -> None:
    params, _ = prepared(tmp_path)
    letters_bin = next((tmp_path / "data" / "letters" / "shared").iterdir()) / "train.bin"
    digits_bin = next((tmp_path / "data" / "digits" / "shared").iterdir()) / "train.bin"
    before = letters_bin.stat().st_ino, digits_bin.stat().st_ino
    (tmp_path / "digits.txt").write_text(DIGITS_TEXT + "999+999\n" * 50)
    capsys.readouterr()
    tokenize.run(params, data_root=tmp_path / "data")
    out = capsys.readouterr().out
    assert "letters: token files up to date" in out and "digits: tokenizing into" in out
    assert letters_bin.stat().st_ino == before[0] and digits_bin.stat().st_ino != before[1]


def test_the_source_record_changes_with_a_source_not_with_a_weight(tmp_path: Path) -> None:
    records = []
    for name, weights in (("a.yaml", (0.7, 0.3)), ("b.yaml", (0.1, 0.9))):
        params = load_params(write_params(tmp_path / name, mixture_params(tmp_path, weights=weights)))
        records.append(source.run(params, data_root=tmp_path / "data"))
    assert records[0] == records[1]
    params = mixture_params(tmp_path)
    params["data"]["sources"][1]["val_fraction"] = 0.3
    changed = source.run(load_params(write_params(tmp_path / "c.yaml", params)), data_root=tmp_path / "data")
    assert changed["settings"] != records[0]["settings"] and changed["files"] == records[0]["files"]


def test_resume_with_a_mixture_reproduces_the_uninterrupted_losses(tmp_path: Path) -> None:
    params, _ = prepared(tmp_path)
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "full")
    resumed = killed_after(tmp_path / "full", 10, tmp_path / "resumed")
    again = train.run(params, data_root=tmp_path / "data", out_dir=resumed)
    losses = [(tmp_path / name / "plots" / "train.csv").read_text() for name in ("full", "resumed")]
    assert losses[0] == losses[1]  # bitwise, float32 on CPU
    assert again["sources"] == summary["sources"]
    assert set(summary["sources"]) == {"letters", "digits"}
    assert sum(s["tokens"] for s in summary["sources"].values()) == summary["tokens_seen"]
    assert all(s["val_loss"] > 0 for s in summary["sources"].values())
    metrics = json.loads((tmp_path / "full" / "dvclive" / "metrics.json").read_text())
    assert metrics["sources"] == summary["sources"]


def test_batch_at_names_each_rows_source_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params, data_dir = prepared(tmp_path)
    rows = batch_at.batch_rows(params, data_dir, step=2, world_size=1)
    consumed = mixed(params, data_dir, BatchShare(rows=4, global_rows=8))
    assert [r["inputs"] for r in rows] == torch.cat([consumed.micro_batch(1, m)[0] for m in range(2)]).tolist()
    for r in rows:
        name = r["file"].split("/")[0]
        assert r["file"] == f"{name}/train.bin" and is_digits(torch.tensor(r["inputs"])) == (name == "digits")
        tokens = np.fromfile(data_dir / r["file"], dtype=np.uint16)
        assert tokens[r["offset"] : r["offset"] + 16].tolist() == r["inputs"]
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    code, out, err = call_main(batch_at.main, ["2", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "none")])
    assert code == 0, err
    assert "digits/train.bin tokens" in out and "letters/train.bin tokens" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["data"]["sources"][1].update(dataset="letters"), "each source needs a dataset name of its own"),
        (lambda p: p["data"]["sources"][0].update(sampling="epochs"), "draws each source's windows at random"),
        (lambda p: p["data"]["sources"][0].update(weight=0), "sources.0.weight"),
        (lambda p: p["data"]["sources"][0].update(packing="documents"), "a mixture does not pack documents"),
        (lambda p: p["data"].update(sources=[]), "sources"),
        (lambda p: p.update(tokenizer={"module": "char"}), "char fits one to each corpus"),
    ],
    ids=["same-name", "epochs", "zero-weight", "packing", "no-source", "char"],
)
def test_bad_mixtures_are_refused_in_one_line(tmp_path: Path, change, message: str) -> None:
    params = mixture_params(tmp_path)
    change(params)
    with pytest.raises(ParamsError, match=message):
        load_params(write_params(tmp_path / "params.yaml", params))
