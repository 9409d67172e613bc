"""Artifact locations: token files under ``DATA_ROOT``, run outputs under ``OUT_DIR``.

Both are environment variables defaulting to ``data`` and ``out`` in the
working directory, where DVC can version them. Under Snakemake they may be any
absolute path (``--config data_root=... out_dir=...``).

Every stage calls ``writable`` on its output folder before any work, so a
read-only ``OUT_DIR`` or a file in its place fails at once, not after
training or sampling.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nanugpt.config.schema import Params
from nanugpt.errors import UserError


class OutputFolderError(UserError):
    """An output folder that cannot be created or written."""


def data_root() -> Path:
    """``$DATA_ROOT`` or ``data``."""
    return Path(os.environ.get("DATA_ROOT") or "data")


def out_dir() -> Path:
    """``$OUT_DIR`` or ``out``."""
    return Path(os.environ.get("OUT_DIR") or "out")


def log_file(stage: str) -> Path:
    """``$OUT_DIR/logs/<stage>.log``: where a stage run from the command line appends its console lines."""
    return out_dir() / "logs" / f"{stage}.log"


def writable(folder: Path, variable: str) -> Path:
    """Create ``folder`` if needed and write a file there; return it, or fail in one line naming the fix.

    ``variable`` is the environment variable that places the folder (``OUT_DIR``, ``DATA_ROOT``).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise OutputFolderError(
            f"{folder}: a file stands where the output folder should be; remove it or set {variable} to a folder"
        ) from None
    except OSError as exc:
        raise OutputFolderError(
            f"{folder}: cannot write there ({exc.strerror}); make it writable or set {variable} to a writable folder"
        ) from None
    return folder


def tokenized_dir(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/<tokenizer.module>``: the tokenize stage's output folder."""
    return (root or data_root()) / params.data.dataset / params.tokenizer.module


def source_record(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/source.json``: the source stage's record of the local corpus files."""
    return (root or data_root()) / params.data.dataset / "source.json"


def checkpoint_dir(root: Path | None = None) -> Path:
    """``OUT_DIR/checkpoints``: the train stage's checkpoints."""
    return (root or out_dir()) / "checkpoints"


def last_checkpoint(root: Path | None = None) -> Path:
    """``OUT_DIR/checkpoints/last.pt``: what evaluate and generate load."""
    return checkpoint_dir(root) / "last.pt"


def chosen_checkpoint(choice: str, root: Path | None = None) -> Path:
    """The checkpoint ``generate.checkpoint`` / ``export.checkpoint`` names: ``last``, ``best`` or a path.

    ``last`` and ``best`` are ``last.pt`` and ``best.pt`` under ``OUT_DIR/checkpoints``; anything else is a path,
    relative to the working directory.
    """
    if choice in ("last", "best"):
        return checkpoint_dir(root) / f"{choice}.pt"
    return Path(choice)


def metrics_file(root: Path | None = None) -> Path:
    """``OUT_DIR/metrics.json``: the evaluate stage's DVC metrics."""
    return (root or out_dir()) / "metrics.json"


def samples_file(root: Path | None = None) -> Path:
    """``OUT_DIR/samples.txt``: the generate stage's samples."""
    return (root or out_dir()) / "samples.txt"
