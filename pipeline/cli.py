"""The command line shared by every stage: ``python -m stages.<name> [PARAMS_FILE] [--section.key value ...]``.

``run_command`` is the one error path of every command in ``pipeline/`` and ``stages/``: invalid params
print one line per problem and exit 2; any other user error prints one ``error: ...`` line and exits 1.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nanugpt.config.params import ParamsError
from nanugpt.errors import UserError
from nanugpt.files.atomic import disk_full
from pipeline import interrupt, paths
from pipeline.console_log import env_rank
from pipeline.schema import PipelineParams, load


def parse_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Split ``[PARAMS_FILE] [--section.key value ...]`` into the file and the overrides."""
    argv = list(argv)
    if argv and not argv[0].startswith("--"):
        return argv[0], argv[1:]
    return "params.yaml", argv


def run_command(body: Callable[[], int | None]) -> int:
    """Run a command's body and return its exit code: 0 (or what it returns), 2 for bad params, 1 for user errors,
    130 for Ctrl-C.

    No traceback reaches the user for their own mistakes: ``ParamsError`` prints its problems, one per line,
    and ``UserError`` prints ``error: <message>``, both on stderr. Under torchrun only rank 0 prints them:
    every rank reads the same params and data and fails the same way (the exit code still says it failed).
    """
    interrupt.raise_on_signal()  # the work starts: Ctrl-C unwinds it, removing what it was writing
    try:
        code = body()
    except ParamsError as exc:
        report("\n".join(exc.problems))
        return 2
    except UserError as exc:
        report(f"error: {exc}")
        return 1
    except OSError as exc:
        full = disk_full(exc, Path(exc.filename) if isinstance(exc.filename, str) else paths.out_dir())
        if full is None:
            raise
        report(f"error: {full}")  # a file appended in place (a metrics table, a log): the file system is full
        return 1
    except KeyboardInterrupt:  # Ctrl-C where ``interrupt.install_when_run`` did not install its handler
        report(interrupt.message(signal.SIGINT))
        return 128 + signal.SIGINT
    return code or 0


RANK_0_GRACE_S = 5.0


def report(message: str) -> None:
    """Print a user error on stderr, on rank 0 alone when there are several processes.

    Another rank waits up to ``RANK_0_GRACE_S`` before it exits: torchrun stops every rank as soon as one fails,
    and a rank that failed first would have rank 0 stopped before it printed the message.
    """
    if env_rank() == 0:
        print(message, file=sys.stderr, flush=True)
    else:
        time.sleep(RANK_0_GRACE_S)


def stage_main(argv: Sequence[str] | None, doc: str, run: Callable[[PipelineParams], object]) -> int:
    """Load and validate params, then call ``run``, through ``run_command``; ``-h`` prints ``doc``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(doc.strip())
        return 0
    path, overrides = parse_argv(argv)

    def body() -> None:
        run(load(path, overrides))

    return run_command(body)
