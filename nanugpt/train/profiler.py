"""A ``torch.profiler`` window over a few optimizer steps, switched on by ``training.profile``.

The train loop calls ``step(step)`` after each optimizer step (``step``: the step just completed, 1 for the
first) and ``close()`` when it ends, also on error. With ``start_step: S`` and ``steps: N`` the window opens
when step S completes and closes when step S + N does, so it records optimizer steps S + 1 to S + N, each
one a ``ProfilerStep#<step>`` range from the ``step()`` call before it to its own: the whole iteration, the
loop's bookkeeping between the calls (metrics, evaluation, checkpoints) included. Steps 1 to S warm up
(allocator, kernel choices, compilation).

At the window's end (or at ``close()``, for a window that ``training.max_steps``, a stop or an error cut short:
then the trace holds the steps completed and ``ProfilerStep#<L + 1>``, what there was of the next one) each
profiling rank writes, atomically:

- ``OUT_DIR/profile/trace-rank<R>-step<L>.json``: a Chrome trace (``chrome://tracing``, ui.perfetto.dev),
  ``L`` the last step it holds whole; with ``memory`` it has ``[memory]`` allocation events too;
- with ``memory`` on CUDA, ``OUT_DIR/profile/memory-rank<R>-step<L>.pickle``: the allocator's history, a
  snapshot for pytorch.org/memory_viz.

A run that resumes at or after step S does not profile (its window is behind it). Off, or on a rank that
does not profile (``ranks: main``), ``step()`` returns at its first line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile

from nanugpt.config.schema import ProfileParams
from nanugpt.distributed.process_group import DistInfo
from nanugpt.files.atomic import atomic_path

MEMORY_HISTORY_ENTRIES = 100_000  # allocator events kept for the CUDA memory snapshot (the newest ones)


def _record(_: int) -> ProfilerAction:
    """The profiler's schedule: record every step until stopped (a schedule makes it mark ``ProfilerStep#``)."""
    return ProfilerAction.RECORD


class StepProfiler:
    """Profiles optimizer steps ``options.start_step + 1`` to ``options.start_step + options.steps`` of a run."""

    def __init__(self, options: ProfileParams, out_dir: Path, info: DistInfo, log: Callable[[str], None]):
        self.options, self.folder, self.info, self.log = options, Path(out_dir) / "profile", info, log
        # False once there is nothing left to do: off, a rank that does not profile, or the window done
        self.on = options.enabled and (info.is_main or options.ranks == "all")
        self.cuda = info.device.type == "cuda"
        self.last_step = options.start_step + options.steps  # the window's last step
        self.profiler: profile | None = None
        self.done = options.start_step  # the last step the open window holds whole

    def step(self, step: int) -> None:
        """Called after optimizer step ``step``: opens the window after ``start_step``, closes it after its last."""
        if not self.on:
            return
        if self.profiler is None:
            if step == self.options.start_step:
                self._open(step)
            elif step > self.options.start_step:
                self.on = False  # resumed at or after start_step: the window is behind this run
            return
        self.done = step
        if step >= self.last_step:
            self._finish()
        else:
            self.profiler.step()  # ends ProfilerStep#<step>, begins ProfilerStep#<step + 1>

    def close(self) -> None:
        """End of the run (in the loop's ``finally``): write a window still open with the steps it recorded.

        A failure to write is a log line, not an error, so that it never hides the error that ended the run.
        """
        if self.profiler is None:
            self.on = False
            return
        try:
            self._finish()
        except Exception as exc:  # noqa: BLE001 - a trace is a diagnostic; the run's own outcome stands
            self.log(f"profile: could not write the trace of rank {self.info.rank}: {exc}")

    def _open(self, step: int) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.profiler = profile(
            activities=activities,
            schedule=_record,
            record_shapes=True,
            profile_memory=self.options.memory,
            with_stack=False,
        )
        self.profiler.step_num = step + 1  # the ProfilerStep# labels are the optimizer steps
        if self.cuda and self.options.memory:
            torch.cuda.memory._record_memory_history(max_entries=MEMORY_HISTORY_ENTRIES)
        self.profiler.start()

    def _finish(self) -> None:
        """Stop the open window and write its files; ``step()`` does nothing from then on."""
        profiler, self.profiler, self.on = self.profiler, None, False
        assert profiler is not None
        rank, last = self.info.rank, self.done
        try:
            if self.cuda:
                torch.cuda.synchronize(self.info.device)  # the window's last kernels finish inside it
            profiler.stop()
            trace = self.folder / f"trace-rank{rank}-step{last}.json"
            with atomic_path(trace) as tmp:
                profiler.export_chrome_trace(os.fspath(tmp))
            written = [trace]
            if self.cuda and self.options.memory:
                snapshot = self.folder / f"memory-rank{rank}-step{last}.pickle"
                with atomic_path(snapshot) as tmp:
                    torch.cuda.memory._dump_snapshot(os.fspath(tmp))
                written.append(snapshot)
        finally:
            if self.cuda and self.options.memory:
                torch.cuda.memory._record_memory_history(enabled=None)
        first = self.options.start_step + 1
        steps = f"step {first}" if last == first else f"steps {first}-{last}" if last > first else "part of a step"
        viewers = "chrome://tracing or ui.perfetto.dev" + (", pytorch.org/memory_viz" if len(written) > 1 else "")
        self.log(f"profile: {steps} of rank {rank} written to {' and '.join(map(str, written))} ({viewers})")
