"""``launch.submit: slurm``: the train stage, started outside a Slurm job, submits itself and waits for it.

    dvc exp run --queue -S launch.submit=slurm ... && dvc queue start -j 8   # eight experiments, eight Slurm jobs

``pipeline.launch`` calls ``submit_and_wait`` when ``launch.submit`` is ``slurm`` and ``SLURM_JOB_ID`` is unset
(a login node, a DVC queue worker). It runs ``sbatch --wait`` with the resources of the ``launch`` section
(nodes, cores and memory per node, GPUs, wall time) and ``launch.slurm_args``; sbatch also reads the
cluster's usual ``SBATCH_PARTITION`` / ``SBATCH_ACCOUNT`` variables. The job runs ``python -m pipeline.launch``
again with the same arguments, in the same folder and environment (``OUT_DIR``, ``DATA_ROOT``): inside the
job it starts the stage as usual. It runs the code as it was at submission, not when the job starts: a snapshot
of the git commit and its uncommitted changes under ``OUT_DIR/.code`` (``pipeline.snapshot``), recorded in
``run_info.json``. Meanwhile the job's output (``OUT_DIR/logs/slurm-<job id>.out``) is copied
to this console as it grows; Ctrl-C or a SIGTERM cancels the job (``scancel``: the stage gets SIGTERM and
saves a checkpoint); the exit code is the job's, or 128 + the signal's number when a cancelled job reports 0.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from nanugpt.distributed.signals import STOP_SIGNALS
from nanugpt.errors import UserError
from pipeline import paths, snapshot
from pipeline.schema import PipelineParams

POLL_S = 0.5  # how often the job's output file is read while it runs


def should_submit(params: PipelineParams, env: Mapping[str, str]) -> bool:
    """True when the train stage must submit itself: ``launch.submit: slurm`` and not already inside a job."""
    return params.launch.submit == "slurm" and not env.get("SLURM_JOB_ID")


def sbatch_command(params: PipelineParams, launch_argv: Sequence[str], output: Path) -> list[str]:
    """``sbatch --wait ...`` for a job that runs ``python -m pipeline.launch <launch_argv>`` with params' resources."""
    launch = params.launch
    options = [
        "--wait",
        "--parsable",
        f"--job-name=nanugpt-train-{params.general.run_name}",
        f"--nodes={launch.nnodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={launch.cpus}",
        f"--mem={launch.mem_mb}",
        f"--time={launch.runtime_min}",
        f"--output={output}",
        "--export=ALL",
    ]
    if launch.gpus_per_node:
        options.append(f"--gres=gpu:{launch.gpus_per_node}")
    command = shlex.join([sys.executable, "-m", "pipeline.launch", *launch_argv])
    return ["sbatch", *options, *launch.slurm_args, f"--wrap={command}"]


def follow(path: Path, out: TextIO, done: threading.Event) -> None:
    """Copy what is appended to ``path`` to ``out`` until ``done`` is set (and the rest once more after it)."""
    offset = 0
    while True:
        finished = done.is_set()
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                text = f.read()
                offset = f.tell()
        except FileNotFoundError:
            text = ""
        if text:
            out.write(text)
            out.flush()
        if finished:
            return
        time.sleep(POLL_S)


def submit_and_wait(params: PipelineParams, launch_argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Submit the train stage as a Slurm job, stream its output, cancel it on a stop signal; its exit code."""
    logs = paths.writable(paths.out_dir() / "logs", "OUT_DIR")
    output = (logs / "slurm-%j.out").resolve()
    code_snapshot = snapshot.take(paths.out_dir(), context="launch.submit: slurm")
    job_env = {**env, **snapshot.job_env(code_snapshot, env)}
    command = sbatch_command(params, launch_argv, output)
    try:
        # its own session: a Ctrl-C at the terminal reaches this process alone, which cancels the job
        sbatch = subprocess.Popen(command, env=job_env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        raise UserError("launch.submit is slurm but sbatch is not on PATH: run on a Slurm login node") from None
    assert sbatch.stdout is not None
    job_id = sbatch.stdout.readline().strip().split(";")[0]  # --parsable prints the id at submission
    if not job_id:
        return sbatch.wait() or 1  # sbatch refused the job and said why on stderr
    log = Path(str(output).replace("%j", job_id))
    print(f"submit: Slurm job {job_id} ({shlex.join(command[:-1])} ...); its output: {log}", flush=True)
    print(f"submit: the job runs the code of {code_snapshot.describe()}, copied to {code_snapshot.tree}", flush=True)

    stopped_by: list[int] = []  # the stop signal that cancelled the job, if one did

    def cancel(signum: int, frame: object) -> None:
        print(f"submit: signal {signum}: cancelling Slurm job {job_id}", flush=True)
        stopped_by.append(signum)
        subprocess.run(["scancel", job_id], check=False)

    done = threading.Event()
    streamer = threading.Thread(target=follow, args=(log, sys.stdout, done), daemon=True)
    streamer.start()
    previous = {s: signal.signal(s, cancel) for s in STOP_SIGNALS}
    try:
        code = sbatch.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        done.set()
        streamer.join()
    print(f"submit: Slurm job {job_id} ended with exit code {code}", flush=True)
    if stopped_by and code == 0:
        # sbatch --wait can report 0 for a job scancel ended before its stage saved and exited by itself
        code = 128 + stopped_by[0]
        print(f"submit: the job was cancelled on signal {stopped_by[0]}: exit code {code}", flush=True)
    return code
