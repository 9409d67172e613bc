"""Checkpoints written while training goes on (``training.async_checkpoint``).

A save is two halves. ``staged`` copies the state off the training tensors, on the training thread: the only
time training waits (on CUDA into pinned host memory, so the copy is a DMA). ``BackgroundWriter`` then writes
the copy on a thread of its own, through the same atomic, checksummed writes as a blocking save, so a process
killed mid-write leaves a temporary name behind, never a checkpoint that looks complete, and the previous
checkpoint stays as it was until the new one has its name.

One write runs at a time, in the order submitted. A save waits for the writes of every earlier save point (the
writes of one step, ``best.pt`` and the step file, queue behind each other without making training wait), so at
most one step's staged copy is held besides the one being written. Sharded checkpoints wait for every earlier
write, those of the same step too (``overlap_same_step`` false): DCP's ``async_save`` starts its collectives at
once, and two of them in flight on one process group would interleave. An error in a background write is raised by
the training thread at its next ``submit`` or ``wait``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch


def staged(tree: Any, copies: dict[tuple[Any, ...], torch.Tensor] | None = None) -> Any:
    """A copy of a state's nested dicts, lists and tuples whose tensors are copies on the host (CUDA tensors in
    pinned memory), so the training thread may change the originals at once. Tensors that are one view of one
    storage (tied weights: the embedding and the head) stay one tensor, written once, as ``torch.save`` would."""
    copies = {} if copies is None else copies
    if isinstance(tree, torch.Tensor):
        tensor = tree.detach()
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.shape,
            tensor.stride(),
            tensor.dtype,
        )
        if key not in copies:
            if tensor.device.type == "cuda":
                copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                copies[key] = copy.copy_(tensor, non_blocking=True)
            else:
                copies[key] = tensor.clone()
        return copies[key]
    if isinstance(tree, dict):
        return {key: staged(value, copies) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(staged(value, copies) for value in tree)
    return tree


def synchronize_copies() -> None:
    """Wait for ``staged``'s device-to-host copies (none to wait for without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class BackgroundWriter:
    """One thread that runs checkpoint writes in the order submitted (see the module docstring)."""

    def __init__(self, *, overlap_same_step: bool = True) -> None:
        self.overlap_same_step = overlap_same_step
        self._jobs: deque[tuple[int, Callable[[], None]]] = deque()
        self._condition = threading.Condition()
        self._running_point: int | None = None  # the save point of the job being run
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, point: int, start: Callable[[], Callable[[], None]]) -> None:
        """Once the writes of earlier save points (``point``: the step) have finished, call ``start`` here, on the
        training thread (it stages the state), and queue the write it returns; an error of an earlier write is
        raised here instead."""
        if self.overlap_same_step:
            self._wait(lambda: all(p >= point for p, _ in self._jobs) and self._running_point in (None, point))
        else:
            self._wait(lambda: not self._jobs and self._running_point is None)
        job = start()
        with self._condition:
            self._jobs.append((point, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def wait(self) -> None:
        """Return once every submitted job has finished; raise the error of one that failed."""
        self._wait(lambda: not self._jobs and self._running_point is None)

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._condition:
            return bool(self._jobs) or self._running_point is not None

    def _wait(self, done: Callable[[], bool]) -> None:
        with self._condition:
            while self._error is None and not done():
                self._condition.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._jobs:
                    self._condition.wait()
                point, job = self._jobs.popleft()
                self._running_point = point
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which raises it
                with self._condition:
                    self._error = exc
                    self._jobs.clear()  # later writes would point last.pt past a checkpoint that failed
            with self._condition:
                self._running_point = None
                self._condition.notify_all()
