"""Checkpoints: tensors and plain values only, written atomically, loaded with ``weights_only=True``.

A run's checkpoint folder holds ``step-NNNNNNN.pt`` files (the newest
``training.keep_last`` are kept), ``last.pt``, a hard link to the newest
one, and ``best.pt``, the state at the lowest val loss. Resuming tries
``last.pt`` and falls back to older step files when a file is truncated or
corrupt. A sharded run (``training.strategy: fsdp``) writes step folders
instead (``nanugpt.checkpoint.sharded``): its ``last`` and ``best`` folders stand in for
``last.pt`` and ``best.pt`` wherever a checkpoint is read, in one process.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nanugpt.checkpoint import sharded
from nanugpt.config.params import params_from_checkpoint
from nanugpt.config.schema import Params
from nanugpt.config.token_meta import TokenMeta
from nanugpt.errors import CheckpointError as CheckpointError  # defined with the other errors, imported from here
from nanugpt.files.atomic import atomic_path


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``step-<step>.pt``, point ``last.pt`` at it, and prune older step files."""
    path = folder / f"step-{step:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    point_last_at(folder, path)
    for old in sorted(folder.glob("step-*.pt"))[:-keep_last]:
        old.unlink()
    return path


def point_last_at(folder: Path, path: Path) -> None:
    """Make ``folder/last.pt`` a hard link to the step file ``path``, atomically."""
    with atomic_path(folder / "last.pt") as tmp:
        os.link(path, tmp)


def save_best(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``best.pt``: the checkpoint with the lowest val loss so far (``state['best_val_loss']``)."""
    path = folder / "best.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code in it is ever run)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: not a plain tensors-and-values checkpoint ({exc})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({exc})") from None


def newest_loadable(folder: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that loads, with the problems met on the way reported."""
    candidates = [folder / "last.pt", *sorted(folder.glob("step-*.pt"), reverse=True)]
    for path in candidates:
        if not path.exists():
            continue
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            print(f"warning: {exc}; trying an older checkpoint", flush=True)
    return None


def resolve(ckpt_path: Path) -> Path:
    """``ckpt_path``, or for a missing ``last.pt`` / ``best.pt`` the sharded run's ``last`` / ``best`` folder."""
    if not ckpt_path.exists() and ckpt_path.suffix == ".pt" and ckpt_path.with_suffix("").is_dir():
        return ckpt_path.with_suffix("")
    return ckpt_path


def load_trained_model(ckpt_path: Path, device: torch.device) -> tuple[torch.nn.Module, Params, dict[str, Any]]:
    """Rebuild the model of a checkpoint (a ``.pt`` file or a sharded folder, see ``resolve``) with its weights;
    return it with the params it was trained with and the checkpoint's state (a folder's: without the model)."""
    ckpt_path = resolve(ckpt_path)
    is_folder = ckpt_path.is_dir()
    state = sharded.read_run_state(ckpt_path) if is_folder else load_checkpoint(ckpt_path, device)
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
