"""A sweep's points as named DVC experiments: ``dvc exp run --queue -n <point> -S key=value ...`` for each.

Each experiment's ``params.yaml`` becomes exactly the point's params: ``-S`` sets every key whose value differs
from the workspace's ``params.yaml`` (``++key=value`` where params.yaml lacks the key, ``~key`` where the point
has none). A point whose experiment already exists is skipped, so queueing again after adding values queues
only the new points. Then ``dvc queue start -j N`` runs them and ``dvc exp show`` compares them.

A halving sweep (``pipeline.sweep.halving``) is queued a rung at a time, each rung an experiment
``<point>-rung<steps>``: the first call queues every point's first rung (the train stage alone, stopped at the
rung's step). Each later call, once the queue has run them, ranks the finished rung from ``dvc exp show``, writes
the promotion record (``OUT_DIR/sweeps/<name>/halving/rung-<steps>.json``), fetches each promoted experiment's
``last.pt`` from DVC's cache (``dvc get --rev``) into ``OUT_DIR/sweeps/<name>/<point>/rungs/<steps>/`` and queues
the next rung continuing from it (``training.resume``), the last rung with every stage. Repeat
``queue`` and ``dvc queue start`` until it says the search is done.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nanugpt.config.loader import flatten
from nanugpt.errors import UserError
from nanugpt.files.atomic import write_json
from pipeline.paths import last_checkpoint, model_dir
from pipeline.schema import load
from pipeline.sweep import halving as halving_search

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
    names = set(shown.stdout.split()) if shown.returncode == 0 else set()
    return names | set(queue_states(cwd))


def queue_states(cwd: Path) -> dict[str, str]:
    """``{experiment name: Queued | Running | Success | Failed}`` from ``dvc queue status``."""
    listed = subprocess.run(["dvc", "queue", "status"], cwd=cwd, capture_output=True, text=True)
    states = {}
    for line in listed.stdout.splitlines()[1:] if listed.returncode == 0 else []:
        fields = line.split()
        if len(fields) >= 3:
            states[fields[1]] = fields[-1]
    return states


def shown_experiments(cwd: Path) -> dict[str, dict[str, Any]]:
    """``{experiment name: {"rev": commit, "metrics": {file: data}}}`` of the workspace's baseline
    (``dvc exp show --json``)."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True, text=True)
    if shown.returncode:
        raise UserError(f"dvc exp show failed: {shown.stderr.strip()[-500:]}")
    found = {}
    for row in json.loads(shown.stdout or "[]"):
        for experiment in row.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if experiment.get("name"):
                    metrics = {
                        name: item.get("data") or {} for name, item in (rev["data"].get("metrics") or {}).items()
                    }
                    found[experiment["name"]] = {"rev": rev["rev"], "metrics": metrics}
    return found


def queue(sweep: Sweep, dry_run: bool = False, cwd: Path = Path(".")) -> int:
    """Queue every point not yet an experiment (a halving sweep: its next rung); print each command. Exit code 0,
    or DVC's first failure."""
    if sweep.halving is not None:
        return queue_halving(sweep, dry_run=dry_run, cwd=cwd)
    known = set() if dry_run else existing_experiments(cwd)
    queued = 0
    for point in sweep.points:
        if point.name in known:
            print(f"{point.name}: already an experiment; skipped")
            continue
        if code := queue_experiment(point.name, point, dry_run=dry_run, cwd=cwd):
            return code
        queued += 1
    if not dry_run:
        print(f"queued {queued} of {len(sweep.points)} points; run them with: dvc queue start -j N")
    return 0


def queue_experiment(
    name: str,
    point: Point,
    *,
    flags: Sequence[str] = (),
    targets: Sequence[str] = (),
    dry_run: bool,
    cwd: Path,
) -> int:
    """Print and (unless ``dry_run``) run ``dvc exp run --queue -n <name>`` with the ``-S`` values that make the
    point, then ``flags``, for the stages ``targets`` (all where empty); DVC's exit code."""
    command = ["dvc", "exp", "run", "--queue", "-n", name]
    for flag in [*set_flags(point, cwd / PARAMS_FILE), *flags]:
        command += ["-S", flag]
    command += targets
    print(" ".join(json.dumps(part) if " " in part else part for part in command), flush=True)
    return 0 if dry_run else subprocess.run(command, cwd=cwd).returncode


def rung_experiment(point: Point, steps: int) -> str:
    """The name of a point's experiment that trains it to the rung ``steps``."""
    return f"{point.name}-rung{steps}"


def queue_halving(sweep: Sweep, *, dry_run: bool, cwd: Path) -> int:
    """Queue the next rung of a halving sweep whose earlier rungs have run (see the module doc)."""
    search = sweep.halving
    assert search is not None
    if any(point.params.training.strategy == "fsdp" for point in sweep.points):
        raise UserError(
            f"{sweep.path}: a halving sweep on DVC's queue continues from last.pt; run FSDP points under Snakemake"
        )
    points = {point.name: point for point in sweep.points}
    folder = (cwd / sweep.folder()).resolve()
    states, shown = ({}, {}) if dry_run else (queue_states(cwd), shown_experiments(cwd))
    entrants = list(points)
    for steps in search.rungs:
        names = {name: rung_experiment(points[name], steps) for name in entrants}
        missing = [name for name, experiment in names.items() if experiment not in states and experiment not in shown]
        if missing:
            return queue_rung([points[name] for name in missing], steps, sweep, dry_run=dry_run, cwd=cwd)
        waiting = [experiment for experiment in names.values() if states.get(experiment) in ("Queued", "Running")]
        if waiting:
            print(
                f"rung {steps}: {len(waiting)} of {len(names)} experiments still queued or running; run "
                "`dvc queue start -j N`, then this command again"
            )
            return 0
        results = {name: rung_result(shown.get(experiment), search.metric) for name, experiment in names.items()}
        if search.is_last(steps):
            best = halving_search.ranking(results, search.metric)[0]
            print(
                f"halving done: {best} wins ({search.metric} {results[best][search.metric]}); experiment {names[best]}"
            )
            return 0
        record = halving_search.promotion(results, search, steps)
        write_json(halving_search.promotion_path(folder, steps), record)
        for name in record["promoted"]:
            fetch_checkpoint(shown[names[name]]["rev"], halving_search.rung_folder(folder / name, steps, search), cwd)
        print(f"rung {steps}: promoted {', '.join(record['promoted']) or 'nothing (every point failed)'}")
        entrants = record["promoted"]
        if not entrants:
            return 1
    return 0


def rung_result(experiment: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """A rung experiment's result in the form of ``rung.json``: done with its step and metric, or failed."""
    summary = (experiment or {}).get("metrics", {}).get("out/train_summary.json") or {}
    value = summary.get(metric)
    done = isinstance(value, (int, float)) and math.isfinite(value)
    return {"status": "done" if done else "failed", "step": summary.get("step"), metric: value if done else None}


def fetch_checkpoint(rev: str, folder: Path, cwd: Path) -> None:
    """Copy ``out/model/last.pt`` (and its checksum) of the experiment commit ``rev`` into ``<folder>/model/``
    from DVC's cache, unless it is there already."""
    target = model_dir(folder)
    for name in ("last.pt", "last.pt.sha256"):
        if (target / name).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run(
            ["dvc", "get", ".", f"out/model/{name}", "--rev", rev, "-o", str(target / name)],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if fetched.returncode:
            raise UserError(f"dvc get of out/model/{name} at {rev[:12]} failed: {fetched.stderr.strip()[-500:]}")


def queue_rung(points: list[Point], steps: int, sweep: Sweep, *, dry_run: bool, cwd: Path) -> int:
    """Queue the experiments that train ``points`` to the rung ``steps``: the train stage alone, stopped at the rung,
    before the last rung; continued from the rung before after the first."""
    search = sweep.halving
    assert search is not None
    folder = (cwd / sweep.folder()).resolve()
    for point in points:
        flags, targets = [], []
        if not search.is_last(steps):
            flags, targets = [f"training.stop_at={steps}"], ["train"]
        if (previous := search.previous(steps)) is not None:
            checkpoint = last_checkpoint(halving_search.rung_folder(folder / point.name, previous, search))
            flags.append(f"training.resume={hydra_value(str(checkpoint))}")
        name = rung_experiment(point, steps)
        if code := queue_experiment(name, point, flags=flags, targets=targets, dry_run=dry_run, cwd=cwd):
            return code
    if not dry_run:
        print(
            f"rung {steps}: queued {len(points)} experiments; run them with `dvc queue start -j N`, then this "
            "command again for the next rung"
        )
    return 0
