"""A sweep file expanded into its points, each a complete, validated params file (see ``pipeline.sweep``)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanugpt.config.loader import ConfigError, load_yaml_tree, set_dotted
from nanugpt.config.params import ParamsError, validate_params
from nanugpt.files.atomic import write_text
from pipeline import paths
from pipeline.schema import PipelineParams
from pipeline.stages import STAGES, param_values
from pipeline.sweep import halving as halving_search
from pipeline.sweep import stems as stable_stems
from pipeline.sweep.halving import Halving, SearchSpec
from pipeline.sweep.stems import Stem

SEED_KEY = "general.seed"
# A point's name is a file name, a Snakemake wildcard, a Slurm job comment and a DVC experiment (git ref) name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]*")
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
BASE_NAME = "base"  # the name of a point that changes nothing


MAX_POINTS = 1000


class SweepError(ParamsError):
    """An invalid sweep file or point: ``problems`` has one line per problem."""


class SweepFile(BaseModel):
    """The keys of a sweep file."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="the params file every point starts from, relative to the sweep file")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values; their product")
    points: list[dict[str, Any]] = Field(default_factory=list, description="explicit points: dotted key -> value")
    export: bool = Field(False, description="also run the export stage of every point")
    search: SearchSpec | None = Field(None, description="how far each point trains: a grid, or successive halving")
    max_points: int = Field(
        MAX_POINTS, gt=0, description="the most points the sweep may have (a grid's product grows fast): raise it here"
    )


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its name, the values it sets, and its complete params."""

    name: str
    values: dict[str, Any]  # dotted key -> value, the point's own (swept) keys
    tree: dict[str, Any]  # the params as written: the base's keys with the values set
    params: PipelineParams
    named: bool = False  # its name is given in the sweep file

    @property
    def group(self) -> str:
        """The name of the point without its seed: the points of one group differ only in ``general.seed``.
        A named point without a seed is a group of its own, under its name."""
        if self.named and SEED_KEY not in self.values:
            return self.name
        return point_name({k: v for k, v in self.values.items() if k != SEED_KEY})

    @property
    def data_dir(self) -> str:
        """``<dataset>/<tokenizer>``: the token folder under DATA_ROOT that the point trains on."""
        return f"{self.params.data.dataset}/{self.params.tokenizer.module}"


@dataclass(frozen=True)
class Sweep:
    """A sweep file, expanded: every point validated."""

    name: str
    path: Path
    base: Path
    keys: tuple[str, ...]  # every swept key, in the order the sweep file names them
    points: tuple[Point, ...]
    export: bool
    halving: Halving | None = None
    stems: tuple[Stem, ...] = ()  # stable phases shared by points that differ in budget or cooldown alone

    def stem_of(self, point: Point) -> Stem | None:
        """The stem a point continues from, if any."""
        return next((stem for stem in self.stems if point.name in stem.members), None)

    def folder(self, out_dir: str | Path | None = None) -> Path:
        """``OUT_DIR/sweeps/<name>``: where the points' folders, the report and summary.csv go."""
        return Path(out_dir or paths.out_dir()) / "sweeps" / self.name


def format_value(value: Any) -> str:
    """A value as it appears in a point name: ``0.001``, ``1e-05``, ``true``, ``muon``."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, (int, float, str)):
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return UNSAFE.sub("_", text).replace("..", "_") or "_"


def key_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels of dotted keys: the last part (the section for ``module``), the whole key where two clash."""
    short = {key: key.split(".")[-2] if key.endswith(".module") and "." in key else key.split(".")[-1] for key in keys}
    clashing = {label for label in short.values() if list(short.values()).count(label) > 1}
    return {key: key if label in clashing else label for key, label in short.items()}


def point_name(values: dict[str, Any]) -> str:
    """``lr=0.001,n_embd=32``: a name from the point's own values only, so other points never change it."""
    if not values:
        return BASE_NAME
    labels = key_labels(list(values))
    return ",".join(f"{labels[key]}={format_value(value)}" for key, value in values.items())


def read_sweep_file(path: Path) -> SweepFile:
    """Read and check the keys of a sweep file; raise ``SweepError`` with one line per problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SweepError([f"{path}: cannot read a sweep file: {' '.join(str(exc).split())}"]) from None
    if not isinstance(raw, dict):
        raise SweepError([f"{path}: expected a mapping with base, grid and points, got {type(raw).__name__}"])
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            key = ".".join(str(part) for part in error["loc"])
            message = (
                "unknown key (keys: base, grid, points, export, search, max_points)"
                if error["type"] == "extra_forbidden"
                else error["msg"]
            )
            problems.append(f"{path}: {key}: {message}")
        raise SweepError(problems) from None
    problems = [f"{path}: grid.{key}: no values; give a list of one or more" for key, v in spec.grid.items() if not v]
    if not spec.grid and not spec.points:
        problems.append(f"{path}: no points: give a grid (dotted key -> list of values) or a points list")
    grid_points = math.prod(len(values) for values in spec.grid.values()) if spec.grid else 0
    if grid_points + len(spec.points) > spec.max_points:
        sizes = " x ".join(str(len(values)) for values in spec.grid.values()) or "0"
        problems.append(
            f"{path}: {grid_points + len(spec.points):,} points (a grid of {sizes} and {len(spec.points)} listed) "
            f"is more than max_points ({spec.max_points:,}); set max_points in the sweep file to run that many"
        )
    if problems:
        raise SweepError(problems)
    return spec


def _point_values(spec: SweepFile, path: Path) -> list[tuple[str, dict[str, Any], str, bool]]:
    """``(name, values, where, named)`` of every point: the grid's product, then the explicit points."""
    keys = list(spec.grid)
    found = [
        (point_name(values), values, "grid", False)
        for values in (dict(zip(keys, combo)) for combo in itertools.product(*spec.grid.values()))
        if keys  # no grid: no grid points (the product of nothing is one empty point)
    ]
    problems = []
    for i, entry in enumerate(spec.points):
        values = {k: v for k, v in entry.items() if k != "name"}
        name = entry.get("name", point_name(values))
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
            problems.append(
                f"{path}: points[{i}].name: {name!r} is not a valid point name (letters, digits and ._=,+- ; "
                "starting with a letter or digit)"
            )
            continue
        found.append((name, values, f"points[{i}]", "name" in entry))
    seen: list[tuple[dict[str, Any], str]] = []
    by_name: dict[str, str] = {}
    for name, values, where, _ in found:
        label = f"grid point {name!r}" if where == "grid" else where
        twin = next((other for other_values, other in seen if other_values == values), None)
        if twin:
            problems.append(f"{path}: {label}: the same values as {twin}; remove one")
        elif name in by_name:
            problems.append(f"{path}: {label}: point name {name!r} is taken by {by_name[name]}; give it a name: key")
        seen.append((values, label))
        by_name.setdefault(name, label)
    if problems:
        raise SweepError(problems)
    return found


def expand(path: str | Path) -> Sweep:
    """Read a sweep file and validate every point as a complete params file; raise ``SweepError`` naming each
    point and key that is wrong (a problem shared by every point is listed once)."""
    path = Path(path)
    spec = read_sweep_file(path)
    name = path.stem
    if not NAME_PATTERN.fullmatch(name):
        raise SweepError([f"{path}: the file name {name!r} names the sweep: use letters, digits and ._=,+-"])
    base = path.parent / spec.base
    try:
        base_tree = load_yaml_tree(base)
    except ConfigError as exc:
        raise SweepError([f"{path}: base: {problem}" for problem in exc.problems]) from None
    points, failures = [], []
    halving = halving_search.from_spec(spec.search)
    found = _point_values(spec, path)
    for point, values, _, named in found:
        tree = copy.deepcopy(base_tree)
        for key, value in values.items():
            set_dotted(tree, key, value)
        source = f"point {point}"
        try:
            params = validate_params(tree, source, schema=PipelineParams)
        except ParamsError as exc:
            failures += [(point, problem.removeprefix(f"{source}: ")) for problem in exc.problems]
            continue
        if halving:
            failures += [(point, problem) for problem in halving_search.check_point(halving, params)]
        points.append(Point(point, values, tree, params, named))  # type: ignore[arg-type]
    if failures:
        raise SweepError(_problem_lines(path, failures, len(found)))
    keys = tuple(dict.fromkeys(key for point in points for key in point.values))
    shared = () if halving else tuple(stable_stems.find({p.name: p.params.to_dict() for p in points}))
    sweep = Sweep(
        name=name,
        path=path,
        base=base,
        keys=keys,
        points=tuple(points),
        export=spec.export,
        halving=halving,
        stems=shared,
    )
    data_groups(sweep)  # a token folder shared by points with different data params is refused now
    return sweep


def _problem_lines(path: Path, failures: list[tuple[str, str]], n_points: int) -> list[str]:
    """``<file>: point <name>: <key>: <message>`` per problem; one ``<file>: every point: ...`` line for a
    problem that every point has (the base's, or a key set for all)."""
    counts = Counter(problem for _, problem in failures)
    lines: list[str] = []
    for point, problem in failures:
        shared = n_points > 1 and counts[problem] == n_points
        line = f"{path}: every point: {problem}" if shared else f"{path}: point {point}: {problem}"
        if line not in lines:
            lines.append(line)
    return lines


def data_groups(sweep: Sweep) -> dict[str, Point]:
    """``{<dataset>/<tokenizer>: first point}``: one tokenize job per token folder. Points that share a folder
    must agree on every data and tokenizer key, else one would overwrite the other's tokens."""
    groups: dict[str, Point] = {}
    problems = []
    for point in sweep.points:
        first = groups.setdefault(point.data_dir, point)
        mine, theirs = (param_values(STAGES["tokenize"], p.params.to_dict()) for p in (point, first))
        if mine != theirs:
            section = next(key for key in mine if mine[key] != theirs[key])
            problems.append(
                f"{sweep.path}: points {first.name!r} and {point.name!r} tokenize into DATA_ROOT/{point.data_dir} "
                f"with different {section} keys; the folder is named by data.dataset and tokenizer.module only, "
                "so give them different data.dataset values"
            )
    if problems:
        raise SweepError(problems)
    return groups


def explicit_yaml(point: Point, sweep: Sweep, tree: dict[str, Any] | None = None) -> str:
    """The complete params file of a point (or ``tree``, one of its rungs), every key written out."""
    header = f"# Point {point.name} of the sweep {sweep.path} (written by pipeline.sweep; edit the sweep file).\n"
    return header + yaml.safe_dump(tree or point.params.to_dict(), sort_keys=False, width=120)


def run_trees(point: Point, sweep: Sweep, folder: Path) -> dict[Path, dict[str, Any]]:
    """``{run folder: params}`` of a point's train runs: its own folder, and under halving one per earlier rung."""
    tree = point.params.to_dict()
    if sweep.halving is None:
        stem = sweep.stem_of(point)
        return {folder / point.name: stable_stems.branch_tree(tree, stem, folder) if stem else tree}
    point_folder = folder / point.name
    return {
        halving_search.rung_folder(point_folder, steps, sweep.halving): halving_search.rung_tree(
            tree, point_folder, steps, sweep.halving
        )
        for steps in sweep.halving.rungs
    }


def write_if_changed(path: Path, text: str) -> None:
    """Write ``path`` unless it holds ``text`` already (an unchanged file keeps its time stamp)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_text(path, text)


def write_params_files(sweep: Sweep, folder: Path, tokenize_folder: Path) -> None:
    """``<folder>/<point>/params.yaml`` of every point, and ``<tokenize_folder>/<dataset>/<tokenizer>/params.yaml``
    (the first point of that token folder) for its tokenize job; files whose content is unchanged are left alone."""
    for point in sweep.points:
        for run_folder, tree in run_trees(point, sweep, folder).items():
            write_if_changed(run_folder / "params.yaml", explicit_yaml(point, sweep, tree))
    for stem in sweep.stems:
        header = f"# The stable phase shared by {', '.join(stem.members)} (pipeline.sweep.stems)\n"
        write_if_changed(stem.folder(folder) / "params.yaml", header + yaml.safe_dump(stem.tree, sort_keys=False))
    for data_dir, point in data_groups(sweep).items():
        write_if_changed(tokenize_folder / data_dir / "params.yaml", explicit_yaml(point, sweep))


def earlier_runs(point: Point, sweep: Sweep, folder: Path) -> list[Path]:
    """The run folders a point's own run continues from, first to last: its earlier rungs, or its stem."""
    if sweep.halving is not None:
        return list(run_trees(point, sweep, folder))[:-1]
    stem = sweep.stem_of(point)
    return [stem.folder(folder)] if stem else []


def describe(sweep: Sweep) -> str:
    """The points, one a line, with the token folder each trains on."""
    lines = [f"sweep {sweep.name}: {len(sweep.points)} points over {', '.join(sweep.keys) or 'nothing'}"]
    if sweep.halving:
        lines.append(f"halving: {halving_search.describe(sweep.halving, len(sweep.points))}")
    for stem in sweep.stems:
        lines.append(f"stable phase {stem.name}: {stem.steps} steps trained once for {', '.join(stem.members)}")
    lines += [f"  {point.name}  (data {point.data_dir})" for point in sweep.points]
    return "\n".join(lines)
