"""A sweep's points as named DVC experiments: ``dvc exp run --queue -n <point> -S key=value ...`` for each.

Each experiment's ``params.yaml`` becomes exactly the point's params: ``-S`` sets every key whose value differs
from the workspace's ``params.yaml`` (``++key=value`` where params.yaml lacks the key, ``~key`` where the point
has none). A point whose experiment already exists is skipped, so queueing again after adding values queues
only the new points. Then ``dvc queue start -j N`` runs them and ``dvc exp show`` compares them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nanugpt.config.loader import flatten
from nanugpt.errors import UserError
from pipeline.schema import load

if TYPE_CHECKING:
    from pipeline.sweep.spec import Point, Sweep

PARAMS_FILE = Path("params.yaml")  # DVC's default params file: what `dvc exp run -S` edits


def hydra_value(value: Any) -> str:
    """A value in the override grammar of ``dvc exp run -S`` (Hydra's): strings quoted, lists and mappings nested."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise UserError(f"cannot pass {value!r} ({type(value).__name__}) to dvc exp run -S")


def set_flags(point: Point, params_file: Path = PARAMS_FILE) -> list[str]:
    """The ``-S`` values that turn ``params_file`` into the point's params."""
    written = flatten(yaml.safe_load(params_file.read_text(encoding="utf-8")) or {})
    current = flatten(load(params_file).to_dict())
    wanted = flatten(point.params.to_dict())
    flags = []
    for key, value in wanted.items():
        if key in current and current[key] == value:
            continue
        flags.append(f"{key}={hydra_value(value)}" if key in written else f"++{key}={hydra_value(value)}")
    flags += [f"~{key}" for key in written if key not in wanted]
    return flags


def existing_experiments(cwd: Path) -> set[str]:
    """Names of the experiments DVC knows in ``cwd`` (queued ones included)."""
    shown = subprocess.run(
        ["dvc", "exp", "list", "--all-commits", "--name-only"], cwd=cwd, capture_output=True, text=True
    )
    queued = subprocess.run(["dvc", "queue", "status"], cwd=cwd, capture_output=True, text=True)
    names = set(shown.stdout.split()) if shown.returncode == 0 else set()
    for line in queued.stdout.splitlines()[1:] if queued.returncode == 0 else []:
        fields = line.split()
        if len(fields) >= 2:
            names.add(fields[1])
    return names


def queue(sweep: Sweep, dry_run: bool = False, cwd: Path = Path(".")) -> int:
    """Queue every point not yet an experiment; print each command. Exit code 0, or DVC's first failure."""
    known = set() if dry_run else existing_experiments(cwd)
    queued = 0
    for point in sweep.points:
        if point.name in known:
            print(f"{point.name}: already an experiment; skipped")
            continue
        command = ["dvc", "exp", "run", "--queue", "-n", point.name]
        for flag in set_flags(point, cwd / PARAMS_FILE):
            command += ["-S", flag]
        print(" ".join(json.dumps(part) if " " in part else part for part in command), flush=True)
        if dry_run:
            continue
        result = subprocess.run(command, cwd=cwd)
        if result.returncode:
            return result.returncode
        queued += 1
    if not dry_run:
        print(f"queued {queued} of {len(sweep.points)} points; run them with: dvc queue start -j N")
    return 0
