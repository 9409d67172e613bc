"""A command's console lines, also appended to a log file: ``OUT_DIR/logs/<stage>.log`` for the stages.

``tee_console(path)`` wraps ``sys.stdout`` and ``sys.stderr`` for the duration of a command. Every process
appends to the same file (one ``write`` per line, in append mode, so lines of different ranks do not
mix). On ranks other than 0 each line, on the console and in the file, starts with ``[rank N]``, so a
warning of one rank is told apart from the others'. Progress bars (lines drawn with ``\\r``) stay on the
console only. Where the console already is that file (Snakemake's rules run ``stage > log 2>&1`` into
the same path), nothing more is written to it. An exception that escapes the command is written through
the same streams (so its traceback reaches the file, prefixed) and becomes exit status 1, as Python's own
handler would give.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO


class LogFile:
    """The shared log file, opened on the first line written (a command that prints nothing creates nothing)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self._file: IO[str] | None = None
        self._broken = not enabled

    def write_line(self, line: str) -> None:
        """Append one whole line (with its newline)."""
        if self._broken:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", buffering=1)
            self._file.write(line)
        except OSError:
            # An OUT_DIR that cannot be written is reported by the stage's own check (pipeline.paths.writable)
            # in its one line; the console goes on without the file.
            self._broken = True

    def close(self) -> None:
        """Close the file if it was opened."""
        if self._file is not None:
            self._file.close()


class TeeStream:
    """A text stream that writes to ``console`` and, line by line, to ``log``; ``prefix`` starts every line."""

    def __init__(self, console: TextIO, log: LogFile, prefix: str):
        self.console, self.log, self.prefix = console, log, prefix
        self._partial = ""  # the current line's text not yet in the log
        self._line_start = True  # the console is at the start of a line

    def write(self, text: str) -> int:
        """Write ``text``; return its length (as ``TextIO.write`` does)."""
        if self.prefix:
            self.console.write(self._prefixed(text))
        else:
            self.console.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if "\r" not in line:  # a progress bar's redraws are for the terminal only
                self.log.write_line(f"{self.prefix}{line}\n")
        return len(text)

    def finish(self) -> None:
        """Put a last line that has no newline in the log."""
        if self._partial and "\r" not in self._partial:
            self.log.write_line(f"{self.prefix}{self._partial}\n")
        self._partial = ""

    def _prefixed(self, text: str) -> str:
        pieces = []
        for piece in text.splitlines(keepends=True):
            pieces.append(f"{self.prefix}{piece}" if self._line_start else piece)
            self._line_start = piece.endswith("\n")
        return "".join(pieces)

    def flush(self) -> None:
        """Flush the console (the log is line-buffered)."""
        self.console.flush()

    def __getattr__(self, name: str) -> Any:
        # the rest of a text stream (isatty, fileno, encoding, ...) is the console's: progress bars and
        # libraries that wrap the console (W&B) ask for it
        return getattr(self.console, name)


# Set by the launcher when its own console is the log file: a rank's console then reaches that file through
# torchrun or srun (a pipe, which ``is_file`` cannot see through), and writing it directly too would double it.
CONSOLE_IS_LOG_ENV = "NANUGPT_CONSOLE_IS_LOG"


def is_file(stream: TextIO, path: Path) -> bool:
    """True when ``stream`` writes into the file at ``path`` (a shell redirected it there)."""
    try:
        return path.exists() and os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
    except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptor: a test's capture, a StringIO
        return False


def env_rank() -> int:
    """This process's rank as torchrun (``RANK``) or Slurm (``SLURM_PROCID``) sets it; 0 when neither does."""
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


@contextmanager
def tee_console(path: Path, rank: int | None = None) -> Iterator[None]:
    """Append the console lines written inside this block to ``path`` (``rank``: ``env_rank()`` by default)."""
    rank = env_rank() if rank is None else rank
    prefix = f"[rank {rank}] " if rank else ""
    saved = sys.stdout, sys.stderr
    told = os.environ.get(CONSOLE_IS_LOG_ENV) == str(path.resolve())
    already = told or any(is_file(stream, path) for stream in saved)
    log = LogFile(path, enabled=not already)
    tees = TeeStream(saved[0], log, prefix), TeeStream(saved[1], log, prefix)
    sys.stdout, sys.stderr = tees  # type: ignore[assignment]
    try:
        yield
    except Exception:
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        for tee in tees:
            tee.finish()
            tee.flush()
        sys.stdout, sys.stderr = saved
        log.close()
