"""End-to-end on the real Slurm cluster (CI's, ``.ci/slurm-up``): the README's halving sweep under ``snakemake
--executor slurm`` (``sweeps/lr_halving.yaml`` made a two-point search of a tiny model), each point's first
rung a Slurm job with that point's ``launch`` resources, two of them seen running at once by ``squeue``; the
promotion runs on the submitting host, the better point continues to the final budget, and its evaluate and
generate are one job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import TINY_TEXT, copy_worktree, require_slurm, tiny_params, write_params
from slurm_jobs import README_SWEEP_ON_SLURM, snakemake_on_slurm

pytestmark = pytest.mark.slow

TIMEOUT_S = 900
# Long enough (a few seconds of training) that two train jobs overlap in time.
TRAINING = {"max_steps": 400, "log_every": 50, "checkpoint_every": 200}
SWEEP = {
    "base": "../params.yaml",
    "grid": {"optimizer.lr": [0.001, 0.002]},
    "search": {"method": "halving", "rungs": [200, 400], "keep": 0.5},
}


def running_rung_jobs() -> set[str]:
    """Ids of the running Slurm jobs of the sweep's first rung (the plugin puts the rule in the job's comment)."""
    listed = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if "rule_sweep_rung" in line}


def test_a_halving_sweep_trains_its_rungs_as_concurrent_slurm_jobs(tmp_path: Path) -> None:
    require_slurm()
    ws = copy_worktree(tmp_path / "ws")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_TEXT * 5, encoding="utf-8")
    launch = {"cpus_per_node": 1, "mem_mb": 1000, "runtime_min": 10}
    write_params(ws / "params.yaml", tiny_params(corpus, training=TRAINING, launch=launch))
    (ws / "sweeps").mkdir(exist_ok=True)
    (ws / "sweeps" / "lr_halving.yaml").write_text(yaml.safe_dump(SWEEP))  # the README's sweep, made tiny
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR") and not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    seen: list[set[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(running_rung_jobs())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = subprocess.run(
            snakemake_on_slurm(README_SWEEP_ON_SLURM),
            cwd=ws,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    finally:
        done.set()
        watcher.join()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert max(len(jobs) for jobs in seen) == 2, f"never two rung jobs at once: {seen}\n{output}"
    # tokenize, the two points' first rung, the better point's second rung and its one job after training
    assert output.count("has been submitted with SLURM jobid") == 1 + 2 + 1 + 1, output
    folder = ws / "out" / "sweeps" / "lr_halving"
    (winner,) = json.loads((folder / "halving" / "rung-200.json").read_text())["promoted"]
    assert json.loads((folder / winner / "train_summary.json").read_text())["step"] == 400
    assert (folder / winner / "metrics.json").exists() and (folder / winner / "samples.txt").exists()
