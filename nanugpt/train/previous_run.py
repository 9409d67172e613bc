"""The outputs of an earlier run in ``OUT_DIR``, kept until a new run has proven itself.

A run that starts from step 0 where another run left its outputs moves them
into ``OUT_DIR/.previous-run/`` (renames: atomic, no copy). Once the new run
has saved a complete checkpoint of finite values, they are deleted; if it
fails before that, they are moved back, so a failed run loses nothing. A run
killed outright (SIGKILL, node failure) before that point leaves them aside:
the next run moves them back before it decides anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# What the train stage writes into OUT_DIR for one run (evaluate, generate and export write the rest).
# logs/ is not here: every run appends to it, so it holds the earlier run's lines already.
TRAIN_OUTPUTS = ("checkpoints", "plots", "dvclive", "tensorboard", "run_info.json", "train_summary.json")


class PreviousRun:
    """Moves the train outputs of ``out_dir`` aside, back, or away."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.aside = out_dir / ".previous-run"

    def recover(self) -> bool:
        """Move back outputs that an attempt killed before its first checkpoint left aside; True if there were."""
        if not self.aside.is_dir():
            return False
        self.restore()
        return True

    def set_aside(self) -> list[str]:
        """Move the train outputs present in ``out_dir`` aside; return their names."""
        present = [name for name in TRAIN_OUTPUTS if (self.out_dir / name).exists()]
        if present:
            self.aside.mkdir(parents=True)
            for name in present:
                os.replace(self.out_dir / name, self.aside / name)
        return present

    def restore(self) -> None:
        """Put the outputs set aside back in place of whatever this run wrote."""
        if not self.aside.is_dir():
            return
        for name in TRAIN_OUTPUTS:
            new = self.out_dir / name
            if new.is_dir():
                shutil.rmtree(new)
            elif new.exists():
                new.unlink()
            if (self.aside / name).exists():
                os.replace(self.aside / name, new)
        self.aside.rmdir()

    def discard(self) -> None:
        """Delete the outputs set aside: this run has replaced them."""
        shutil.rmtree(self.aside, ignore_errors=True)
