"""The outputs of an earlier run in ``OUT_DIR``, kept until a new run has proven itself.

A run that starts from step 0 where another run left its outputs moves them
into ``OUT_DIR/.previous-run/`` (renames: atomic, no copy). Once the new run
has saved a complete checkpoint of finite values, they are deleted; if it
fails before that, they are moved back, so a failed run loses nothing. A run
killed outright (SIGKILL, node failure) before that point leaves them aside:
the next run moves them back before it decides anything.

Each of the three moves is a transaction that a kill at any moment leaves
whole for the next run's ``recover``:

- setting aside fills ``.previous-run.partial/`` (first the list of the names
  it moves, ``moved.json``), then renames it ``.previous-run/``: a kill before
  the rename leaves the new run nothing written yet, and the names go back;
- putting back moves each name home, then renames the emptied folder to
  ``.previous-run.discarding/``; a name listed in ``moved.json`` but no longer
  aside is home already, so a second attempt deletes nothing of the earlier run;
- discarding renames ``.previous-run/`` to ``.previous-run.discarding/``
  before deleting it, so a half-deleted earlier run is never put back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nanugpt.files.atomic import write_json

# What the train stage writes into OUT_DIR for one run (evaluate, generate and export write the rest).
# logs/ is not here: every run appends to it, so it holds the earlier run's lines already.
# model/ is where the pipeline links a finished run's last and best checkpoints (pipeline/publish.py).
TRAIN_OUTPUTS = ("checkpoints", "model", "plots", "dvclive", "tensorboard", "run_info.json", "train_summary.json")
MANIFEST = "moved.json"


class PreviousRun:
    """Moves the train outputs of ``out_dir`` aside, back, or away."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.aside = out_dir / ".previous-run"
        self.partial = out_dir / ".previous-run.partial"
        self.discarding = out_dir / ".previous-run.discarding"

    def recover(self) -> bool:
        """Finish what a killed attempt left: delete a discarded run, move back outputs set aside (by a set-aside
        that did not finish, or by an attempt killed before its first checkpoint); True if outputs came back."""
        if self.discarding.exists():
            shutil.rmtree(self.discarding)
        if self.partial.is_dir():
            for name in TRAIN_OUTPUTS:
                if (self.partial / name).exists() and not (self.out_dir / name).exists():
                    os.replace(self.partial / name, self.out_dir / name)
            shutil.rmtree(self.partial)
            return True
        if not self.aside.is_dir():
            return False
        self.restore()
        return True

    def set_aside(self) -> list[str]:
        """Move the train outputs present in ``out_dir`` aside; return their names."""
        present = [name for name in TRAIN_OUTPUTS if (self.out_dir / name).exists()]
        if present:
            self.partial.mkdir(parents=True)
            write_json(self.partial / MANIFEST, present)
            for name in present:
                os.replace(self.out_dir / name, self.partial / name)
            os.replace(self.partial, self.aside)
        return present

    def restore(self) -> None:
        """Put the outputs set aside back in place of whatever this run wrote."""
        if not self.aside.is_dir():
            return
        moved = self.moved_names()
        for name in TRAIN_OUTPUTS:
            new, earlier = self.out_dir / name, self.aside / name
            if not earlier.exists() and name in moved:
                continue  # put back by an attempt that was killed before it finished
            if new.is_dir() and not new.is_symlink():
                shutil.rmtree(new)
            elif new.exists() or new.is_symlink():
                new.unlink()
            if earlier.exists():
                os.replace(earlier, new)
        self.discard()

    def discard(self) -> None:
        """Delete the outputs set aside (once this run has replaced them, or after they were put back)."""
        if self.aside.is_dir():
            os.replace(self.aside, self.discarding)
        shutil.rmtree(self.discarding, ignore_errors=True)

    def moved_names(self) -> set[str]:
        """The names the set-aside moved (``moved.json``); an older folder without it: the names in it."""
        try:
            return set(json.loads((self.aside / MANIFEST).read_text()))
        except (OSError, ValueError):
            return {name for name in TRAIN_OUTPUTS if (self.aside / name).exists()}
