"""Warmup-stable-decay branches: points that differ only in their final budget or cooldown share one stable phase.

Under the ``constant`` schedule (warmup, a constant lr, then ``scheduler.cooldown_steps`` of linear decay to
``training.max_steps``), the learning rate before a point's cooldown starts does not depend on ``max_steps`` or
``cooldown_steps``, and nothing else in training does either (batches are a function of seed and step). So points
that agree on everything else that shapes the numbers (``nanugpt.config.schema.RESUME_KEYS``) train the same
steps up to the earliest decay start among them. The sweep trains those steps once, as a stem (the group's params
with ``max_steps`` at that step and no cooldown) in ``_stems/<name>/``, and each point continues from the stem's
checkpoint (``training.resume: <path>``) through its own stable steps and cooldown. A branch's losses are, step for
step, those of the point trained straight (``tests/unit/pipeline/test_sweep_stems.py``).

A point whose budget ends at the stem's step trains straight, as does every point of a group of one. Halving sweeps
(whose points share one budget) and DVC's queue train every point straight.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanugpt.config.loader import get_dotted, set_dotted
from nanugpt.config.schema import RESUME_KEYS
from pipeline.paths import last_checkpoint

# What a branch may change of its stem: its budget, and its cooldown's length and final lr
COOLDOWN_KEYS = ("cooldown_steps", "min_lr_ratio")
FOLDER = "_stems"


@dataclass(frozen=True)
class Stem:
    """A shared stable phase: its name, its params, and the points that continue from it."""

    name: str
    tree: dict[str, Any]
    steps: int
    members: tuple[str, ...]

    def folder(self, sweep_folder: Path) -> Path:
        """``<sweep folder>/_stems/<name>``: the stem's run."""
        return sweep_folder / FOLDER / self.name

    def checkpoint(self, sweep_folder: Path) -> Path:
        """The checkpoint its branches continue from."""
        sharded = get_dotted(self.tree, "training.strategy") == "fsdp"
        return last_checkpoint(self.folder(sweep_folder), sharded=sharded)


def shared_part(tree: dict[str, Any]) -> str:
    """A digest of what shapes a point's numbers besides its budget and cooldown."""
    shared = {key: get_dotted(tree, key) for key in RESUME_KEYS if key != "training.max_steps"}
    shared["scheduler"] = {k: v for k, v in (shared["scheduler"] or {}).items() if k not in COOLDOWN_KEYS}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()


def decay_start(tree: dict[str, Any]) -> int:
    """The step at which a ``constant`` schedule's cooldown starts (``max_steps`` without a cooldown)."""
    return int(get_dotted(tree, "training.max_steps")) - int(get_dotted(tree, "scheduler.cooldown_steps") or 0)


def find(trees: dict[str, dict[str, Any]]) -> list[Stem]:
    """The stems of a sweep's points (``{point name: params}``), each shared by two or more points."""
    groups: dict[str, list[str]] = {}
    for name, tree in trees.items():
        if get_dotted(tree, "scheduler.module") == "constant" and get_dotted(tree, "training.resume") == "auto":
            groups.setdefault(shared_part(tree), []).append(name)
    stems = []
    for digest, names in groups.items():
        steps = min(decay_start(trees[name]) for name in names)
        members = tuple(name for name in names if int(get_dotted(trees[name], "training.max_steps")) > steps)
        warmup = int(get_dotted(trees[names[0]], "scheduler.warmup_steps") or 0)
        if len(members) < 2 or steps <= warmup:
            continue
        tree = copy.deepcopy(trees[members[0]])
        set_dotted(tree, "training.max_steps", steps)
        set_dotted(tree, "scheduler.cooldown_steps", 0)
        set_dotted(tree, "scheduler.min_lr_ratio", 0.0)
        stems.append(Stem(f"stable-{steps}-{digest[:10]}", tree, steps, members))
    return stems


def branch_tree(tree: dict[str, Any], stem: Stem, sweep_folder: Path) -> dict[str, Any]:
    """A point's params as a branch of ``stem``: continued from the stem's checkpoint."""
    branch = copy.deepcopy(tree)
    set_dotted(branch, "training.resume", str(stem.checkpoint(sweep_folder)))
    return branch
