"""``torchrun`` as the launcher runs it: one line per failed rank instead of tracebacks, and the rank's exit code.

    python -m pipeline.torchrun [torchrun options] -m stages.train params.yaml

The options are torchrun's own (``torch.distributed.run``). What differs:

* a rank that fails has already printed its error (a user error on rank 0 only: every rank hits the same;
  a crash on each rank that crashed, with its ``[rank N]`` prefix); torchrun would print a
  ``ChildFailedError`` traceback after it. Here one line names the ranks that failed on this host and
  their exit codes, and the first failure's exit code becomes this process's, so a stop on SIGUSR1
  (exit 138) or a params error (exit 2) reaches ``srun`` and the launcher unchanged;
* the agent forwards SIGUSR1 too (Slurm's signal ahead of a time limit), with the stop signals it
  forwards anyway, to the ranks, which save a checkpoint and stop.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Sequence

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from nanugpt.distributed.signals import STOP_SIGNALS

FORWARDED_SIGNALS = ",".join(sorted({"SIGHUP", "SIGQUIT", *(signal.Signals(s).name for s in STOP_SIGNALS)}))


def exit_code(code: int) -> int:
    """A process's exit status as a shell reports it: 128 + N for death by signal N."""
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with ``argv``; on failure, one line per failed rank and the first failure's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args([f"--signals-to-handle={FORWARDED_SIGNALS}", *argv])
    try:
        run(args)
    except ChildFailedError as failed:
        codes = ", ".join(f"rank {r} with {exit_code(f.exitcode)}" for r, f in sorted(failed.failures.items()))
        print(f"torchrun: on {socket.gethostname()}, {codes}", file=sys.stderr, flush=True)
        return exit_code(failed.get_first_failure()[1].exitcode)
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
