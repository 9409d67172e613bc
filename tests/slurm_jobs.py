"""Helpers of the tests that run jobs on CI's real Slurm cluster (``.ci/slurm-up``): submit, poll, read back."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_TEXT, copy_worktree, tiny_params, write_params

from pipeline.schema import load
from stages import train

SNAKEMAKE_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 60


# The README's commands that run the pipeline, and a sweep, on Slurm. The e2e tests run them as written (with
# SLURM_QUICK after them); test_readme.py matches the README's lines against these, so each runs once.
README_PIPELINE_ON_SLURM = "snakemake --executor slurm -j 8 --workflow-profile profiles/slurm"
README_SWEEP_ON_SLURM = f"{README_PIPELINE_ON_SLURM} --config sweep=sweeps/lr_halving.yaml"
# Job states from squeue (no accounting here), the shortest status interval, the logs of jobs that succeeded kept.
# The plugin checks first after the interval, then waits 10 s longer after each check that finds no job ended:
# the shorter the first wait, the sooner the tiny jobs here are seen to end.
SLURM_QUICK = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "10",
)


def snakemake_on_slurm(command: str = README_PIPELINE_ON_SLURM) -> list[str]:
    """A README command line of snakemake under Slurm, as the tests run it (``SLURM_QUICK`` added)."""
    return [*command.split(), *SLURM_QUICK]


SNAKEMAKE_SLURM = snakemake_on_slurm()


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded by ``timeout``); fail the test with its output when it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of a job as ``{field: value}`` (finished jobs stay listed for MinJobAge)."""
    text = run(["scontrol", "show", "job", "-o", job_id]).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def job_env() -> dict[str, str]:
    """This environment with the test's Python first on PATH (sbatch exports it to the jobs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR") and not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def workspace(tmp: Path, name: str, corpus_text: str = TINY_TEXT, **sections: dict[str, Any]) -> Path:
    """A copy of the repository with a tiny params file on a corpus beside it."""
    ws = copy_worktree(tmp / name)
    corpus = tmp / f"{name}-corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    write_params(ws / "params.yaml", tiny_params(corpus, **sections))
    return ws


# A 2-node run: 2 nodes x 2 processes (gloo); a step of 8 rows is 1 micro-step of 2 rows on each of the 4 ranks.
TWO_NODE_LAUNCH = {"nnodes": 2, "nproc_per_node": 2, "cpus_per_node": 2, "runtime_min": 10, "mem_mb": 2000}
TWO_NODE_TRAINING = {"device_batch_size": 2, "global_batch_size": 8, "log_every": 10}
TWO_NODE_HOSTS = {"n1": [0, 1], "n2": [2, 3]}  # run_info.json's hosts: the ranks torchrun put on each node


def two_node_workspace(tmp: Path, name: str, **sections: dict[str, Any]) -> Path:
    """A workspace for a 2-node run: tiny model, the 4-rank batch split, ``launch`` for 2 nodes; ``sections``
    update those (``training``, ``launch``) or add others."""
    training = {**TWO_NODE_TRAINING, **sections.pop("training", {})}
    launch = {**TWO_NODE_LAUNCH, **sections.pop("launch", {})}
    return workspace(tmp, name, training=training, launch=launch, **sections)


def train_steps(csv_path: Path) -> list[int]:
    """Steps logged so far in a train.csv that may be being written (a partial last line is ignored)."""
    if not csv_path.exists():
        return []
    steps = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                steps.append(int(row["step"]))
            except (TypeError, ValueError):
                pass
    return steps


def wait_for(what: str, predicate: Any, timeout_s: float, poll_s: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def require_idle_nodes(count: int, wait_s: float = 180) -> None:
    """Skip the calling test unless the cluster has ``count`` nodes (CI starts 2 with ``.ci/slurm-up 2``); wait up
    to ``wait_s`` for them to be idle (an earlier test's jobs may still be ending on them)."""
    deadline = time.monotonic() + wait_s
    while (states := node_states()).count("idle") < count:
        if len(states) < count:
            pytest.skip(f"fewer than {count} Slurm nodes here ({states}); CI starts them with .ci/slurm-up 2")
        if time.monotonic() > deadline:
            pytest.skip(f"{count} Slurm nodes were not idle within {wait_s:.0f} s: {states}")
        time.sleep(1)


def node_states() -> list[str]:
    """The state of each Slurm node (none when Slurm does not answer)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split()


def one_process_losses(ws: Path) -> dict[int, float]:
    """Per-step train losses of one process training the workspace's params on its tokens (``ws/data``)."""
    train.run(load(ws / "params.yaml"), data_root=ws / "data", out_dir=ws / "one-process")
    return train_losses(ws / "one-process")


def train_losses(out_dir: Path) -> dict[int, float]:
    """``{step: train loss}`` of a finished run's ``plots/train.csv``."""
    with open(out_dir / "plots" / "train.csv", newline="") as f:
        return {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(f)}


def max_relative_difference(a: dict[int, float], b: dict[int, float]) -> float:
    """The largest ``|a - b| / |b|`` over the steps of ``b`` (both must log the same steps)."""
    assert sorted(a) == sorted(b), (sorted(a)[:5], sorted(b)[:5])
    return max(abs(a[step] - b[step]) / abs(b[step]) for step in b)
