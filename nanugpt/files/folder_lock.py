"""One writer per output folder: advisory locks that the kernel drops when their process ends.

A train rewrites checkpoints, so it holds ``OUT_DIR/.lock`` alone; evaluate, generate and export read them and
write files of their own, so each holds ``.lock`` shared (with each other, not with a train) and its own
``.lock-<stage>`` alone (one evaluate at a time). A lock is ``flock``: released when the holder exits, however
it exits, so a stale lock never blocks. The holder writes its PID, host and stage into the file it holds alone,
for the message of whoever finds the folder taken, and empties it when it lets go.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from nanugpt.errors import UserError

EXCLUSIVE_STAGE = "train"
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class FolderInUseError(UserError):
    """Another process holds the output folder for a stage that cannot run beside this one."""


@contextmanager
def hold_out_dir(out_dir: Path, stage: str) -> Iterator[None]:
    """Hold ``out_dir`` for ``stage`` until the block ends, or fail at once in one line naming the holder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        alone = stage == EXCLUSIVE_STAGE
        main = stack.enter_context(locked(out_dir / ".lock", exclusive=alone))
        if main is None:
            raise FolderInUseError(in_use(out_dir, stage, holders(out_dir)))
        own = main
        if not alone:
            own = stack.enter_context(locked(out_dir / f".lock-{stage}", exclusive=True))
            if own is None:
                raise FolderInUseError(in_use(out_dir, stage, [read_holder(out_dir / f".lock-{stage}")]))
        describe_holder(own, stage)
        try:
            yield
        finally:
            own.seek(0)
            own.truncate()  # an empty lock file between runs: the folder's files do not change from run to run


@contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[IO[str] | None]:
    """Yield the open lock file ``path`` once locked (``exclusive``, else shared), or None where another process
    holds it. Where the file system has no locks (some network mounts) the file is yielded unlocked, with a
    warning on stderr."""
    with open(path, "a+") as file:  # closing the file releases its lock
        try:
            fcntl.flock(file, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                raise
            warning = f"warning: {path.parent} cannot be locked ({exc.strerror}): two runs into it are not refused"
            print(warning, file=sys.stderr)
        yield file


def describe_holder(file: IO[str], stage: str) -> None:
    """Write who holds ``file``: this process's PID, host and ``stage``, and since when."""
    file.seek(0)
    file.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "since": time.strftime("%H:%M:%S")}
    file.write(json.dumps(holder))
    file.flush()


def read_holder(path: Path) -> dict[str, object]:
    """What ``describe_holder`` wrote into ``path``; empty where it is unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def holders(out_dir: Path) -> list[dict[str, object]]:
    """Who holds ``out_dir`` now: the stages holding their own ``.lock-<stage>``, else the train of ``.lock``."""
    readers = []
    for path in sorted(out_dir.glob(".lock-*")):
        with locked(path, exclusive=False) as free:  # a shared probe stops no other probe
            if free is None:
                readers.append(read_holder(path))
    return readers or [read_holder(out_dir / ".lock")]


def in_use(out_dir: Path, stage: str, found: list[dict[str, object]]) -> str:
    """The one line for a ``stage`` that finds ``out_dir`` held by ``found``."""
    named = [
        f"{h.get('stage', 'a stage')} (pid {h.get('pid', '?')} on {h.get('host', '?')}, since {h.get('since', '?')})"
        for h in found
    ]
    return (
        f"{out_dir} is in use by {', '.join(named)}: {stage} cannot run beside it; wait for it to end, "
        "or set OUT_DIR to another folder"
    )
