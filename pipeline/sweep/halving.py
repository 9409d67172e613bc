"""Successive halving: every point trains to the first rung's budget, the best fraction continues to the next.

A sweep file's ``search`` section::

    search: {method: halving, rungs: [50, 150, 450], keep: 1/3, metric: val_loss}

Every point's params train on a schedule over the final budget (``training.max_steps`` equal to the last rung), so
the learning rate at a step is the same whether a point stops at a rung or goes on: a rung is the straight run
stopped at its step (``training.stop_at``), and the next rung continues from its checkpoint
(``training.resume: <path>``). A point promoted to the end has, step for step, the losses of a straight run to
the final budget. Folders, under the sweep's folder (``OUT_DIR/sweeps/<name>``)::

    <point>/rungs/<steps>/     a rung's run (its params.yaml, checkpoints, plots, train_summary.json) and
                               rung.json, its result: {"status": "done" | "failed", "step", "val_loss"}
    <point>/                   the last rung: the point's ordinary folder, which evaluate and generate read
    halving/rung-<steps>.json  the rung's ranking and the points promoted from it

A point that fails or diverges ranks last and is never promoted. Ties are broken by name, so the same sweep file,
code and data promote the same points. Adding a point re-runs its own rungs and every promotion; a point it
displaces keeps the rungs it trained (the report shows where it stopped), and the new point continues from its own.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nanugpt.config.loader import get_dotted, set_dotted
from nanugpt.files.atomic import write_json
from pipeline.paths import last_checkpoint

RESULT = "rung.json"
METRICS = ("val_loss", "best_val_loss")


class SearchSpec(BaseModel):
    """The ``search`` section of a sweep file."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    method: Literal["grid", "halving"] = Field("grid", description="'grid': every point to the end; 'halving'")
    rungs: list[int] = Field(default_factory=list, description="halving: the step budgets, ascending")
    keep: Fraction = Field(Fraction(1, 3), description="halving: the share of a rung's points promoted, e.g. 1/3")
    metric: Literal["val_loss", "best_val_loss"] = Field("val_loss", description="halving: ranks a rung's points")

    @field_validator("keep", mode="before")
    @classmethod
    def _fraction(cls, value: object) -> Fraction:
        try:
            keep = Fraction(str(value))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"a fraction such as 1/3 or 0.5, got {value!r}") from None
        if not 0 < keep < 1:
            raise ValueError(f"must be between 0 and 1 (the share promoted), got {value}")
        return keep

    @field_validator("rungs")
    @classmethod
    def _ascending(cls, rungs: list[int]) -> list[int]:
        if any(steps <= 0 for steps in rungs) or any(a >= b for a, b in zip(rungs, rungs[1:])):
            raise ValueError(f"step budgets must be positive and ascending, got {rungs}")
        return rungs


@dataclass(frozen=True)
class Halving:
    """A halving search: its rungs (step budgets), the share promoted from each, and the metric that ranks."""

    rungs: tuple[int, ...]
    keep: Fraction
    metric: str

    def kept(self, entrants: int) -> int:
        """How many of a rung's ``entrants`` go on to the next: ``floor(entrants * keep)``, at least one."""
        return max(1, math.floor(entrants * self.keep))

    def entrants_per_rung(self, points: int) -> list[int]:
        """The number of points that train in each rung, when every point finishes."""
        counts = [points]
        for _ in self.rungs[1:]:
            counts.append(self.kept(counts[-1]))
        return counts

    def train_steps(self, points: int) -> int:
        """The optimizer steps the search trains in all (a rung continues from the one before)."""
        starts = (0, *self.rungs[:-1])
        return sum(n * (end - start) for n, end, start in zip(self.entrants_per_rung(points), self.rungs, starts))

    def is_last(self, steps: int) -> bool:
        """Whether ``steps`` is the final budget (trained in the point's own folder)."""
        return steps == self.rungs[-1]

    def previous(self, steps: int) -> int | None:
        """The rung before ``steps``; None for the first."""
        index = self.rungs.index(steps)
        return self.rungs[index - 1] if index else None


def from_spec(search: SearchSpec | None) -> Halving | None:
    """The halving search of a sweep file's ``search`` section; None for a grid."""
    if search is None or search.method == "grid":
        return None
    return Halving(tuple(search.rungs), search.keep, search.metric)


def check_point(halving: Halving, params: Any) -> list[str]:
    """Why a point's params cannot take part in the search: ``key: message`` lines (none when it can)."""
    problems = []
    if len(halving.rungs) < 2:
        problems.append(f"search.rungs: give two or more step budgets, got {list(halving.rungs)}")
    training = params.training
    if halving.rungs and training.max_steps != halving.rungs[-1]:
        problems.append(
            f"training.max_steps: is {training.max_steps} but the last rung is {halving.rungs[-1]}: a halving point "
            "trains on a schedule over its final budget, so that a rung is the straight run stopped early; set "
            f"training.max_steps: {halving.rungs[-1]} (or end the rungs at {training.max_steps})"
        )
    if params.scheduler.module == "lr_range_test":
        problems.append("scheduler.module: an lr range test is not a training schedule to rank points by")
    if training.stop_at is not None or training.resume != "auto":
        problems.append("training.stop_at / training.resume: the search sets them for each rung; leave them unset")
    return problems


def rung_folder(point_folder: Path, steps: int, halving: Halving) -> Path:
    """Where a point trains to ``steps``: its own folder for the last rung, ``rungs/<steps>`` before."""
    return point_folder if halving.is_last(steps) else point_folder / "rungs" / str(steps)


def rung_tree(tree: dict[str, Any], point_folder: Path, steps: int, halving: Halving) -> dict[str, Any]:
    """The params of a point's run to ``steps``: stopped there (before the last rung), continued from the rung
    before (after the first)."""
    rung = copy.deepcopy(tree)
    if not halving.is_last(steps):
        set_dotted(rung, "training.stop_at", steps)
    if (previous := halving.previous(steps)) is not None:
        sharded = get_dotted(tree, "training.strategy") == "fsdp"
        checkpoint = last_checkpoint(rung_folder(point_folder, previous, halving), sharded=sharded)
        set_dotted(rung, "training.resume", str(checkpoint))
    return rung


def write_result(folder: Path, *, exit_code: int, metric: str = "val_loss") -> dict[str, Any]:
    """Write ``<rung folder>/rung.json`` from what the rung's train left: done with its step and metric, or
    failed (a non-zero ``exit_code``, no summary, or a metric that is not finite)."""
    result: dict[str, Any] = {"status": "failed", "step": None, metric: None}
    try:
        summary = json.loads((folder / "train_summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    if summary is not None and exit_code == 0:
        value = summary.get(metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        result = {"status": "done" if finite else "failed", "step": summary.get("step"), metric: value}
    write_json(folder / RESULT, result)
    return result


def ranking(results: dict[str, dict[str, Any]], metric: str) -> list[str]:
    """Point names, best first: finished points by ``metric`` ascending, ties by name; failed ones last."""

    def key(name: str) -> tuple[int, float, str]:
        result = results[name]
        done = result.get("status") == "done"
        return (0, result[metric], name) if done else (1, math.inf, name)

    return sorted(results, key=key)


def promotion(results: dict[str, dict[str, Any]], halving: Halving, steps: int) -> dict[str, Any]:
    """The record of a rung: its entrants ranked, and the ``kept`` best of those that finished, promoted."""
    ranked = ranking(results, halving.metric)
    done = [name for name in ranked if results[name].get("status") == "done"]
    return {
        "rung": steps,
        "metric": halving.metric,
        "ranking": [{"point": name, **results[name]} for name in ranked],
        "promoted": done[: halving.kept(len(results))],
    }


def promote(sweep_folder: Path, entrants: Sequence[str], halving: Halving, steps: int) -> dict[str, Any]:
    """Rank the entrants of the rung ``steps`` from their ``rung.json`` and write ``halving/rung-<steps>.json``."""
    results = {}
    for name in entrants:
        path = rung_folder(sweep_folder / name, steps, halving) / RESULT
        results[name] = json.loads(path.read_text())
    record = promotion(results, halving, steps)
    write_json(promotion_path(sweep_folder, steps), record)
    return record


def promotion_path(sweep_folder: Path, steps: int) -> Path:
    """``halving/rung-<steps>.json`` in the sweep's folder."""
    return sweep_folder / "halving" / f"rung-{steps}.json"


def promoted(path: Path) -> list[str]:
    """The points a promotion record promotes."""
    return list(json.loads(Path(path).read_text())["promoted"])


def describe(halving: Halving, points: int) -> str:
    """One line: points per rung and the train steps, against every point trained to the final budget."""
    counts = " -> ".join(f"{n} to step {steps}" for n, steps in zip(halving.entrants_per_rung(points), halving.rungs))
    search, grid = halving.train_steps(points), points * halving.rungs[-1]
    return f"{counts}; {search:,} train steps, {search / grid:.2f}x the {grid:,} of a full grid"
