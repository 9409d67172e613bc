"""Ctrl-C or SIGTERM in a command (``python -m stages.<name>``, ``python -m pipeline.<tool>``): one line on stderr
and exit code 128 + the signal (130, 143), never a traceback.

Python turns SIGINT into a ``KeyboardInterrupt`` whose traceback reaches the user wherever it lands (importing
torch, building a model, a pool of tokenize workers), and SIGTERM kills at once, leaving the temporary files of
half-written artifacts. Two handlers replace them:

- ``install_when_run``, called by the packages' ``__init__`` before a command's own imports (and only where the
  package is run with ``-m``: importing it from a test or a notebook leaves their Ctrl-C alone), installs
  ``exit_now``: while a command imports, nothing is written yet, and an exception raised there can be swallowed
  by a library's bare ``except``, so the process ends at once.
- ``raise_on_signal``, called by ``cli.run_command`` when the command's work starts, swaps in ``stop``, which
  raises ``SystemExit``: every ``finally`` and ``except BaseException`` on the way out runs (a temporary file is
  removed, set-aside outputs are put back).

A stage's own handler (the train loop's, which saves a checkpoint first) replaces them while that stage runs.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from pipeline.console_log import env_rank

HANDLED = (signal.SIGINT, signal.SIGTERM)
_installed_by: list[int] = []  # the PID that installed the handlers: a forked child that inherits them is quiet


def message(signum: int) -> str:
    """The one line a command prints when ``signum`` stops it."""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    return f"interrupted ({name}): stopped; files being written were discarded, complete ones kept"


def say(signum: int) -> None:
    """Print ``message`` on stderr: in the process that installed the handlers, on rank 0 alone under torchrun."""
    if env_rank() == 0 and os.getpid() in _installed_by:
        print(message(signum), file=sys.stderr, flush=True)


def exit_now(signum: int, frame: FrameType | None) -> NoReturn:
    """The handler while a command imports: the line, and the process ends."""
    say(signum)
    os._exit(128 + signum)


def stop(signum: int, frame: FrameType | None) -> NoReturn:
    """The handler while a command works: the line and ``SystemExit(128 + signum)``."""
    say(signum)
    raise SystemExit(128 + signum)


def install_when_run() -> None:
    """Install ``exit_now`` for SIGINT and SIGTERM when the calling package is being run with ``python -m``."""
    if sys.argv[:1] != ["-m"]:
        return
    _installed_by.append(os.getpid())
    for signum in HANDLED:
        if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(signum, exit_now)


def raise_on_signal() -> None:
    """From now on, SIGINT and SIGTERM raise ``SystemExit`` (where ``install_when_run`` installed its handler)."""
    for signum in HANDLED:
        if signal.getsignal(signum) is exit_now:
            signal.signal(signum, stop)
