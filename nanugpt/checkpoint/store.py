"""Checkpoints: tensors and plain values only, written atomically, loaded with ``weights_only=True``.

A run's checkpoint folder holds ``step-NNNNNNN.pt`` files (the newest
``training.keep_last`` are kept), ``last.pt``, a hard link to the newest
one, and ``best.pt``, the state at the lowest val loss. Resuming tries
``last.pt`` and falls back to older step files when a file is truncated or
corrupt. Each file has its checksum beside it (``step-NNNNNNN.pt.sha256``,
``best.pt.sha256``, ``last.pt.sha256``), checked on every load.
A sharded run (``training.strategy: fsdp``) writes step folders
instead (``nanugpt.checkpoint.sharded``): its ``last`` and ``best`` folders stand in for
``last.pt`` and ``best.pt`` wherever a checkpoint is read, in one process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nanugpt.checkpoint import sharded
from nanugpt.config.params import params_from_checkpoint
from nanugpt.config.schema import Params
from nanugpt.config.token_meta import TokenMeta
from nanugpt.errors import CheckpointError as CheckpointError  # defined with the other errors, imported from here
from nanugpt.files import checksum
from nanugpt.files.atomic import atomic_path
from nanugpt.files.checksum import HashingWriter, Verify, drop_checksum, write_checksum


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``step-<step>.pt``, point ``last.pt`` at it, and prune older step files."""
    path = folder / f"step-{step:07d}.pt"
    save_state(path, state)
    point_last_at(folder, path)
    for old in sorted(folder.glob("step-*.pt"))[:-keep_last]:
        old.unlink()
        drop_checksum(old)
    return path


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, hashed as it is written, then its checksum
    (``nanugpt.files.checksum``)."""
    drop_checksum(path)
    needed = sum(t.numel() * t.element_size() for t in tensors_of(state))
    with atomic_path(path, needed) as tmp, open(tmp, "wb") as file:
        writer = HashingWriter(file)
        torch.save(state, writer)
    write_checksum(path, writer.digest.hexdigest(), writer.size)


def tensors_of(tree: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a state's nested dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from tensors_of(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from tensors_of(value)


def point_last_at(folder: Path, path: Path) -> None:
    """Make ``folder/last.pt`` a hard link to the step file ``path``, atomically, with a copy of the step file's
    checksum beside it (``last.pt.sha256``: a copy of the folder, which unlinks the two files, keeps it right)."""
    last = folder / "last.pt"
    drop_checksum(last)
    with atomic_path(last) as tmp:
        os.link(path, tmp)
    if checksum.checksum_path(path).exists():
        with atomic_path(checksum.checksum_path(last)) as tmp:
            shutil.copyfile(checksum.checksum_path(path), tmp)


def save_best(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``best.pt``: the checkpoint with the lowest val loss so far (``state['best_val_loss']``)."""
    path = folder / "best.pt"
    save_state(path, state)
    return path


REQUIRED_KEYS = ("model", *sharded.RUN_STATE_KEYS)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", verify: Verify = "auto") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code in it is ever run), first checked against its
    checksum (``verify``: ``nanugpt.files.checksum``); any file that is not an intact checkpoint is a
    ``CheckpointError`` naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint" + (" file (it is a folder)" if path.is_dir() else ""))
    why = checksum.problem(path, verify, kept=checksum_file(path))
    if why is not None:
        raise CheckpointError(f"{path}: damaged: {why}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; anything else is not a checkpoint of ours
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt (not a checkpoint: no zip archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(f"{path}: refused: not a plain tensors-and-values checkpoint ({exc})") from None
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({sharded.first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - whatever torch.load meets in a damaged or foreign file
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({sharded.first_line(exc)})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a nanuGPT checkpoint (it has no {', '.join(missing)})")
    return state


def checksum_file(path: Path) -> Path:
    """Where the checksum of ``path`` is kept: beside it, or for a ``last.pt`` without one (a save killed between
    the link and its checksum) beside the step file it is."""
    own = checksum.checksum_path(path)
    if own.exists() or path.name != "last.pt":
        return own
    for step_file in path.parent.glob("step-*.pt"):
        if os.path.samefile(step_file, path):
            return checksum.checksum_path(step_file)
    return own


def newest_loadable(
    folder: Path, map_location: str | torch.device = "cpu", verify: Verify = "auto"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint of ``folder`` that loads, with the problems met on the way reported."""
    candidates = [folder / "last.pt", *sorted(folder.glob("step-*.pt"), reverse=True)]
    for path in candidates:
        if not path.exists():
            continue
        try:
            return path, load_checkpoint(path, map_location, verify)
        except CheckpointError as exc:
            print(f"warning: {exc}; trying an older checkpoint", flush=True)
    return None


def resolve(ckpt_path: Path) -> Path:
    """``ckpt_path``, or for a missing ``last.pt`` / ``best.pt`` the sharded run's ``last`` / ``best`` folder."""
    if not ckpt_path.exists() and ckpt_path.suffix == ".pt" and ckpt_path.with_suffix("").is_dir():
        return ckpt_path.with_suffix("")
    return ckpt_path


def load_trained_model(
    ckpt_path: Path, device: torch.device, verify: Verify = "auto"
) -> tuple[torch.nn.Module, Params, dict[str, Any]]:
    """Rebuild the model of a checkpoint (a ``.pt`` file or a sharded folder, see ``resolve``) with its weights;
    return it with the params it was trained with and the checkpoint's state (a folder's: without the model)."""
    ckpt_path = resolve(ckpt_path)
    is_folder = ckpt_path.is_dir()
    state = sharded.read_run_state(ckpt_path, verify) if is_folder else load_checkpoint(ckpt_path, device, verify)
    trained = params_from_checkpoint(state["params"])
    options = trained.model
    if getattr(options, "pretrained", None):  # the weights are in the checkpoint: don't read the start folder again
        options = options.model_copy(update={"pretrained": None})
    model = options.build(state["vocab_size"]).to(device)
    if is_folder:
        sharded.load_model(ckpt_path, model)
    else:
        model.load_state_dict(state["model"])
    model.eval()
    return model, trained, state


def check_vocab(state: dict[str, Any], meta: TokenMeta, data_dir: Path) -> None:
    """Refuse a checkpoint whose vocabulary differs from the token files' (trained on other data)."""
    if state["vocab_size"] != meta.vocab_size:
        raise CheckpointError(
            f"the checkpoint has a vocabulary of {state['vocab_size']} tokens, {data_dir}/meta.json "
            f"{meta.vocab_size}: it was trained on other data or another tokenizer"
        )
