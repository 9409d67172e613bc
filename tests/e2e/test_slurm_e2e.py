"""End-to-end on CI's real Slurm cluster (``.ci/slurm-up 2``: two nodes, each its own network namespace and host
name on this one machine): the README's ``snakemake --executor slurm`` line, as written, runs the whole pipeline.

Every rule is a Slurm job (slurmctld's own record of each is read back); the train job gets the resources of the
params' ``launch`` section, 2 nodes of 2 ranks, and trains with ``training.strategy: fsdp``: each rank holds a
quarter of the model, the per-step losses are one process's, the checkpoint is a folder of every rank's shards
that the other stages read, and a second snakemake run has nothing to do. Skipped unless 2 Slurm nodes are idle.
A train submitted with ``launch.submit: slurm`` runs the code of its submission, not an edit made while it waits.

The other Slurm tests: ``test_multinode_e2e.py`` (2-node DDP jobs requeued, a node killed, a time limit),
``test_sweep_slurm_e2e.py`` (the README's sweep: 1-node jobs side by side) and
``tests/unit/pipeline/test_submit.py`` (``dvc exp run`` submitting train as a job).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_jobs import (
    SNAKEMAKE_SLURM,
    SNAKEMAKE_TIMEOUT_S,
    TWO_NODE_HOSTS,
    job_env,
    job_fields,
    max_relative_difference,
    one_process_losses,
    require_idle_nodes,
    run,
    train_losses,
    two_node_workspace,
    wait_for,
    workspace,
)

from pipeline.stages import STAGES, render

pytestmark = pytest.mark.slow

RULES = tuple(STAGES)  # every stage is a rule, and every rule but `all` a Slurm job


def test_readme_pipeline_on_slurm_two_nodes_fsdp(tmp_path: Path) -> None:
    require_idle_nodes(2)
    ws = two_node_workspace(tmp_path, "slurm", training={"strategy": "fsdp", "checkpoint_every": 10})
    started = time.monotonic()
    result = run(SNAKEMAKE_SLURM, cwd=ws, env=job_env(), timeout=SNAKEMAKE_TIMEOUT_S)
    output = result.stdout + result.stderr
    print(f"the pipeline under Slurm, 2 nodes x 2 ranks, fsdp: {time.monotonic() - started:.0f} s")

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

    # The train job asked Slurm for the params' launch resources: 2 nodes of 2 CPUs, 10 minutes, 2000 MB each ...
    train = jobs["train"]
    assert train["NumNodes"] == "2" and train["NodeList"] == "n[1-2]" and train["NumCPUs"] == "4", train
    assert train["TimeLimit"] == "00:10:00" and train["MinMemoryNode"] == "2000M", train
    # ... and ran one torchrun per node through srun, 4 ranks in all, rank 0 alone logging.
    train_log = (ws / "out" / "logs" / "train.log").read_text()
    assert "srun --nodes=2 --ntasks-per-node=1" in train_log and "on 4 x cpu" in train_log, train_log
    assert train_log.count("done: 20 steps") == 1, train_log
    run_info = json.loads((ws / "out" / "run_info.json").read_text())
    assert run_info["world_size"] == 4 and run_info["hosts"] == TWO_NODE_HOSTS, run_info

    # Every artifact of the pipeline's table is there; the checkpoint is a folder of shards the other stages read.
    declared = [
        render(template, "data/tiny/char", "out")
        for stage in STAGES.values()
        for template in (*stage.outs, *stage.metrics, *stage.plots)
    ]
    missing = [path for path in declared if not (ws / path).exists()]
    assert not missing, f"declared outputs missing: {missing}"
    checkpoints = ws / "out" / "checkpoints"
    assert (checkpoints / "last").is_dir() and not (checkpoints / "last.pt").exists(), sorted(checkpoints.iterdir())
    assert json.loads((checkpoints / "last.json").read_text()) == {"step": 20, "last": "last"}
    assert json.loads((ws / "out" / "metrics.json").read_text())["val_loss"] > 0  # evaluate read the shards
    assert (ws / "out" / "samples.txt").read_text() and (ws / "out" / "hf" / "config.json").is_file()
    again = run([*SNAKEMAKE_SLURM, "-n"], cwd=ws, env=job_env())
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout + again.stderr

    # Each step logged once (one writer), with one process's losses.
    four = train_losses(ws / "out")
    assert sorted(four) == list(range(1, 21))
    difference = max_relative_difference(four, one_process_losses(ws))
    print(f"fsdp, 4 ranks on 2 nodes: max relative loss difference vs 1 process: {difference:.2e}")
    assert difference < 1e-4


# Held at submission (sbatch --hold) until the test has edited the workspace; one node, one process.
HELD_LAUNCH = {"submit": "slurm", "slurm_args": ["--hold"], "cpus_per_node": 1, "mem_mb": 1000, "runtime_min": 10}
BROKEN = 'raise RuntimeError("edited after submission")\n'


def test_a_queued_job_runs_the_code_it_was_submitted_with(tmp_path: Path) -> None:
    require_idle_nodes(1)
    ws = workspace(tmp_path, "snapshot", launch=HELD_LAUNCH)
    env = job_env()
    git = ["git", "-c", "user.name=nanugpt tests", "-c", "user.email=tests@nanugpt.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "submitted"]):
        run([*git, *command], cwd=ws, env=env)
    sha = run(["git", "rev-parse", "HEAD"], cwd=ws, env=env).stdout.strip()
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("max_steps: 20", "max_steps: 6"))  # uncommitted: the job has it
    run([sys.executable, "-m", "stages.tokenize", "params.yaml"], cwd=ws, env=env)
    log = tmp_path / "launcher.log"
    started = time.monotonic()
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "pipeline.launch", "params.yaml"], cwd=ws, env=env, stdout=out, stderr=out
        )
    job_id = None
    try:
        found = wait_for("the held job", lambda: re.search(r"submit: Slurm job (\d+)", log.read_text()), 60, 0.2)
        job_id = found.group(1)
        assert job_fields(job_id)["JobState"] == "PENDING", job_fields(job_id)
        for module in ("pipeline/launch.py", "stages/train.py", "nanugpt/train/trainer.py"):  # every layer it runs
            (ws / module).write_text((ws / module).read_text() + BROKEN)  # fails at import
        run(["scontrol", "release", job_id], env=env)
        code = launcher.wait(timeout=180)
    finally:
        launcher.kill()
        if job_id:  # a held job left behind would wait forever
            subprocess.run(["scancel", job_id], capture_output=True, check=False)
    text = log.read_text()
    print(f"a held job, released after an edit: {time.monotonic() - started:.0f} s")
    assert code == 0 and "done: 6 steps" in text, text
    code_record = json.loads((ws / "out" / "run_info.json").read_text())["code"]
    snapshot = Path(code_record["snapshot"])
    assert code_record["sha"] == sha and code_record["dirty"] is True, code_record
    assert snapshot.parent == (ws / "out" / ".code").resolve() and snapshot.name.startswith(f"{sha}-"), snapshot
    assert f"the job runs the code of {sha} + uncommitted changes" in text, text
    assert "max_steps: 6" in (snapshot / "tree" / "params.yaml").read_text()  # the uncommitted change, applied
    assert not (snapshot / "tree" / "stages" / "train.py").read_text().endswith(BROKEN)
