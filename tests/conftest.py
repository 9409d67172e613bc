"""Shared fixtures: a tiny corpus, a tiny params file, and the repository's paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 40


def copy_worktree(dest: Path) -> Path:
    """Copy the repository's working tree (tracked files and new, unignored ones) into ``dest``."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small text file (about 6 KB) in tmp_path."""
    path = tmp_path / "corpus.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def tiny_params(source: Path | str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A complete params dict for a tiny char model on ``source``; ``sections`` update it section-wise."""
    params: dict[str, Any] = {
        "general": {"seed": 7, "device_type": "cpu"},
        "data": {"module": "tokenized", "dataset": "tiny", "source": str(source), "val_fraction": 0.1},
        "tokenizer": {"module": "char"},
        "model": {"module": "nanogpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
        "training": {
            "max_steps": 20,
            "device_batch_size": 4,
            "global_batch_size": 8,
            "log_every": 5,
            "checkpoint_every": 10,
            "keep_last": 5,
        },
        "optimizer": {"module": "adamw_nanogpt", "lr": 3e-3},
        "scheduler": {"module": "cosine", "warmup_steps": 2},
        "eval": {"eval_every": 10, "eval_iters": 2},
        "generate": {"prompt": "First", "num_samples": 2, "max_new_tokens": 30},
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    return params


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def params_file(tmp_path: Path, corpus: Path) -> Path:
    """A tiny, valid params.yaml in tmp_path."""
    return write_params(tmp_path / "params.yaml", tiny_params(corpus))


@pytest.fixture
def shakespeare() -> Path:
    """The public-domain Tiny Shakespeare copy named by $NANUGPT_TINYSHAKESPEARE (skip without it)."""
    path = os.environ.get("NANUGPT_TINYSHAKESPEARE")
    if not path or not Path(path).is_file():
        pytest.skip("NANUGPT_TINYSHAKESPEARE does not name a local Tiny Shakespeare (make test sets it)")
    return Path(path)
