"""2-node jobs submitted with ``sbatch`` on CI's real Slurm cluster (``.ci/slurm-up 2``: each node its own network
namespace and host name on this one machine), 4 ranks (DDP) training like one process: a requeued job resumes
on both nodes, a node that dies and a job at its time limit lose nothing. (The pipeline on 2 nodes under
Snakemake, with FSDP: ``test_slurm_e2e.py``.)

Every run here is a tiny char model whose per-step losses are compared with one process training the same
params in the test itself (batches are a pure function of seed and step, so a resumed run must continue
the uninterrupted curve). Skipped unless 2 Slurm nodes are idle.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from slurm_jobs import (
    COMMAND_TIMEOUT_S,
    TWO_NODE_HOSTS,
    TWO_NODE_LAUNCH,
    job_env,
    job_fields,
    max_relative_difference,
    one_process_losses,
    require_idle_nodes,
    run,
    train_losses,
    train_steps,
    two_node_workspace,
    wait_for,
)

from pipeline.schema import load
from stages import tokenize

pytestmark = pytest.mark.slow

NODES = TWO_NODE_LAUNCH["nnodes"]
# The runs that are interrupted (requeue, a node killed): long enough to stop mid-way; one reference for both.
LONG = {"training": {"max_steps": 200, "checkpoint_every": 50}, "eval": {"eval_every": 50, "eval_iters": 2}}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture(scope="module")
def two_nodes() -> None:
    """Skip unless the cluster has 2 idle nodes."""
    require_idle_nodes(NODES)


@pytest.fixture(scope="module")
def long_reference(two_nodes: None, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """One process's per-step losses for the ``LONG`` params."""
    ws = two_node_workspace(tmp_path_factory.mktemp("reference"), "one", **LONG)
    tokenized(ws)
    return one_process_losses(ws)


def tokenized(ws: Path) -> None:
    """Tokenize the workspace's corpus into ``ws/data`` (what every job here reads)."""
    tokenize.run(load(ws / "params.yaml"), data_root=ws / "data")


def sbatch_script(ws: Path, log: Path, *options: str) -> Path:
    """The README's 2-node batch script: ``exec python -m pipeline.launch params.yaml`` in the workspace."""
    script = ws / "train.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --nodes={NODES}\n"
        "#SBATCH --ntasks-per-node=1\n"
        f"#SBATCH --cpus-per-task={TWO_NODE_LAUNCH['cpus_per_node']}\n"
        f"#SBATCH --mem={TWO_NODE_LAUNCH['mem_mb']}\n"
        "#SBATCH --open-mode=append\n"  # a requeued or resubmitted run appends to the same log
        f"#SBATCH --output={log}\n"
        + "".join(f"#SBATCH {option}\n" for option in options)
        + 'echo "=== run ${SLURM_RESTART_COUNT:-0} of job $SLURM_JOB_ID"\n'
        f"cd {ws}\n"
        f"export DATA_ROOT={ws / 'data'} OUT_DIR={ws / 'out'}\n"
        f"exec {sys.executable} -m pipeline.launch params.yaml\n"
    )
    return script


def submit(ws: Path, script: Path) -> str:
    """``sbatch`` the script; its job id."""
    return run(["sbatch", "--parsable", str(script)], cwd=ws, env=job_env()).stdout.strip().split(";")[0]


def wait_until_ended(job_id: str, timeout_s: float) -> dict[str, str]:
    """The job's fields once it ended."""
    return wait_for(f"job {job_id} to end", lambda: (f := job_fields(job_id))["JobState"] in ENDED and f, timeout_s, 2)


def cancel(job_id: str) -> None:
    """``scancel`` (a no-op for a job that ended)."""
    subprocess.run(["scancel", job_id], check=False, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def hosts(ws: Path) -> dict[str, list[int]]:
    """``run_info.json``'s record of the nodes and the ranks on each."""
    return json.loads((ws / "out" / "run_info.json").read_text())["hosts"]


def logged_steps(ws: Path) -> int:
    """The newest step in the run's ``train.csv`` (0 before the first)."""
    return max(train_steps(ws / "out" / "plots" / "train.csv"), default=0)


def checkpoint_steps(ws: Path) -> list[int]:
    """Steps of the complete step checkpoints in ``out/checkpoints`` (each file loads)."""
    steps = []
    for path in sorted((ws / "out" / "checkpoints").glob("step-*.pt")):
        steps.append(int(torch.load(path, weights_only=True, map_location="cpu")["step"]))
    return sorted(steps)


def test_requeued_two_node_job_resumes_on_both_nodes(long_reference: dict[int, float], tmp_path: Path) -> None:
    max_steps = LONG["training"]["max_steps"]
    ws = two_node_workspace(tmp_path, "requeue", **LONG)
    tokenized(ws)
    log = ws / "slurm.log"
    job_id = submit(ws, sbatch_script(ws, log, "--requeue", "--time=10"))
    started = time.monotonic()
    try:
        wait_for("the first run to log 80 steps", lambda: logged_steps(ws) >= 80, 300, 0.5)
        run(["scontrol", "requeue", job_id])
        fields = wait_until_ended(job_id, 420)
    finally:
        cancel(job_id)
    print(f"2-node requeue test: {time.monotonic() - started:.0f} s")

    text = log.read_text()
    first, _, second = text.partition("=== run 1 of job")
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0" and fields["Restarts"] == "1", fields
    assert "DUE TO JOB REQUEUE" in first, first
    saved = re.findall(r"received signal 15: saved a checkpoint at step (\d+) and stopped", first)
    assert len(saved) == 1, first
    assert f"resumed from step {saved[0]} " in second and "on 4 x cpu" in second, second
    assert second.count(f"done: {max_steps} steps") == 1, second
    assert hosts(ws) == TWO_NODE_HOSTS
    four = train_losses(ws / "out")
    assert sorted(four) == list(range(1, max_steps + 1))
    difference = max_relative_difference(four, long_reference)
    print(f"requeued at step {saved[0]}; max relative loss difference vs 1 process: {difference:.2e}")
    assert difference < 1e-4


def test_a_node_that_dies_loses_nothing_but_its_steps_since_the_last_checkpoint(
    long_reference: dict[int, float], tmp_path: Path
) -> None:
    max_steps, every = LONG["training"]["max_steps"], LONG["training"]["checkpoint_every"]
    ws = two_node_workspace(tmp_path, "node-dies", **LONG)
    tokenized(ws)
    log = ws / "slurm.log"
    script = sbatch_script(ws, log, "--time=10")
    job_id = submit(ws, script)
    try:
        wait_for("a checkpoint and 20 steps more", lambda: logged_steps(ws) >= every + 20, 300, 0.5)
        killed = kill_training_on("n2")
        fields = wait_until_ended(job_id, 180)
    finally:
        cancel(job_id)
    died_at = logged_steps(ws)
    assert killed and fields["JobState"] == "FAILED", (killed, fields, log.read_text())

    # What the dead run left: complete checkpoints only, the newest of them what a rerun resumes from.
    saved = checkpoint_steps(ws)
    assert saved and all(step % every == 0 for step in saved), saved
    resume_step = saved[-1]
    assert not list((ws / "out" / "checkpoints").glob(".*.tmp-*")), "a partial checkpoint is left"

    rerun = submit(ws, script)  # what the user does: submit again (or rerun snakemake)
    try:
        fields = wait_until_ended(rerun, 420)
    finally:
        cancel(rerun)
    second = log.read_text().rpartition(f"=== run 0 of job {rerun}")[2]
    assert fields["JobState"] == "COMPLETED", (fields, second)
    assert f"resumed from step {resume_step} " in second, second
    four = train_losses(ws / "out")
    assert sorted(four) == list(range(1, max_steps + 1))
    difference = max_relative_difference(four, long_reference)
    print(
        f"node n2 killed at step ~{died_at}; resumed from step {resume_step}; "
        f"max relative loss difference vs 1 process: {difference:.2e}"
    )
    assert difference < 1e-4


def kill_training_on(node: str) -> list[int]:
    """SIGKILL the training processes (torchrun's workers) running in ``node``'s network namespace."""
    pids = subprocess.run(
        ["ip", "netns", "pids", f"nanugpt-{node}"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    killed = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "stages.train" in command and "pipeline.torchrun" not in command:
            subprocess.run(["kill", "-KILL", pid], check=False, timeout=30)
            killed.append(int(pid))
    return killed


def test_a_job_at_its_time_limit_saves_and_is_requeued(two_nodes: None, tmp_path: Path) -> None:
    """``--time=2`` and ``launch.stop_before_limit_s: 60``: the launcher asks the ranks to stop 60 s before the
    limit (SIGUSR1), they save, the launcher requeues the job, and the requeued run resumes from that step.
    (The 60 s the ranks train before the signal leave room for a start-up slowed by a loaded machine: a signal
    that arrives while the ranks still start up ends them before they can save.)"""
    ws = two_node_workspace(
        tmp_path,
        "time-limit",
        training={"max_steps": 100_000, "checkpoint_every": 10_000},
        eval={"eval_every": 10_000},
        launch={"stop_before_limit_s": 60},
    )
    tokenized(ws)
    log = ws / "slurm.log"
    job_id = submit(ws, sbatch_script(ws, log, "--requeue", "--time=2"))
    try:
        wait_for("the requeued run to resume", lambda: log.exists() and "resumed from step" in log.read_text(), 420, 1)
    finally:
        cancel(job_id)
    text = log.read_text()
    first, _, second = text.partition("=== run 1 of job")
    saved = re.findall(r"received signal 10: saved a checkpoint at step (\d+) and stopped", first)
    assert "the run saves and stops 60 s before" in first and len(saved) == 1, first
    assert f"launch: requeued Slurm job {job_id}" in first, first
    stopped_at = int(saved[0])
    last_logged = max(int(s) for s in re.findall(r"step (\d+)/100000", first) or ["0"])
    assert f"resumed from step {stopped_at} " in second, second
    print(f"time limit: saved at step {stopped_at} on the signal; steps lost: {max(0, last_logged - stopped_at)}")
    assert last_logged <= stopped_at
