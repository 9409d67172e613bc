"""End-to-end: a sweep under the real ``snakemake``: one tokenize job, a job per point and stage, partial reruns,
a failing point isolated and reported, and the plan of a 100-point grid.

A module fixture copies the repository into a temporary workspace with a tiny params file and, as the README's
``sweeps/lr_width.yaml``, a sweep of three points: two from the grid (``optimizer.lr``), a named explicit one,
and a fourth point that fails in train (``training.resume`` names a missing checkpoint). It runs the README's
``snakemake -j 4 --config sweep=sweeps/lr_width.yaml`` and ``python -m pipeline.sweep report ...`` as written
once (the README test skips them), then asks dry runs (``-n``) what an added value and an edited point would run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    README_HALVING_LOCALLY,
    README_SWEEP_LOCALLY,
    README_SWEEP_REPORT,
    TINY_TEXT,
    copy_worktree,
    tiny_params,
    write_params,
)

pytestmark = pytest.mark.slow

TIMEOUT_S = 600
GRID = {"optimizer.lr": [0.001, 0.003]}
NAMED = {"name": "edit", "optimizer.lr": 0.002}
FAILING = {"name": "broken", "training.resume": "/nonexistent/last.pt"}
POINTS = ["lr=0.001", "lr=0.003", "edit", "broken"]


@dataclass
class Workspace:
    """A workspace with a sweep file, and how to run snakemake there."""

    ws: Path
    sweep: Path
    env: dict[str, str]

    def snakemake(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["snakemake", *args, "--config", f"sweep={self.sweep.relative_to(self.ws)}"])

    def run(self, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.ws,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def write_sweep(self, grid: dict[str, list[Any]], points: list[dict[str, Any]]) -> None:
        self.sweep.parent.mkdir(exist_ok=True)
        self.sweep.write_text(yaml.safe_dump({"base": "../params.yaml", "grid": grid, "points": points}))

    def plan(self) -> tuple[dict[str, int], str]:
        """The job counts of a dry run, by rule, and its output."""
        result = self.snakemake("-n")
        text = result.stdout + result.stderr
        assert result.returncode == 0, text
        return job_counts(text), text


def job_counts(text: str) -> dict[str, int]:
    """``{rule: count}`` from the ``Job stats:`` table of snakemake's output (``total`` included)."""
    counts: dict[str, int] = {}
    _, _, table = text.partition("Job stats:")
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def workspace(tmp: Path, sweep: str = "lr_width", **sections: dict[str, Any]) -> Workspace:
    ws = copy_worktree(tmp / "ws")
    corpus = tmp / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    write_params(ws / "params.yaml", tiny_params(corpus, **sections))
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return Workspace(ws, ws / "sweeps" / f"{sweep}.yaml", env)  # by default the README's sweep file, made tiny


@dataclass
class Session:
    space: Workspace
    first_plan: dict[str, int]
    first: subprocess.CompletedProcess
    summary: list[dict[str, str]]
    report: str
    report_again: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    space = workspace(tmp_path_factory.mktemp("sweep"))
    space.write_sweep(GRID, [NAMED, FAILING])
    first_plan, _ = space.plan()
    first = space.run(README_SWEEP_LOCALLY.split())
    folder = space.ws / "out" / "sweeps" / "lr_width"
    with open(folder / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    report = (folder / "report.html").read_text()
    (folder / "report.html").unlink()
    report_again = space.run(README_SWEEP_REPORT.split())
    return Session(space, first_plan, first, summary, report, report_again)


def test_one_tokenize_job_and_one_job_per_point_and_stage(session: Session) -> None:
    assert session.first_plan == {
        "sweep_tokenize": 1,
        "sweep_train": 4,
        "sweep_after_train": 4,  # evaluate and generate of a point: one job
        "all": 1,
        "total": 10,
    }


def test_a_failing_point_does_not_stop_the_others_and_is_reported(session: Session) -> None:
    output = session.first.stdout + session.first.stderr
    assert session.first.returncode != 0, output  # the failure is not hidden
    status = {row["point"]: row["status"] for row in session.summary}
    assert status == {"lr=0.001": "done", "lr=0.003": "done", "edit": "done", "broken": "failed (train)"}, output
    folder = session.space.ws / "out" / "sweeps" / "lr_width"
    for name in POINTS[:3]:
        for artifact in ("checkpoints/last.pt", "metrics.json", "samples.txt", "plots/val.csv"):
            assert (folder / name / artifact).stat().st_size > 0, (name, artifact)
    assert "/nonexistent/last.pt" in (folder / "broken" / "logs" / "train.log").read_text()
    assert 'class="failed"' in session.report and "failed (train)" in session.report
    best = min(session.summary[:3], key=lambda row: float(row["val_loss"]))
    assert [row["point"] for row in session.summary if row["best"] == "1"] == [best["point"]]
    # one environment for every point that trained: the page warns of none
    assert len({row["environment"] for row in session.summary[:3]}) == 1 and session.summary[0]["environment"]
    assert "environments (" not in session.report
    assert not (session.space.ws / "out" / "checkpoints").exists()  # the single-run rules did not run


def test_the_report_is_written_again_from_what_is_on_disk(session: Session) -> None:
    output = session.report_again.stdout + session.report_again.stderr
    assert session.report_again.returncode == 0 and "wrote" in output, output
    folder = session.space.ws / "out" / "sweeps" / "lr_width"
    assert (folder / "report.html").read_text() == session.report


def test_adding_a_value_runs_only_the_new_point(session: Session) -> None:
    space = session.space
    space.write_sweep({"optimizer.lr": [0.001, 0.003, 0.01]}, [NAMED])  # the broken point is gone, lr=0.01 is new
    counts, text = space.plan()
    assert counts == {"sweep_train": 1, "sweep_after_train": 1, "all": 1, "total": 3}, text
    assert "wildcards: point=lr=0.01" in text and "point=lr=0.001" not in text


def test_editing_a_named_point_reruns_only_that_point(session: Session) -> None:
    space = session.space
    space.write_sweep(GRID, [{**NAMED, "optimizer.lr": 0.004}])
    counts, text = space.plan()
    assert counts == {"sweep_train": 1, "sweep_after_train": 1, "all": 1, "total": 3}, text
    assert "wildcards: point=edit" in text and "Params have changed since last execution" in text


def test_hundred_point_grid_plans_in_seconds(tmp_path: Path) -> None:
    space = workspace(tmp_path)
    space.write_sweep(
        {
            "optimizer.lr": [0.001 * (i + 1) for i in range(10)],
            "model.n_embd": [16, 32, 48, 64, 80, 96, 112, 128, 144, 160],
        },
        [],
    )
    started = time.monotonic()
    counts, text = space.plan()
    seconds = time.monotonic() - started
    print(f"snakemake -n of a 100-point sweep: {seconds:.1f} s, {counts['total']} jobs")
    assert counts["sweep_tokenize"] == 1 and counts["sweep_train"] == 100 and counts["total"] == 202, text


def test_on_slurm_a_points_stages_after_training_ask_for_resources_from_params(tmp_path: Path) -> None:
    space = workspace(tmp_path)
    space.write_sweep(GRID, [{"name": "big", "launch.stage_mem_mb": 6000, "launch.stage_runtime_min": 45}])
    result = space.snakemake("-n", "--executor", "slurm", "--workflow-profile", "profiles/slurm")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    resources: dict[tuple[str, str], dict[str, str]] = {}
    for job in text.split("rule ")[1:]:
        rule = job.split(":", 1)[0]
        point = re.search(r"wildcards: point=(\S+)", job)
        line = re.search(r"resources: (.*)", job)
        if point and line and rule == "sweep_after_train":
            pairs = (pair.strip().split("=", 1) for pair in line.group(1).split(",") if "=" in pair)
            resources[rule, point.group(1)] = dict(pairs)
    assert len(resources) == 3, text  # one job after training per point
    for (rule, point), asked in resources.items():
        expected = ("6000", "45") if point == "big" else ("8000", "30")  # launch.stage_*, else mem_mb / 1 process
        assert (asked["mem_mb"], asked["runtime"]) == expected, (rule, point, asked)


HALVING_LRS = [0.0003, 0.001, 0.003, 0.01]
HALVING = {"method": "halving", "rungs": [4, 8, 16], "keep": "1/2"}


@dataclass
class Halved:
    space: Workspace
    run: subprocess.CompletedProcess
    folder: Path  # OUT_DIR/sweeps/lr_halving

    def promotion(self, steps: int) -> dict[str, Any]:
        return json.loads((self.folder / "halving" / f"rung-{steps}.json").read_text())


@pytest.fixture(scope="module")
def halved(tmp_path_factory: pytest.TempPathFactory) -> Halved:
    """The README's halving sweep made a four-point search of the tiny model (rungs of 4, 8 and 16 steps, half
    kept), run once by its command."""
    training = {"max_steps": 16, "log_every": 1, "checkpoint_every": 0}
    space = workspace(tmp_path_factory.mktemp("halving"), "lr_halving", training=training, eval={"eval_every": 4})
    space.sweep.parent.mkdir(exist_ok=True)
    space.sweep.write_text(
        yaml.safe_dump({"base": "../params.yaml", "grid": {"optimizer.lr": HALVING_LRS}, "search": HALVING})
    )
    result = space.run(README_HALVING_LOCALLY.split())  # the README's halving sweep, made tiny
    assert result.returncode == 0, result.stdout + result.stderr
    return Halved(space, result, space.ws / "out" / "sweeps" / "lr_halving")


def executed(text: str) -> dict[str, int]:
    """``{rule: jobs run}`` from snakemake's log of a run."""
    return dict(Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", text, re.MULTILINE)))


def test_each_rung_promotes_its_best_half_and_one_point_trains_to_the_end(halved: Halved) -> None:
    output = halved.run.stdout + halved.run.stderr
    assert executed(output) == {
        "sweep_tokenize": 1,
        "sweep_rung": 4 + 2,
        "sweep_promote": 2,
        "sweep_train": 1,
        "sweep_after_train": 1,
        "all": 1,
    }, output
    first, second = halved.promotion(4), halved.promotion(8)
    losses = [row["val_loss"] for row in first["ranking"]]
    assert losses == sorted(losses) and len(losses) == 4
    assert first["promoted"] == [row["point"] for row in first["ranking"][:2]]
    assert [row["point"] for row in second["ranking"]] == sorted(
        first["promoted"], key=lambda name: [row["val_loss"] for row in second["ranking"] if row["point"] == name][0]
    )
    (winner,) = second["promoted"]
    trained = {name: json.loads((halved.folder / name / "train_summary.json").read_text())["step"] for name in [winner]}
    assert trained == {winner: 16}
    losers = set(first["promoted"]) - {winner}
    assert all(not (halved.folder / name / "train_summary.json").exists() for name in losers)
    steps = sum(len(train_csv(path)) for path in halved.folder.glob("*/**/plots/train.csv"))
    assert steps == 4 * 4 + 2 * 4 + 1 * 8  # against 4 x 16 = 64 for the grid


def train_csv(path: Path) -> dict[int, float]:
    with open(path, newline="") as f:
        return {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(f)}


def test_the_promoted_point_has_the_losses_of_a_straight_run_to_the_final_budget(halved: Halved) -> None:
    (winner,) = halved.promotion(8)["promoted"]
    folder = halved.folder / winner
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["training"]["resume"] = "auto"  # the point's own params, trained from step 0
    straight = halved.space.ws / "straight"
    write_params(halved.space.ws / "straight.yaml", params)
    result = halved.space.run(["env", f"OUT_DIR={straight}", sys.executable, "-m", "stages.train", "straight.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr
    rungs = train_csv(folder / "rungs" / "4" / "plots" / "train.csv") | train_csv(
        folder / "rungs" / "8" / "plots" / "train.csv"
    )
    assert rungs | train_csv(folder / "plots" / "train.csv") == train_csv(straight / "plots" / "train.csv")  # bitwise
    summary = json.loads((folder / "train_summary.json").read_text())
    assert summary["val_loss"] == json.loads((straight / "train_summary.json").read_text())["val_loss"]


def test_adding_a_point_runs_its_first_rung_and_the_promotions_again(halved: Halved) -> None:
    space = halved.space
    space.sweep.write_text(
        yaml.safe_dump({"base": "../params.yaml", "grid": {"optimizer.lr": [*HALVING_LRS, 0.03]}, "search": HALVING})
    )
    counts, text = space.plan()
    assert counts == {"sweep_rung": 1, "sweep_promote": 2, "all": 1, "total": 4}, text
    assert "point=lr=0.03, steps=4" in text


def test_budgets_and_cooldowns_branch_from_one_stable_phase(halved: Halved) -> None:
    space = halved.space
    wsd = space.ws / "wsd.yaml"
    params = yaml.safe_load((space.ws / "params.yaml").read_text())
    params["scheduler"] = {"module": "constant", "warmup_steps": 2, "cooldown_steps": 4}
    write_params(wsd, params)
    space.sweep.write_text(
        yaml.safe_dump(
            {"base": "../wsd.yaml", "grid": {"training.max_steps": [12, 16], "scheduler.cooldown_steps": [2, 4]}}
        )
    )
    counts, text = space.plan()
    assert counts == {"sweep_stem": 1, "sweep_train": 4, "sweep_after_train": 4, "all": 1, "total": 10}, text
