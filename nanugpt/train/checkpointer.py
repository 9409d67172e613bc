"""When a run saves its state, and where a run resumes from.

The state itself is the sum of the run's parts (``Trainer.state_dict``). Under
``training.strategy: ddp`` rank 0 writes ``.pt`` files (``nanugpt.checkpoint.store``);
under ``fsdp`` every rank writes its shards into step folders (``nanugpt.checkpoint.sharded``).
Resuming takes the newest checkpoint of either form, so a run changes strategy
or number of ranks and continues.

Time-based checkpoints (``training.checkpoint_every_min``) are decided on every
rank alike: each rank reads its own clock (``time_due``), and the loop ORs the
flags over ranks in the all-reduce it already does each step for the stop
signal (``nanugpt.distributed.process_group.any_rank``), so all ranks save at the same step
at no extra collective or host sync.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nanugpt.checkpoint import sharded, store
from nanugpt.checkpoint.background import BackgroundWriter, staged, synchronize_copies
from nanugpt.config.loader import flatten, get_dotted
from nanugpt.config.schema import RESUME_KEYS, Params
from nanugpt.distributed.process_group import DistInfo
from nanugpt.files.atomic import write_json
from nanugpt.files.checksum import checksum_path, read_checksum
from nanugpt.files.hashing import sha256_file

# Names the checkpoint ``last.pt`` / ``last`` is and its step, for either strategy, rewritten whenever ``last``
# moves: how a reader (the run summary, import-run) knows a folder's newest checkpoint without loading one.
LAST_MARKER = "last.json"


class Checkpointer:
    """Saves ``step-NNNNNNN.pt`` + ``last.pt`` every ``training.checkpoint_every`` steps, once
    ``training.checkpoint_every_min`` minutes of wall clock have passed since the last save (or the start), at
    the last step and when stopped by a signal, and ``best.pt`` at each new best val loss; finds the checkpoint
    to resume from. ``clock`` gives seconds (``time.monotonic``; tests pass their own)."""

    def __init__(
        self,
        folder: Path,
        params: Params,
        info: DistInfo,
        *,
        log: Callable[[str], None],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        clock: Callable[[], float] = time.monotonic,
        data_digest: str = "",
        on_saved: Callable[[dict[str, Any]], None] = lambda record: None,
    ):
        self.folder, self.params, self.info, self.log, self.clock = folder, params, info, log, clock
        self.on_saved = on_saved  # rank 0, with a checkpoint's record once it is written (from the writer's thread)
        self.data_digest = data_digest  # of the token files (meta.json): a corpus edit under the same params
        self.model, self.optimizer = model, optimizer
        self.every, self.keep_last = params.training.checkpoint_every, params.training.keep_last
        self.every_s = params.training.checkpoint_every_min * 60
        self.digest = params.digest(RESUME_KEYS)
        self.last_save = clock()
        self.last_save_wall = time.monotonic()  # for the metrics, apart from ``clock`` (which tests drive)
        self.sharded = params.training.strategy == "fsdp"  # step folders (DCP) rather than .pt files
        # where a checkpoint named by path was trained with other values of RESUME_KEYS: key -> (its, this run's)
        self.changed: dict[str, tuple[Any, Any]] = {}
        self.writer = BackgroundWriter(overlap_same_step=not self.sharded) if params.training.async_checkpoint else None
        # the background writes' collectives go over a group of their own, never mixed with training's
        self.group = writer_group() if self.writer is not None and self.sharded else None

    def model_optimizer_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model's and the optimizer's states in the form this run saves them."""
        if self.sharded:
            return sharded.model_optimizer_state(self.model, self.optimizer)
        return self.model.state_dict(), self.optimizer.state_dict()

    def time_due(self) -> bool:
        """True when this rank's clock says ``training.checkpoint_every_min`` have passed since the last save;
        always False when that is 0. The loop ORs it over ranks before passing it to ``should_save``."""
        return self.every_s > 0 and self.clock() - self.last_save >= self.every_s

    def should_save(self, step: int, final: bool, stopping: bool, time_due: bool = False) -> bool:
        """True at the steps whose state is saved; ``time_due``: ``time_due()`` of any rank."""
        return final or stopping or time_due or (self.every > 0 and step % self.every == 0)

    def save(self, step: int, state: dict[str, Any], *, blocking: bool = False) -> None:
        """Write the state of ``step`` and point ``last.pt`` (``last``) at it; the minutes to the next timed save
        start now. With ``training.async_checkpoint`` the write goes on in the background unless ``blocking``."""
        self.write(step, "step", state)
        if blocking:
            self.wait()
        self.last_save, self.last_save_wall = self.clock(), time.monotonic()

    def seconds_since_save(self) -> float:
        """Wall seconds since the last save began (or since the start)."""
        return time.monotonic() - self.last_save_wall

    def save_best(self, state: dict[str, Any]) -> None:
        """Write ``best.pt`` (``best/``)."""
        self.write(state["step"], "best", state)

    def write(self, step: int, kind: str, state: dict[str, Any]) -> None:
        """Write ``state`` as the step checkpoint (``kind`` "step") or ``best``: now, or staged and in the
        background (``nanugpt.checkpoint.background``)."""
        if self.writer is None:
            self.start_write(step, kind, state)()
        else:
            self.writer.submit(step, lambda: self.start_write(step, kind, state))

    def start_write(self, step: int, kind: str, state: dict[str, Any]) -> Callable[[], None]:
        """Start writing a checkpoint; return the rest of the write, which the background thread runs under
        ``training.async_checkpoint`` (for a ``.pt`` file: all of it, from a copy of ``state``)."""
        background = self.writer is not None
        name = f"step-{step:07d}" if kind == "step" else "best"
        path = self.folder / (name if self.sharded else f"{name}.pt")
        write_shards: Callable[[], None] = lambda: None  # noqa: E731 - nothing left to write
        if self.sharded and background:
            write_shards = sharded.save_folder_async(path, state, self.group)
        elif self.sharded:
            sharded.save_folder(path, state)
        elif background and self.info.is_main:
            state = staged(state)
            synchronize_copies()

        def finish() -> None:
            write_shards()
            if not self.info.is_main:
                return
            if kind == "best":
                if not self.sharded:
                    store.save_best(self.folder, state)
                self.drop_other_form("best")
            else:
                if self.sharded:
                    sharded.adopt_step(self.folder, path, self.keep_last)
                else:
                    store.save_checkpoint(self.folder, step, state, self.keep_last)
                self.drop_other_form("last")
                self.mark_last(step, self.sharded)
            self.on_saved(checkpoint_record(path, step=step, kind=kind, val_loss=state.get("val_loss")))

        return finish

    def wait(self) -> None:
        """Return once every background write has finished (at once without ``training.async_checkpoint``);
        raise the error of one that failed."""
        if self.writer is not None:
            self.writer.wait()

    def mark_last(self, step: int, is_folder: bool) -> None:
        """Write ``last.json`` (rank 0): the step of the checkpoint ``last`` names, and its form."""
        if self.info.is_main:
            last = "last" if is_folder else "last.pt"
            write_json(self.folder / LAST_MARKER, {"step": step, "last": last})

    def drop_other_form(self, name: str) -> None:
        """Remove ``<name>.pt`` after a sharded save, the ``<name>`` folder or link after a ``.pt`` one: where a
        run changed strategy, ``last`` / ``best`` then name only the newest checkpoint, for every stage."""
        if not self.info.is_main:
            return
        if self.sharded:
            (self.folder / f"{name}.pt").unlink(missing_ok=True)
        elif (self.folder / name).is_symlink():
            (self.folder / name).unlink()
        elif (self.folder / name).is_dir():
            shutil.rmtree(self.folder / name)

    def resume_state(self) -> dict[str, Any] | None:
        """The checkpoint ``training.resume`` names, if it can be continued: ``auto`` takes the newest loadable
        one, ``.pt`` file or step folder, trained with the same params (repointing a corrupt ``last.pt`` or a
        ``last`` at a damaged folder at it), ``never`` none. A step folder's state holds its run state and
        ``sharded_folder``, its path: ``load_model_optimizer`` reads the shards."""
        setting, device = self.params.training.resume, self.info.device
        verify = self.params.general.verify_checkpoints
        if setting == "never":
            return None
        if setting != "auto":
            path = Path(setting)
            state = (
                {**sharded.read_run_state(path, verify), "sharded_folder": path}
                if path.is_dir()
                else store.load_checkpoint(path, device, verify)
            )
            self.changed = changed_values(state.get("params", {}), self.params.to_dict(), RESUME_KEYS)
            if self.changed:
                listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in self.changed.items())
                self.log(f"{path} was trained with other values ({listed}): this run's values apply from its step on")
            return state
        return self.newest_state()

    def newest_state(self) -> dict[str, Any] | None:
        """The newest loadable checkpoint of this run's folder trained with the same params, as ``resume_state``
        gives it (``training.resume: auto``); None where there is none."""
        device, verify = self.info.device, self.params.general.verify_checkpoints
        whole = store.newest_loadable(self.folder, device, verify)
        folder = sharded.newest_complete(self.folder, verify)
        if whole is None and folder is None:
            return None
        take_sharded = whole is None or (
            folder is not None and (folder[1]["step"], self.sharded) > (whole[1]["step"], not self.sharded)
        )
        path, state = folder if take_sharded else whole  # type: ignore[misc]
        if state.get("params_digest") != self.digest:
            self.log(f"not resuming from {path}: it was trained with different params; starting from step 0")
            return None
        if state.get("data_digest", "") != self.data_digest:
            self.log(f"not resuming from {path}: it was trained on other token files (meta.json); starting from step 0")
            return None
        if self.info.is_main:
            self.point_last_at(path, take_sharded)
            self.mark_last(state["step"], take_sharded)  # last may have moved to an older, loadable checkpoint
        return {**state, "sharded_folder": path} if take_sharded else state

    def point_last_at(self, path: Path, is_folder: bool) -> None:
        """Point ``last`` (a folder link) or ``last.pt`` at ``path``, the checkpoint a resume takes, unless it does."""
        if is_folder:
            last = self.folder / "last"
            if not (last.is_dir() and last.resolve() == path.resolve()):
                sharded.point_last_at(self.folder, path)
                self.log(f"last now points at {path.name}, the newest checkpoint folder that loads")
        elif path.name != "last.pt":
            store.point_last_at(self.folder, path)
            self.log(f"last.pt now points at {path.name}, the newest checkpoint that loads")

    def load_model_optimizer(self, state: dict[str, Any]) -> None:
        """Load the model and optimizer of ``resume_state()``'s state, resharded to this run's ranks. The optimizer's
        settings (lr, betas, weight decay, ...) stay this run's: only its state (moments, step counts) is loaded."""
        settings = [
            {key: value for key, value in group.items() if key != "params"} for group in self.optimizer.param_groups
        ]
        if "sharded_folder" in state:
            sharded.load_into(state["sharded_folder"], self.model, self.optimizer)
        else:
            sharded.load_whole_into(self.model, self.optimizer, state["model"], state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(own)


def checkpoint_record(path: Path, *, step: int, kind: str, val_loss: float | None) -> dict[str, Any]:
    """A written checkpoint's line of ``OUT_DIR/logs/checkpoints.jsonl``: its step, kind ("step" or "best"), path,
    the time, the val loss it was saved with, and a sha256: the file's for a ``.pt`` file, that of
    ``checksums.json`` (which lists every file's) for a step folder."""
    if path.is_dir():
        listing = path / sharded.CHECKSUMS
        sha256 = sha256_file(listing) if listing.exists() else None
    else:
        sha256 = (read_checksum(checksum_path(path)) or {}).get("sha256")
    return {
        "step": step,
        "kind": kind,
        "path": str(path),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": sha256,
        "val_loss": val_loss,
    }


def writer_group() -> Any:
    """A gloo process group of every rank for the background writes (None in one process)."""
    return dist.new_group(backend="gloo") if dist.is_initialized() and dist.get_world_size() > 1 else None


def changed_values(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys under ``keys`` whose value in the params dict ``saved`` differs from ``current``:
    key -> (saved value, current value); a key that one side lacks has None there."""
    changed: dict[str, tuple[Any, Any]] = {}
    for key in keys:
        old, new = flatten(get_dotted(saved, key), key), flatten(get_dotted(current, key), key)
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name):
                changed[name] = (old.get(name), new.get(name))
    return changed


def rng_state() -> dict[str, Any]:
    """The random generators' states of this process."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def load_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
