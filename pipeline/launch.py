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
no stage and no torch: it runs the train stage as a command.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from nanugpt.errors import UserError
from nanugpt.signals import STOP_SIGNALS
from pipeline import submit
from pipeline.cli import parse_argv, run_command
from pipeline.schema import PipelineParams, load

RDZV_PORT = 29500
# The environment variable that hands the launch command to the train stage, which records it in run_info.json.
LAUNCH_COMMAND_ENV = "NANUGPT_LAUNCH_COMMAND"


def first_slurm_node(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[01-04]`` (expanded by ``scontrol``)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def build_command(params: PipelineParams, stage_argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command that runs the train stage: plain Python, ``torchrun`` or ``srun torchrun``."""
    nproc, nnodes = params.launch.nproc_per_node, params.launch.nnodes
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    stage = ["-m", "stages.train", *stage_argv]
    if nnodes > 1:
        job_id, nodelist = env.get("SLURM_JOB_ID"), env.get("SLURM_JOB_NODELIST")
        if job_id and not nodelist:  # Snakemake's Slurm jobstep strips SLURM_JOB_NODELIST: ask Slurm
            nodelist = subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True, timeout=60, check=False
            ).stdout.strip()
        if not job_id or not nodelist:
            raise UserError(
                f"launch.nnodes is {nnodes}: run inside a Slurm allocation of {nnodes} nodes (sbatch/salloc)"
            )
        head = first_slurm_node(nodelist)
        return [
            "srun",
            f"--nodes={nnodes}",
            "--ntasks-per-node=1",
            *torchrun,
            f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={head}:{RDZV_PORT}",
            f"--rdzv-id={job_id}",
            *stage,
        ]
    if nproc > 1:
        return [*torchrun, "--standalone", f"--nproc-per-node={nproc}", *stage]
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
        command = build_command(params, [path, *overrides], os.environ)
        printable = shlex.join(command)
        env = {**os.environ, LAUNCH_COMMAND_ENV: printable}
        if params.launch.nnodes == 1 and params.launch.nproc_per_node == 1:
            print(f"launch: {printable} (in this process)", flush=True)
            os.execvpe(command[0], command, env)  # never returns
        print(f"launch: {printable}", flush=True)
        return run_forwarding_signals(command, env)

    return run_command(body)


def run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` and wait for it; a stop signal (preemption, requeue, Ctrl-C) is passed on to it.

    The launcher keeps waiting while torchrun and its ranks save their checkpoint, instead of dying
    at once and leaving them to be killed with the job step.
    """
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
