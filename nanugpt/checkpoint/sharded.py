"""Sharded checkpoints (``training.strategy: fsdp``): one folder per step, written by every rank through DCP.

``torch.distributed.checkpoint`` (DCP) writes each rank's shards of the model and the optimizer, with a
``.metadata`` file that records every tensor's global shape and where its pieces are, so a folder saved by
N ranks loads on any number of ranks, and in one process without a process group. Beside them, rank 0 writes
``run.pt``: the rest of the run's state (step, schedule, RNG, params, ...), plain values loaded with
``weights_only=True``.

A run's checkpoint folder holds ``step-NNNNNNN/`` folders (the newest ``training.keep_last`` are kept),
``last``, a symbolic link to the newest, and ``best/``. A folder is written as ``.<name>.tmp`` and renamed by
rank 0 after every rank has written its part, so a folder under its own name was complete; one damaged since
(a shard missing or truncated: ``problem``; any byte changed: its ``checksums.json``) is skipped for the one
before.

DCP's ``.metadata`` is a pickle. Before DCP reads it, ``read_metadata`` reads it with an unpickler that
builds only DCP's metadata classes, torch sizes, dtypes and layouts and paths, so a folder carrying code is
refused, as ``.pt`` files are by ``weights_only=True``.

Optimizer states here are keyed by parameter names (``get_state_dict``'s form); a ``.pt`` checkpoint's,
keyed by position, is converted by ``by_name``, so a DDP checkpoint resumes under FSDP and back.

DCP is imported by the functions that read or write shards, not with this module: it pulls in
``torch.distributed.tensor``, which takes about as long to import as torch, and the stages import this module
whether or not their checkpoint is sharded.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from nanugpt.distributed.fsdp import is_sharded
from nanugpt.errors import CheckpointError
from nanugpt.files import checksum
from nanugpt.files.atomic import atomic_path, write_json
from nanugpt.files.checksum import Verify

if TYPE_CHECKING:
    from torch.distributed.checkpoint.metadata import Metadata

RUN_FILE = "run.pt"
CHECKSUMS = "checksums.json"  # each file's sha256 and size, written last, before the folder takes its name
SHARDED_KEYS = ("model", "optimizer")  # what DCP writes; every other key of a state goes to run.pt
RUN_STATE_KEYS = ("params", "step", "vocab_size")  # what any checkpoint's state holds besides its tensors


def is_main() -> bool:
    """True on rank 0, and in a process without a process group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier(group: dist.ProcessGroup | None = None) -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_initialized():
        dist.barrier(group=group)


@contextmanager
def quiet_single_process() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group: one process is a use it supports."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def model_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and optimizer's states as DCP saves them: by parameter name, sharded tensors as they are."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer)


def save_folder(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (``model`` and ``optimizer`` as ``model_optimizer_state`` gives them, plain values
    besides) into the folder ``folder``, replacing one there; every rank calls it."""
    import torch.distributed.checkpoint as dcp

    tmp = start_folder(folder)
    # returns on rank 0 once every rank has written its shards and rank 0 the .metadata that lists them
    with quiet_single_process():
        dcp.save({key: state[key] for key in SHARDED_KEYS}, checkpoint_id=tmp)
    finish_folder(tmp, folder, run_state(state))
    return folder


def save_folder_async(folder: Path, state: dict[str, Any], group: dist.ProcessGroup | None) -> Callable[[], None]:
    """Start writing ``state`` into ``folder`` as ``save_folder`` does, with DCP's ``async_save``: the shards are
    staged into host memory before it returns. Returns the rest of the work, which the caller runs on a
    background thread of every rank; its collectives (DCP's and ours) go over ``group``, a process group of
    their own, so they never interleave with the training thread's."""
    import torch.distributed.checkpoint as dcp

    from nanugpt.checkpoint.background import staged

    tmp = start_folder(folder)
    with quiet_single_process():
        written = dcp.async_save(
            {key: state[key] for key in SHARDED_KEYS}, checkpoint_id=tmp, process_group=group, no_dist=group is None
        )
    rest = staged(run_state(state))

    def finish() -> None:
        written.result()
        finish_folder(tmp, folder, rest, group)

    return finish


def run_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a state holds besides DCP's part: the content of ``run.pt``."""
    return {key: value for key, value in state.items() if key not in SHARDED_KEYS}


def start_folder(folder: Path) -> Path:
    """Make the empty temporary folder that ``folder`` is written into (removing one a killed run left); every
    rank calls it and returns once it exists."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.mkdir(parents=True)
    barrier()
    return tmp


def finish_folder(tmp: Path, folder: Path, rest: dict[str, Any], group: dist.ProcessGroup | None = None) -> None:
    """After DCP has written ``tmp``: rank 0 writes ``run.pt`` (``rest``) into it, every rank its checksums, and
    rank 0 renames it to ``folder``, replacing one there; every rank calls it (collectives over ``group``)."""
    if is_main():
        with atomic_path(tmp / RUN_FILE) as part:
            torch.save(rest, part)
    write_checksums(tmp, group)
    if is_main():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        fd = os.open(folder.parent, os.O_RDONLY)  # the rename itself on disk
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        shutil.rmtree(old, ignore_errors=True)
    barrier(group)


def write_checksums(folder: Path, group: dist.ProcessGroup | None = None) -> None:
    """Write ``checksums.json`` into the written folder ``folder``: the sha256 and size of each of its files. Every
    rank hashes the shard files it wrote (DCP names them ``__<rank>_<n>.distcp``), rank 0 the rest, and rank 0
    writes the file; every rank calls it (the gather goes over ``group``)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    mine = {path.name: checksum.file_record(path) for path in sorted(folder.glob(f"__{rank}_*.distcp"))}
    gathered: list[Any] = [None] * dist.get_world_size() if dist.is_initialized() and rank == 0 else [mine]
    if dist.is_initialized():
        dist.gather_object(mine, gathered if rank == 0 else None, dst=0, group=group)
    if rank != 0:
        return
    merged = {name: record for part in gathered for name, record in part.items()}
    for path in sorted(folder.iterdir()):
        if path.name not in merged and path.name != CHECKSUMS and path.is_file():
            merged[path.name] = checksum.file_record(path)
    write_json(folder / CHECKSUMS, merged)


def checksum_problem(folder: Path, verify: Verify) -> str | None:
    """Why the files of ``folder`` disagree with its ``checksums.json``, or None (also for a folder without one:
    written before checksums were)."""
    try:
        records = json.loads((folder / CHECKSUMS).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{CHECKSUMS} is damaged"
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        return f"{CHECKSUMS} is damaged"
    total = sum(r.get("bytes", 0) for r in records.values() if isinstance(r.get("bytes", 0), int))
    mode: Verify = verify if verify != "auto" else ("full" if total <= checksum.FULL_MAX_BYTES else "size")
    for name, record in sorted(records.items()):
        if not (folder / name).is_file():
            return f"{name} is missing"
        why = checksum.record_problem(folder / name, record, mode, CHECKSUMS)
        if why is not None:
            return f"{name}: {why}"
    return None


def save_step(folder: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``step-<step>/``, point ``last`` at it, and prune older step folders; every rank calls it."""
    path = save_folder(folder / f"step-{step:07d}", state)
    if is_main():
        adopt_step(folder, path, keep_last)
    return path


def adopt_step(folder: Path, path: Path, keep_last: int) -> None:
    """Point ``last`` at the step folder ``path`` just written and prune older step folders (rank 0)."""
    point_last_at(folder, path)
    for old in step_folders(folder)[:-keep_last]:
        shutil.rmtree(old)
    for stale in folder.glob(".step-*.tmp"):  # a killed run's unfinished folders
        shutil.rmtree(stale, ignore_errors=True)


def step_folders(folder: Path) -> list[Path]:
    """The ``step-NNNNNNN`` folders of ``folder``, oldest first."""
    return sorted(p for p in folder.glob("step-*") if p.is_dir() and not p.is_symlink())


def point_last_at(folder: Path, path: Path) -> None:
    """Make ``folder/last`` a relative symbolic link to the step folder ``path``, atomically."""
    tmp = folder / ".last.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name, target_is_directory=True)
    os.replace(tmp, folder / "last")


class MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes, torch sizes, dtypes and layouts, and paths; refuses everything else."""

    MODULES = (
        "torch.distributed.checkpoint.metadata",
        "torch.distributed.checkpoint.filesystem",
        "torch",
        "torch.serialization",
        "collections",
        "pathlib",
    )

    def find_class(self, module: str, name: str) -> Any:
        refused = pickle.UnpicklingError(f"refused: .metadata names {module}.{name}, which DCP metadata never holds")
        if module not in self.MODULES:  # before anything is imported
            raise refused
        found = super().find_class(module, name)
        allowed = (
            (module == "torch.distributed.checkpoint.metadata" and isinstance(found, type))
            or (module, name) in {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size")}
            or (module, name) in {("torch.serialization", "_get_layout"), ("collections", "OrderedDict")}
            or (module == "torch" and isinstance(found, torch.dtype))
            or (module == "pathlib" and name in ("Path", "PosixPath", "WindowsPath"))
        )
        if not allowed:
            raise refused
        return found


def read_metadata(folder: Path) -> Metadata:
    """A folder's DCP ``.metadata``, read with ``MetadataUnpickler``."""
    from torch.distributed.checkpoint.metadata import Metadata

    metadata = MetadataUnpickler(io.BytesIO((folder / ".metadata").read_bytes())).load()
    if not isinstance(metadata, Metadata):
        raise pickle.UnpicklingError(f"refused: .metadata holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


def problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete sharded checkpoint, or None when it is: ``run.pt`` and ``.metadata``
    must load and every file ``.metadata`` names must hold the bytes it says."""
    if not (folder / RUN_FILE).is_file():
        return f"no {RUN_FILE}"
    try:
        metadata = read_metadata(folder)
    except Exception as exc:  # noqa: BLE001 - whatever unpickling meets in a damaged file
        return f"no readable .metadata ({type(exc).__name__}: {exc})"
    ends: dict[str, int] = {}
    for info in metadata.storage_data.values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        size = (folder / name).stat().st_size if (folder / name).is_file() else None
        if size is None or size < end:
            return f"shard {name} is missing or truncated ({size} of {end} bytes)"
    return None


def read_run_state(folder: Path, verify: Verify = "auto") -> dict[str, Any]:
    """A complete, intact folder's ``run.pt`` (``weights_only=True``), its files checked against
    ``checksums.json`` (``verify``: ``nanugpt.files.checksum``); a CheckpointError naming what is wrong."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    why = checksum_problem(folder, verify) or problem(folder)
    if why is not None:
        raise CheckpointError(f"{folder}: incomplete or damaged sharded checkpoint: {why}")
    try:
        state = torch.load(folder / RUN_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load meets in a damaged file
        raise CheckpointError(f"{folder}/{RUN_FILE}: unreadable, truncated or corrupt ({first_line(exc)})") from None
    if not isinstance(state, dict) or not set(RUN_STATE_KEYS) <= state.keys():
        raise CheckpointError(f"{folder}/{RUN_FILE}: not a nanuGPT run state")
    return state


def first_line(exc: BaseException) -> str:
    """An exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def newest_complete(folder: Path, verify: Verify = "auto") -> tuple[Path, dict[str, Any]] | None:
    """The newest complete step folder of ``folder`` with its run state; damaged ones are reported and skipped."""
    for path in reversed(step_folders(folder)):
        try:
            return path, read_run_state(path, verify)
        except CheckpointError as exc:
            print(f"warning: {exc}; trying an older checkpoint", flush=True)
    return None


def load_into(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a folder's model and optimizer into ``model`` and ``optimizer``, resharded to this job's ranks
    (or whole, for an unsharded model); every rank calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with quiet_single_process():
        dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_model(folder: Path, model: torch.nn.Module) -> None:
    """Load a folder's model weights into an unsharded ``model`` in this process (no process group needed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    with quiet_single_process():
        dcp.load(state, checkpoint_id=folder)
    set_model_state_dict(model, state["model"])


def load_whole_into(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any], optimizer_state: dict
) -> None:
    """Load a ``.pt`` checkpoint's whole states (every rank holds them) into ``model`` and ``optimizer``: as they
    are for an unsharded model, each rank taking its shards for a sharded one."""
    if not is_sharded(model):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=by_name(model, optimizer, optimizer_state),
        options=StateDictOptions(full_state_dict=True),
    )


def by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """``optimizer.state_dict()``'s form (parameters numbered in group order) keyed by parameter names instead.

    ``optimizer`` is built like the one that saved ``state`` (the same groups of the same parameters), so the
    n-th parameter of its groups is the n-th of the saved ones.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups, start = [], 0
    for group in state["param_groups"]:
        count = len(group["params"])
        groups.append({**group, "params": order[start : start + count]})
        start += count
    return {
        "state": {order[index]: value for index, value in state["state"].items()},
        "param_groups": groups,
    }
