"""How many intra-op CPU threads a stage's process uses: what it was given, never one per core of the machine.

PyTorch starts a thread per core by default, so two stages at once (``snakemake -j 2``, ``dvc queue start -j 2``,
two ranks under torchrun) each take every core and slow each other down many times over. A process takes, first
found:

1. ``general.threads``, when set;
2. ``OMP_NUM_THREADS``: Snakemake sets it to the rule's ``threads``, a user or a job script may set it, and the
   train launcher sets it to each rank's share before it starts torchrun;
3. ``SLURM_CPUS_PER_TASK`` (a Slurm job's cores), shared by the node's processes (``LOCAL_WORLD_SIZE``);
4. the cores this process may run on (its CPU affinity), shared the same way.

The train launcher divides the job's cores (``OMP_NUM_THREADS``, ``SLURM_CPUS_PER_TASK``, ``launch.cpus_per_node``,
then the usable cores) among its ``launch.nproc_per_node`` processes and hands each its share as
``OMP_NUM_THREADS``. A run records the count it used (``run_info.json``'s environment, checkpoints): CPU results
are bitwise the same at one thread count and agree to rounding at another, which a resume then says.

``general.reproducible: strict`` chooses the kernels too: the train launcher hands its processes ``STRICT_KERNELS``,
which torch, MKL and oneDNN read when they load, so each process must get them before it imports torch; the train
stage refuses to start in strict mode without them (docs/reproducibility.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from nanugpt.errors import UserError

# The kernels every x86-64 CPU has, so that CPUs of other generations compute the same bits: ATen's unvectorized
# baseline, MKL's conditional numerical reproducibility (its SSE2 code on any Intel-compatible CPU), oneDNN's SSE4.1
# code (its GELU differs between AVX2 and AVX-512).
STRICT_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def require_strict_kernels(reproducible: str, env: Mapping[str, str] = os.environ) -> None:
    """Refuse a ``general.reproducible: strict`` process that was started without ``STRICT_KERNELS`` (the train
    stage run by hand rather than through ``python -m pipeline.launch``): it would run the CPU's own kernels."""
    missing = [f"{name}={value}" for name, value in STRICT_KERNELS.items() if env.get(name) != value]
    if reproducible == "strict" and missing:
        raise UserError(
            f"general.reproducible is strict but this process was started without {' '.join(missing)}: run the "
            "train stage through python -m pipeline.launch (dvc repro and snakemake do), or set them before it starts"
        )


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive(env: Mapping[str, str], name: str) -> int | None:
    """The positive integer in ``env[name]``, None when unset or empty; a one-line error for anything else."""
    text = env.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{name}={text!r}: expected a positive number of threads")
    return int(text)


def process_threads(override: int | None, env: Mapping[str, str], cores: int) -> int:
    """The threads of one process, from the first of the module doc's sources that is set."""
    if override is not None:
        return override
    if (omp := _positive(env, "OMP_NUM_THREADS")) is not None:
        return omp
    local = _positive(env, "LOCAL_WORLD_SIZE") or 1
    return max(1, (_positive(env, "SLURM_CPUS_PER_TASK") or cores) // local)


def rank_threads(override: int | None, env: Mapping[str, str], *, cores: int, cpus: int | None, nproc: int) -> int:
    """Each rank's share of a train job's cores, which the launcher hands to the ``nproc`` processes it starts:
    ``general.threads``, else the job's cores (``OMP_NUM_THREADS``, ``SLURM_CPUS_PER_TASK``, ``launch.cpus_per_node``
    (``cpus``), the usable cores) divided by ``nproc``."""
    if override is not None:
        return override
    budget = _positive(env, "OMP_NUM_THREADS") or _positive(env, "SLURM_CPUS_PER_TASK") or cpus or cores
    return max(1, budget // nproc)


def use_threads(override: int | None, env: Mapping[str, str] = os.environ) -> int:
    """Set this process's intra-op threads (``process_threads``) and return the count."""
    import torch  # here: the train launcher imports this module, and starts without torch (tests/unit/test_layers.py)

    count = process_threads(override, env, usable_cores())
    torch.set_num_threads(count)
    return count
