"""``launch.submit: slurm``: the sbatch command from the launch section, and on the real Slurm cluster: the train
stage submitting itself under ``dvc exp run``, its exit code, and Ctrl-C cancelling the job."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import dvc_env, make_workspace, require_slurm, run, tiny_params

from nanugpt.config.params import validate_params
from pipeline.schema import PipelineParams
from pipeline.submit import sbatch_command, should_submit

LAUNCH = {"submit": "slurm", "cpus_per_node": 1, "mem_mb": 1000, "runtime_min": 10}


def params(corpus: Path, **launch: object) -> PipelineParams:
    plain = tiny_params(corpus, launch=launch, training={"device_batch_size": 1})  # 8 rows split over up to 8 ranks
    return validate_params(plain, "test", schema=PipelineParams)  # type: ignore[return-value]


def test_sbatch_asks_for_the_launch_resources_and_reruns_the_launcher(corpus: Path) -> None:
    p = params(corpus, nnodes=2, nproc_per_node=4, gpus_per_node=4, cpus_per_node=32, mem_mb=64000, runtime_min=90,
               submit="slurm", slurm_args=["--partition=gpu", "--account=proj"])  # fmt: skip
    command = sbatch_command(p, ["params.yaml", "--optimizer.lr", "0.001"], Path("/runs/logs/slurm-%j.out"))
    assert command[:2] == ["sbatch", "--wait"]
    wanted = "--nodes=2 --ntasks-per-node=1 --cpus-per-task=32 --mem=64000 --time=90 --gres=gpu:4"
    for option in [*wanted.split(), "--output=/runs/logs/slurm-%j.out", "--partition=gpu", "--account=proj"]:
        assert option in command, option
    assert command[-1] == f"--wrap={sys.executable} -m pipeline.launch params.yaml --optimizer.lr 0.001"


def test_only_slurm_outside_a_job_submits(corpus: Path) -> None:
    assert should_submit(params(corpus, submit="slurm"), {})
    assert not should_submit(params(corpus, submit="slurm"), {"SLURM_JOB_ID": "12"})  # inside the job: run here
    assert not should_submit(params(corpus), {})


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    require_slurm()
    env = dvc_env(tmp_path)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    return make_workspace(tmp_path, tiny_params("corpus.txt", launch=LAUNCH), env), env


def job_state(job_id: str) -> str:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False)
    return dict(re.findall(r"(\w+)=(\S*)", text.stdout)).get("JobState", "")


@pytest.mark.slow
def test_dvc_exp_run_trains_in_a_slurm_job(workspace: tuple[Path, dict[str, str]]) -> None:
    ws, env = workspace
    result = run(["dvc", "exp", "run", "-S", "optimizer.lr=0.001"], ws, env)
    text = result.stdout + result.stderr
    job_id = re.search(r"submit: Slurm job (\d+)", text).group(1)  # type: ignore[union-attr]
    assert "done: 20 steps" in text  # the job's output streamed to dvc's console
    assert f"submit: Slurm job {job_id} ended with exit code 0" in text
    assert job_state(job_id) == "COMPLETED"
    run_info = json.loads((ws / "out" / "run_info.json").read_text())
    assert run_info["params"]["optimizer"]["lr"] == 0.001
    assert json.loads((ws / "out" / "metrics.json").read_text())["val_loss"] > 0


@pytest.mark.slow
def test_a_failing_job_returns_its_exit_code(workspace: tuple[Path, dict[str, str]]) -> None:
    ws, env = workspace
    run([sys.executable, "-m", "stages.tokenize", "params.yaml"], ws, env)
    result = run(
        [sys.executable, "-m", "pipeline.launch", "params.yaml", "--training.resume", "/nonexistent/last.pt"],
        ws,
        env,
        expect_ok=False,
    )
    assert result.returncode == 1 and "ended with exit code 1" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_ctrl_c_cancels_the_job(workspace: tuple[Path, dict[str, str]]) -> None:
    ws, env = workspace
    run([sys.executable, "-m", "stages.tokenize", "params.yaml"], ws, env)
    log = ws / "launcher.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "pipeline.launch", "params.yaml", "--training.max_steps", "100000"],
            cwd=ws,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while "| loss" not in log.read_text() and time.monotonic() < deadline:  # the job trains
                assert launcher.poll() is None, log.read_text()
                time.sleep(1)
            job_id = re.search(r"submit: Slurm job (\d+)", log.read_text()).group(1)  # type: ignore[union-attr]
            launcher.send_signal(signal.SIGINT)
            code = launcher.wait(timeout=180)
        finally:
            launcher.kill()
    text = log.read_text()
    assert code != 0 and f"cancelling Slurm job {job_id}" in text, text
    assert job_state(job_id) in ("CANCELLED", "COMPLETING") or job_state(job_id).startswith("CANCELLED"), text
