"""The build of a run: with ``data.packing: documents`` the model is masked at document boundaries, in training and
when the evaluate stage reloads it, and a tokenizer without an end-of-text id is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import tiny_params, write_params

from nanugpt.config.token_meta import DataError
from nanugpt.eval.evaluate import evaluate_checkpoint
from pipeline import paths
from pipeline.schema import load
from stages import tokenize, train


def document_folder(tmp_path: Path, corpus: Path) -> Path:
    """A folder of 60 short .txt files (5-21 characters of ``corpus``): 60 documents, each ended by end-of-text,
    several to a window of 33 tokens."""
    folder = tmp_path / "docs"
    folder.mkdir()
    text, start = corpus.read_text(), 0
    for i in range(60):
        length = 5 + (i * 7) % 17
        (folder / f"{i:02}.txt").write_text(text[start : start + length])
        start += length
    return folder


def test_a_packed_run_trains_and_evaluates_masked(tmp_path: Path, corpus: Path) -> None:
    params = load(
        write_params(
            tmp_path / "params.yaml",
            tiny_params(
                document_folder(tmp_path, corpus),
                data={"packing": "documents", "mask_first_target": True, "val_fraction": 0.2},
                tokenizer={"module": "byte"},  # end-of-text 256 after each file
                model={"context_length": 32},
                training={"max_steps": 6, "device_batch_size": 4, "global_batch_size": 4, "checkpoint_every": 6},
                eval={"eval_every": 6, "eval_iters": 2},
            ),
        )
    )
    data_root, out = tmp_path / "data", tmp_path / "out"
    tokenize.run(params, data_root=data_root)
    summary = train.run(params, data_root=data_root, out_dir=out)
    assert summary["step"] == 6 and math.isfinite(summary["val_loss"])
    evaluated = evaluate_checkpoint(params, paths.last_checkpoint(out), paths.tokenized_dir(params, data_root))
    # the same packed val batches and the same masked model as the validator's at the last step
    assert evaluated["val_loss"] == pytest.approx(summary["val_loss"], abs=1e-5)


def test_packing_with_a_tokenizer_without_end_of_text_is_refused(tmp_path: Path, corpus: Path) -> None:
    params = load(write_params(tmp_path / "params.yaml", tiny_params(corpus, data={"packing": "documents"})))
    tokenize.run(params, data_root=tmp_path / "data")  # char: no end-of-text id
    with pytest.raises(DataError, match=r"^data.packing: documents needs an end-of-text id .*'char'"):
        train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
