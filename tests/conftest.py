"""Shared fixtures: a tiny corpus, a tiny params file, and the local Tiny Shakespeare. Helpers: ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import TINY_TEXT, tiny_params, write_params


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small text file (about 6 KB) in tmp_path."""
    path = tmp_path / "corpus.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def params_file(tmp_path: Path, corpus: Path) -> Path:
    """A tiny, valid params.yaml in tmp_path."""
    return write_params(tmp_path / "params.yaml", tiny_params(corpus))


@pytest.fixture
def shakespeare() -> Path:
    """The public-domain Tiny Shakespeare copy named by $NANUGPT_TINYSHAKESPEARE (skip without it)."""
    path = os.environ.get("NANUGPT_TINYSHAKESPEARE")
    if not path or not Path(path).is_file():
        pytest.skip("NANUGPT_TINYSHAKESPEARE does not name a local Tiny Shakespeare (make test sets it)")
    return Path(path)
