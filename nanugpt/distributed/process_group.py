"""Process-group set-up for one process, ``torchrun`` on one node, or ``srun torchrun`` on many.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them this
is a single process. The backend is NCCL on CUDA and gloo on CPU; each
process uses the GPU of its local rank.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from nanugpt.distributed.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    # Host name -> the ranks running on it (every node of a multi-node job), for run_info.json.
    hosts: dict[str, list[int]] = field(default_factory=lambda: {socket.gethostname(): [0]})

    @property
    def is_main(self) -> bool:
        """True on the one process that logs and writes (rank 0)."""
        return self.rank == 0


@contextmanager
def process_group(device_type: str) -> Iterator[DistInfo]:
    """Join the job's process group (when launched by torchrun) and leave it on exit, also on error."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_type, local_rank)
    if world_size == 1:
        yield DistInfo(0, 0, 1, device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
    )
    try:
        yield DistInfo(rank, local_rank, world_size, device, ranks_by_host(world_size))
    finally:
        dist.destroy_process_group()


def ranks_by_host(world_size: int) -> dict[str, list[int]]:
    """Every process's host name, gathered from all ranks: ``{host: [ranks on it]}`` (one collective)."""
    names: list[str | None] = [None] * world_size
    dist.all_gather_object(names, socket.gethostname())
    hosts: dict[str, list[int]] = {}
    for rank, name in enumerate(names):
        hosts.setdefault(str(name), []).append(rank)
    return hosts


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``t`` over all processes (``t`` itself for one process)."""
    if info.world_size == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def any_rank(flags: tuple[bool, ...], info: DistInfo) -> tuple[bool, ...]:
    """Each flag True on every process when it is True on any (so all ranks stop, or save, at the same step):
    one all-reduce for all the flags."""
    if info.world_size == 1:
        return flags
    t = torch.tensor([float(flag) for flag in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def barrier(info: DistInfo) -> None:
    """Wait until every process got here (nothing for one process)."""
    if info.world_size > 1:
        dist.barrier()
