"""End-to-end on a real Slurm cluster: the pipeline under ``snakemake --executor slurm``, and a requeued train job.

CI starts a single-node cluster with ``.ci/slurm-up`` (Debian's slurmctld, slurmd and munge;
no accounting, so snakemake polls job states with ``squeue``). Where ``sinfo`` is missing or no
node is idle, these tests are skipped. Training runs as 2 processes under the real ``torchrun``
(gloo on CPU) inside the Slurm jobs.

* ``test_pipeline_under_snakemake_slurm_executor``: the README's ``snakemake --executor slurm``
  line: every rule runs as a Slurm job; the train job gets the resources of the params' ``launch``
  section and runs torchrun with world size 2; every artifact the pipeline declares is there.
* ``test_requeued_train_job_resumes_from_its_checkpoint``: ``sbatch --requeue`` a train job,
  ``scontrol requeue`` it mid-run; the first run saves a checkpoint on SIGTERM, the second
  resumes from it and finishes, and the loss log has every step exactly once.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLURM, TINY_TEXT, require_slurm
from slurm_jobs import (
    COMMAND_TIMEOUT_S,
    SNAKEMAKE_SLURM,
    SNAKEMAKE_TIMEOUT_S,
    job_env,
    job_fields,
    run,
    train_steps,
    wait_for,
    workspace,
)

from pipeline.stages import STAGES, render

pytestmark = [pytest.mark.slow, SLURM]

RULES = tuple(STAGES)  # every stage is a rule, and every rule but `all` a Slurm job
# The train job: 2 processes under torchrun in one task of 2 cores; runtime and memory from params.
LAUNCH = {"nproc_per_node": 2, "cpus_per_node": 2, "runtime_min": 10, "mem_mb": 2000}


@pytest.fixture(scope="module")
def slurm() -> None:
    """Skip unless a Slurm cluster with an idle node answers here."""
    require_slurm()


def test_pipeline_under_snakemake_slurm_executor(slurm: None, tmp_path: Path) -> None:
    ws = workspace(tmp_path, "slurm", launch=LAUNCH)
    started = time.monotonic()
    result = run(SNAKEMAKE_SLURM, cwd=ws, env=job_env(), timeout=SNAKEMAKE_TIMEOUT_S)
    output = result.stdout + result.stderr
    print(f"the pipeline under Slurm: {time.monotonic() - started:.0f} s")

    # Every rule was submitted as a Slurm job, ran to completion, and left its Slurm log.
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    assert len(submitted) == len(RULES), output
    jobs, slurm_logs = {}, {}
    for job_id, slurm_log in submitted:
        fields = job_fields(job_id)  # what slurmctld itself says about the job
        rule = fields["Comment"].removeprefix("rule_").split("_wildcards")[0]  # the plugin's --comment
        jobs[rule], slurm_logs[rule] = fields, Path(slurm_log)
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", fields
        assert slurm_logs[rule].is_file() and slurm_logs[rule].parent.name == f"rule_{rule}", slurm_log
        assert (ws / ".snakemake" / "slurm_logs") in slurm_logs[rule].parents, slurm_log
    assert sorted(jobs) == sorted(RULES), jobs
    assert "localrule train:" in slurm_logs["train"].read_text()  # the job's own snakemake ran the rule

    # The train job asked Slurm for the params' launch resources ...
    train = jobs["train"]
    assert train["NumCPUs"] == "2" and train["TimeLimit"] == "00:10:00", train
    assert train["MinMemoryNode"] == "2000M", train
    # ... and ran torchrun with 2 processes inside it.
    train_log = (ws / "out" / "logs" / "train.log").read_text()
    assert "launch: " in train_log
    assert "-m pipeline.torchrun --shutdown-timeout=180 --standalone --nproc-per-node=2 -m stages.train" in train_log
    assert "on 2 x cpu" in train_log, train_log
    assert train_log.count("done: 20 steps") == 1, train_log  # rank 0 alone logs
    run_info = json.loads((ws / "out" / "run_info.json").read_text())
    assert run_info["world_size"] == 2, run_info

    # Every artifact of the pipeline's table, where the local orchestrators put it too.
    declared = [
        render(template, "data/tiny/char", "out")
        for stage in STAGES.values()
        for template in (*stage.outs, *stage.metrics, *stage.plots)
    ]
    missing = [path for path in declared if not (ws / path).exists()]
    assert not missing, f"declared outputs missing: {missing}"
    for name in ("metrics.json", "samples.txt", "plots/train.csv", "checkpoints/last.pt"):
        assert (ws / "out" / name).stat().st_size > 0, name


def test_requeued_train_job_resumes_from_its_checkpoint(slurm: None, tmp_path: Path) -> None:
    max_steps, checkpoint_every = 1500, 100
    ws = workspace(
        tmp_path,
        "requeue",
        TINY_TEXT * 5,  # more distinct windows than the tiny corpus: the loss keeps moving
        model={"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64},
        training={"max_steps": max_steps, "checkpoint_every": checkpoint_every, "log_every": 10, "keep_last": 2},
        eval={"eval_every": 500, "eval_iters": 2},
        launch=LAUNCH,
    )
    env = job_env()
    run([sys.executable, "-m", "stages.tokenize", "params.yaml"], cwd=ws, env=env)

    log = ws / "slurm-train.log"
    script = ws / "train.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=nanugpt-requeue-test\n"
        "#SBATCH --requeue\n"
        "#SBATCH --open-mode=append\n"  # the requeued run appends to the first run's log
        f"#SBATCH --output={log}\n"
        "#SBATCH --ntasks=1\n"
        f"#SBATCH --cpus-per-task={LAUNCH['cpus_per_node']}\n"
        f"#SBATCH --mem={LAUNCH['mem_mb']}\n"
        f"#SBATCH --time={LAUNCH['runtime_min']}\n"
        'echo "=== run ${SLURM_RESTART_COUNT:-0} of job $SLURM_JOB_ID"\n'
        f"cd {ws}\n"
        f"exec {sys.executable} -m pipeline.launch params.yaml\n"
    )
    started = time.monotonic()
    job_id = run(["sbatch", "--parsable", str(script)], cwd=ws, env=env).stdout.strip().split(";")[0]
    csv_path = ws / "out" / "plots" / "train.csv"
    try:

        def well_under_way() -> bool:
            """True once the first run logged 300 steps (of 1500; checkpoints every 100)."""
            if max(train_steps(csv_path), default=0) >= 300:
                return True
            state = job_fields(job_id)["JobState"]
            if state not in ("PENDING", "CONFIGURING", "RUNNING"):
                pytest.fail(f"the job ended ({state}) before it logged 300 steps\n{log.read_text()}")
            return False

        wait_for("the first run to log 300 steps", well_under_way, 240, 0.2)
        requeued_at = max(train_steps(csv_path))
        run(["scontrol", "requeue", job_id])
        fields = wait_for(
            "the requeued job to finish",
            lambda: (f := job_fields(job_id))["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") and f,
            420,
            2.0,
        )
    finally:
        # a no-op once it ended
        subprocess.run(["scancel", job_id], check=False, capture_output=True, timeout=COMMAND_TIMEOUT_S)
    print(f"requeue test: {time.monotonic() - started:.0f} s from sbatch to the end of the second run")

    text = log.read_text()
    first, _, second = text.partition("=== run 1 of job")
    assert second, f"the job did not run a second time\n{text}"
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0" and fields["Restarts"] == "1", fields
    assert "DUE TO JOB REQUEUE" in first, first
    assert "--standalone --nproc-per-node=2" in first and "on 2 x cpu" in first

    # The first run saved a checkpoint when Slurm's SIGTERM arrived; the second resumed from exactly there.
    saved = re.findall(r"received signal 15: saved a checkpoint at step (\d+) and stopped", first)
    assert len(saved) == 1, first
    stopped_at = int(saved[0])
    assert requeued_at <= stopped_at < max_steps
    assert f"resumed from step {stopped_at} " in second, second
    assert second.count(f"done: {max_steps} steps") == 1, second

    # The loss log has every step once, and the curve continues where it was (not from a fresh model).
    with open(csv_path, newline="") as f:
        rows = {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f)}
    assert train_steps(csv_path) == list(range(1, max_steps + 1))
    assert rows[stopped_at + 1] < rows[1] - 1.0, (rows[1], rows[stopped_at], rows[stopped_at + 1])
    assert abs(rows[stopped_at + 1] - rows[stopped_at]) < 0.5, (rows[stopped_at], rows[stopped_at + 1])
