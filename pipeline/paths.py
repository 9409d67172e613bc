"""Artifact locations: token files under ``DATA_ROOT``, run outputs under ``OUT_DIR``.

Both are environment variables defaulting to ``data`` and ``out`` in the
working directory, where DVC can version them. Under Snakemake they may be any
absolute path (``--config data_root=... out_dir=...``).
"""

from __future__ import annotations

import os
from pathlib import Path

from nanugpt.params import Params


def data_root() -> Path:
    """``$DATA_ROOT`` or ``data``."""
    return Path(os.environ.get("DATA_ROOT") or "data")


def out_dir() -> Path:
    """``$OUT_DIR`` or ``out``."""
    return Path(os.environ.get("OUT_DIR") or "out")


def tokenized_dir(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/<tokenizer.module>``: the tokenize stage's output folder."""
    return (root or data_root()) / params.data.dataset / params.tokenizer.module


def checkpoint_dir(root: Path | None = None) -> Path:
    """``OUT_DIR/checkpoints``: the train stage's checkpoints."""
    return (root or out_dir()) / "checkpoints"


def last_checkpoint(root: Path | None = None) -> Path:
    """``OUT_DIR/checkpoints/last.pt``: what evaluate and generate load."""
    return checkpoint_dir(root) / "last.pt"


def metrics_file(root: Path | None = None) -> Path:
    """``OUT_DIR/metrics.json``: the evaluate stage's DVC metrics."""
    return (root or out_dir()) / "metrics.json"


def samples_file(root: Path | None = None) -> Path:
    """``OUT_DIR/samples.txt``: the generate stage's samples."""
    return (root or out_dir()) / "samples.txt"
