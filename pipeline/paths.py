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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanugpt.config.schema import Params
from nanugpt.errors import UserError
from nanugpt.files.atomic import remove_stale_temporaries
from nanugpt.files.folder_lock import hold_out_dir
from pipeline.console_log import env_rank


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
    check_inside_workspace(folder, variable)
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
    check_links(folder, variable)
    return folder


# Subfolders whose files a stage appends to in place (a log, a metrics table): a link there is written through.
APPENDED = ("logs", "plots")


def check_links(folder: Path, variable: str) -> None:
    """Refuse a symbolic link in ``folder`` (two levels down) that a stage would write through to a place outside
    it: a linked folder, or a linked file among those appended to (``APPENDED``). Other files are replaced whole,
    never written through, so a link to a cache (DVC's link cache types) is left alone."""
    root, top = folder.resolve(), list(folder.iterdir())
    for entry in (*top, *(child for sub in top if is_real_dir(sub) for child in sub.iterdir())):
        if not entry.is_symlink():
            continue
        target = entry.resolve()
        written_through = target.is_dir() or entry.parent.name in APPENDED
        if written_through and not target.is_relative_to(root):
            raise OutputFolderError(
                f"{entry} is a symbolic link to {target}, outside {variable} ({folder}): a stage would write "
                "there; replace the link with a folder or file of its own"
            )


def is_real_dir(path: Path) -> bool:
    """A folder that is not a symbolic link."""
    return path.is_dir() and not path.is_symlink()


def check_inside_workspace(folder: Path, variable: str) -> None:
    """Under DVC (``DVC_STAGE`` is set), refuse an output folder outside the workspace the stage runs in: DVC
    versions only what is inside it, and would find the stage's outputs missing after the whole run."""
    if "DVC_STAGE" not in os.environ:
        return
    here = Path.cwd().resolve()
    workspace = next((p for p in (here, *here.parents) if (p / ".dvc").is_dir()), None)
    if workspace is not None and not folder.resolve().is_relative_to(workspace):
        raise OutputFolderError(
            f"{variable} is {folder}, outside the DVC workspace {workspace}: DVC versions only what is inside it; "
            f"leave {variable} unset under dvc, or set it (in _env too) to a folder inside the workspace"
        )


@contextmanager
def held(out: Path, stage: str) -> Iterator[None]:
    """Hold ``out`` for ``stage`` while the block runs (``nanugpt.files.folder_lock``): a second train into it, or
    a train beside an evaluate, fails at once naming the holder. Rank 0 holds it for all ranks: it alone writes.
    Once held, the temporaries that killed processes left in it are removed (``clean``)."""
    if env_rank() != 0:
        yield
        return
    with hold_out_dir(out, stage):
        clean(out)
        yield


def clean(folder: Path) -> None:
    """Remove the temporary files that killed processes of this host left in ``folder``, saying so."""
    for path in remove_stale_temporaries(folder):
        print(f"cleaned up {path}, left by a process killed while writing")


def tokenized_dir(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/<tokenizer.module>``: the tokenize stage's output folder."""
    return (root or data_root()) / params.data.dataset / params.tokenizer.module


def source_record(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/source.json``: the source stage's record of the local corpus files."""
    return (root or data_root()) / params.data.dataset / "source.json"


def tokens_source(params: Params, root: Path | None = None) -> Path:
    """``DATA_ROOT/<data.dataset>/<tokenizer.module>/source.json``: the record of the corpus files the token files
    were made from, written after them by the tokenize stage (compared with ``source_record`` by train)."""
    return tokenized_dir(params, root) / "source.json"


def checkpoint_dir(root: Path | None = None) -> Path:
    """``OUT_DIR/checkpoints``: the checkpoints train writes as it goes, and resumes from."""
    return (root or out_dir()) / "checkpoints"


def model_dir(root: Path | None = None) -> Path:
    """``OUT_DIR/model``: the train stage's output, the finished run's last and best checkpoints
    (``pipeline.publish``)."""
    return (root or out_dir()) / "model"


def last_checkpoint(root: Path | None = None, *, sharded: bool = False) -> Path:
    """``OUT_DIR/model/last.pt``: what evaluate and generate load, and what a run continuing this one resumes
    from; with ``sharded`` (``training.strategy: fsdp``) the ``last`` step folder."""
    return model_dir(root) / ("last" if sharded else "last.pt")


def chosen_checkpoint(choice: str, root: Path | None = None) -> Path:
    """The checkpoint ``generate.checkpoint`` / ``export.checkpoint`` names: ``last``, ``best`` or a path.

    ``last`` and ``best`` are ``last.pt`` and ``best.pt`` under ``OUT_DIR/model``; anything else is a path,
    relative to the working directory.
    """
    if choice in ("last", "best"):
        return model_dir(root) / f"{choice}.pt"
    return Path(choice)


def metrics_file(root: Path | None = None) -> Path:
    """``OUT_DIR/metrics.json``: the evaluate stage's DVC metrics."""
    return (root or out_dir()) / "metrics.json"


def samples_file(root: Path | None = None) -> Path:
    """``OUT_DIR/samples.txt``: the generate stage's samples."""
    return (root or out_dir()) / "samples.txt"
