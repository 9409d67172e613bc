"""The train stage's launcher: plain Python, ``torchrun``, or ``srun torchrun``, chosen from params and environment.

    python -m pipeline.launch [params.yaml] [--section.key value ...]

* ``launch.nnodes: 1`` and ``launch.nproc_per_node: 1``: the launcher execs
  ``python -m stages.train ...`` in its place (no torchrun start-up cost; signals
  reach the stage directly).
* ``launch.nproc_per_node: N`` on one node: ``torchrun --standalone
  --nproc-per-node=N -m stages.train ...``.
* ``launch.nnodes: M`` inside a Slurm allocation: ``srun`` starts one
  ``torchrun`` per node with c10d rendezvous on the first node of
  ``$SLURM_JOB_NODELIST`` and ``--rdzv-id=$SLURM_JOB_ID``.

The command is printed and recorded in ``run_info.json``. The launcher imports
no stage and no torch: it runs the train stage as a command. With
``general.reproducible: strict`` it hands the stage's processes the variables
that choose the CPU kernels (``pipeline.threads.STRICT_KERNELS``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nanugpt.distributed.signals import STOP_SIGNALS
from nanugpt.errors import UserError
from pipeline import paths, submit
from pipeline.cli import parse_argv, run_command
from pipeline.console_log import CONSOLE_IS_LOG_ENV, is_file
from pipeline.schema import PipelineParams, load
from pipeline.threads import STRICT_KERNELS, rank_threads, usable_cores

RDZV_PORT = 29500
# The environment variable that hands the launch command to the train stage, which records it in run_info.json.
LAUNCH_COMMAND_ENV = "NANUGPT_LAUNCH_COMMAND"


def first_slurm_node(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[01-04]`` (expanded by ``scontrol``); a list of plain names
    (``n1`` or ``n1,n2``) needs no ``scontrol``."""
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


@dataclass(frozen=True)
class SlurmJob:
    """The Slurm job this launcher runs in: its id, node list and node count."""

    job_id: str
    nodelist: str
    nnodes: int

    @staticmethod
    def from_env(env: Mapping[str, str]) -> SlurmJob | None:
        """The job of ``env`` (None outside one). Snakemake's Slurm jobstep strips every ``SLURM_*`` variable but
        the job id, so what is missing is asked of ``squeue``."""
        job_id = env.get("SLURM_JOB_ID")
        if not job_id:
            return None
        nodelist, nnodes = env.get("SLURM_JOB_NODELIST", ""), env.get("SLURM_JOB_NUM_NODES", "")
        if not nodelist or not nnodes:
            nodelist, nnodes = squeue(job_id, "%N %D").split()
        return SlurmJob(job_id, nodelist, int(nnodes))


def squeue(job_id: str, fmt: str) -> str:
    """One job's fields from ``squeue -o fmt`` (raises UserError when Slurm does not answer)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", fmt], capture_output=True, text=True, timeout=60)
    if out.returncode or not out.stdout.strip():
        raise UserError(f"squeue does not know Slurm job {job_id}: {out.stderr.strip() or 'no output'}")
    return out.stdout.strip()


def seconds_left(job_id: str) -> int | None:
    """Seconds before the job's time limit (None when it has none), as ``squeue`` reports it."""
    return parse_time_left(squeue(job_id, "%L"))


def parse_time_left(text: str) -> int | None:
    """``squeue``'s time left, ``[[D-]HH:]MM:SS``, in seconds; None for ``UNLIMITED`` or ``NOT_SET``."""
    if not re.fullmatch(r"(\d+-)?(\d+:){0,2}\d+", text):
        return None
    days, _, clock = text.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def torchrun(params: PipelineParams) -> list[str]:
    """Our torchrun (``pipeline.torchrun``): it forwards SIGUSR1 too and reports failed ranks in one line each."""
    grace = params.launch.stop_before_limit_s
    return [sys.executable, "-m", "pipeline.torchrun", f"--shutdown-timeout={grace}"]


def build_command(params: PipelineParams, stage_argv: Sequence[str], job: SlurmJob | None) -> list[str]:
    """The command that runs the train stage: plain Python, ``torchrun`` or ``srun torchrun``."""
    nproc, nnodes = params.launch.nproc_per_node, params.launch.nnodes
    stage = ["-m", "stages.train", *stage_argv]
    if nnodes > 1:
        if job is None:
            raise UserError(
                f"launch.nnodes is {nnodes}: run inside a Slurm allocation of {nnodes} nodes (sbatch -N {nnodes})"
            )
        if job.nnodes < nnodes:
            raise UserError(
                f"launch.nnodes is {nnodes} but Slurm job {job.job_id} has {job.nnodes} node(s) ({job.nodelist}): "
                f"ask for --nodes={nnodes}"
            )
        return [
            "srun",
            f"--nodes={nnodes}",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",  # a node whose ranks failed ends the step on every node
            *torchrun(params),
            f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={first_slurm_node(job.nodelist)}:{RDZV_PORT}",
            f"--rdzv-id={job.job_id}",
            *stage,
        ]
    if nproc > 1:
        return [*torchrun(params), "--standalone", f"--nproc-per-node={nproc}", *stage]
    return [sys.executable, *stage]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the train stage's command from params and run it (exec for one process); exit code as the stage's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    path, overrides = parse_argv(argv)

    def body() -> int:
        params = load(path, overrides)
        if submit.should_submit(params, os.environ):  # launch.submit: slurm, outside a job: submit and wait
            return submit.submit_and_wait(params, [path, *overrides], os.environ)
        job = SlurmJob.from_env(os.environ)
        command = build_command(params, [path, *overrides], job)
        stop_after = stop_delay(params, job)
        printable = shlex.join(command)
        env = {**os.environ, LAUNCH_COMMAND_ENV: printable}
        if command[0] != sys.executable:  # torchrun's ranks share the job's cores (pipeline.threads)
            cpus, nproc = params.launch.cpus_per_node, params.launch.nproc_per_node
            share = rank_threads(params.general.threads, env, cores=usable_cores(), cpus=cpus, nproc=nproc)
            env["OMP_NUM_THREADS"] = str(share)
        if params.general.reproducible == "strict":  # read by torch, MKL and oneDNN as they load
            env.update(STRICT_KERNELS)
        log = paths.log_file("train")
        if any(is_file(stream, log) for stream in (sys.stdout, sys.stderr)):  # e.g. Snakemake's `> log 2>&1`
            env[CONSOLE_IS_LOG_ENV] = str(log.resolve())
        if command[0] == sys.executable and stop_after is None:
            print(f"launch: {printable} (in this process)", flush=True)
            os.execvpe(command[0], command, env)  # never returns
        print(f"launch: {printable}", flush=True)
        code = run_forwarding_signals(command, env, stop_after)
        if job is not None and code == 128 + signal.SIGUSR1:
            requeue(job)
        return code

    return run_command(body)


def stop_delay(params: PipelineParams, job: SlurmJob | None) -> float | None:
    """Seconds until the train stage is asked to save and stop ahead of the job's time limit; None: no limit."""
    if job is None:
        return None
    left = seconds_left(job.job_id)
    if left is None:
        return None
    margin = params.launch.stop_before_limit_s
    if left <= margin:
        raise UserError(
            f"Slurm job {job.job_id} has {left} s left, not more than launch.stop_before_limit_s ({margin} s): "
            "the run would stop before its first step; ask for a longer --time or lower launch.stop_before_limit_s"
        )
    print(f"launch: Slurm job {job.job_id} ends in {left} s; the run saves and stops {margin} s before", flush=True)
    return float(left - margin)


def requeue(job: SlurmJob) -> None:
    """Put the job back in the queue after its run saved and stopped on SIGUSR1 (time limit ahead)."""
    done = subprocess.run(["scontrol", "requeue", job.job_id], capture_output=True, text=True, timeout=60)
    if done.returncode:
        print(
            f"launch: the run stopped on SIGUSR1 and saved; `scontrol requeue {job.job_id}` failed "
            f"({done.stderr.strip()}): submit the job again to resume",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"launch: requeued Slurm job {job.job_id}: it resumes from the checkpoint it just saved", flush=True)


def run_forwarding_signals(command: list[str], env: dict[str, str], stop_after: float | None = None) -> int:
    """Run ``command`` and wait for it; a stop signal (preemption, requeue, Ctrl-C) is passed on to it, and
    after ``stop_after`` seconds (the time limit ahead) SIGUSR1 is sent to it. Returns its exit code, or
    128 + SIGUSR1 when it was asked to stop with SIGUSR1 and ended: with ``srun --kill-on-bad-exit``, the
    node that stops first ends the others' tasks, and srun's own exit code no longer says why.

    The launcher keeps waiting while torchrun and its ranks save their checkpoint, instead of dying
    at once and leaving them to be killed with the job step.
    """
    child = subprocess.Popen(command, env=env)
    sent: list[int] = []

    def forward(signum: int, frame: object = None) -> None:
        sent.append(signum)
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    timer = None
    if stop_after is not None:
        timer = threading.Timer(stop_after, forward, (signal.SIGUSR1,))
        timer.daemon = True
        timer.start()
    try:
        code = child.wait()
    finally:
        if timer is not None:
            timer.cancel()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + signal.SIGUSR1 if code and signal.SIGUSR1 in sent else code


if __name__ == "__main__":
    sys.exit(main())
