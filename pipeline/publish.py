"""The train stage's output: ``OUT_DIR/model``, the finished run's ``last`` and ``best`` checkpoints.

Training writes into ``OUT_DIR/checkpoints``, a working folder that no orchestrator declares, deletes or
versions, so an interrupted run resumes from it (``training.resume: auto``) under ``dvc repro`` and Snakemake
alike. When the run finishes, ``publish`` links its ``last`` and ``best`` checkpoints into ``OUT_DIR/model``:
what evaluate, generate and export read, what DVC versions and pushes, and what the next rung of a halving
search resumes from. The stage's outputs then hold no folder that must survive a rerun, so DVC's run-cache
records the stage and restores it instead of training again (docs/remotes.md).

A run that starts from step 0 sets an earlier run's ``model`` aside with its other outputs, and puts it back if it
fails (``nanugpt.train.previous_run``). Files are hard links (no copy on disk; a copy where the file system has
none). Every checkpoint file is replaced whole, never written in place, so a link keeps its content when training
goes on. A sharded run's ``last`` link becomes a folder of its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nanugpt.files.atomic import atomic_dir

# What ``publish`` takes from the working folder: the last and best checkpoints in either form, their checksums,
# and last.json (the step of ``last``)
PUBLISHED = ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256", "last", "best", "last.json")


def link_or_copy(source: str, target: str) -> None:
    """Hard-link ``source`` at ``target``; copy it where the file system cannot link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def publish(checkpoints: Path, model: Path) -> list[str]:
    """Replace ``model`` with links to the ``PUBLISHED`` entries of ``checkpoints``; return the names placed."""
    placed = []
    with atomic_dir(model) as tmp:
        for name in PUBLISHED:
            source = checkpoints / name
            if source.is_dir():  # a sharded run's step folder (``last`` is a link to one)
                shutil.copytree(source.resolve(), tmp / name, copy_function=link_or_copy)
            elif source.is_file():
                link_or_copy(str(source), str(tmp / name))
            else:
                continue
            placed.append(name)
    return placed
