"""Generated corpora (``gen:<name>``): the same documents on every machine, tokenized with an end-of-text between."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import BYTE_EOT, tiny_params, write_params

from nanugpt.config.params import load_params
from nanugpt.data.generated import generated_corpus
from nanugpt.errors import UserError
from stages import source, tokenize


def test_a_generated_corpus_is_the_same_documents_every_time(tmp_path: Path) -> None:
    first = generated_corpus("gen:arithmetic", tmp_path / "a")
    again = generated_corpus("gen:arithmetic", tmp_path / "b")
    assert len(first) == 2000 and [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert first[0].read_text().startswith("Worksheet 1\n") and " = " in first[0].read_text()
    params = tiny_params("gen:arithmetic", tokenizer=BYTE_EOT)
    loaded = load_params(write_params(tmp_path / "params.yaml", params))
    assert source.run(loaded, data_root=tmp_path / "data")["files"] == []  # its identity: the name and the code
    meta = tokenize.run(loaded, data_root=tmp_path / "data")
    train_ids = np.fromfile(tmp_path / "data" / "tiny" / "byte" / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "data" / "tiny" / "byte" / "val.bin", dtype=np.uint16)
    assert int((train_ids == meta.eot_id).sum()) + int((val == meta.eot_id).sum()) == 1999  # between the documents


def test_an_unknown_generated_corpus_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'gen:poems': no such generated corpus; known: arithmetic"):
        generated_corpus("gen:poems", tmp_path)
