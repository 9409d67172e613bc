"""The params file as the pipeline reads it: the library's sections plus ``launch``, which only the pipeline uses.

Every command of ``pipeline/`` and ``stages/`` loads params through ``load``, so a bad ``launch.*`` key
stops any stage at load time, and checkpoints and ``run_info.json`` hold the whole resolved file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

from pydantic import Field, model_validator

from nanugpt.config.params import load_params
from nanugpt.config.schema import Params, Section


class LaunchParams(Section):
    """How the train stage is started, and what its job asks a cluster for (Snakemake's portable resources).

    Cluster specifics (partition, account, qos) belong in the Snakemake profile, not here.
    """

    nproc_per_node: int = Field(1, gt=0, description="processes per node; > 1 runs the train stage under torchrun")
    nnodes: int = Field(1, gt=0, description="nodes; > 1 needs a Slurm allocation (srun + torchrun)")
    runtime_min: int = Field(
        60, gt=0, description="wall-clock limit of the train job on a cluster, in minutes (Snakemake resource runtime)"
    )
    mem_mb: int = Field(8000, gt=0, description="memory per node of the train job, in MB (Snakemake resource mem_mb)")
    cpus_per_node: int | None = Field(
        None, gt=0, description="CPU cores per node of the train job (one task per node); null = nproc_per_node"
    )
    gpus_per_node: int = Field(
        0,
        ge=0,
        description="GPUs per node of the train job; 0 = none; else at least nproc_per_node (a GPU per process)",
    )
    stage_runtime_min: int = Field(
        30,
        gt=0,
        description="wall-clock limit, in minutes, of each of the evaluate, generate and export jobs on a cluster",
    )
    stage_mem_mb: int | None = Field(
        None,
        gt=0,
        description="memory, in MB, of each of the evaluate, generate and export jobs on a cluster (each loads the "
        "model on one process); null = mem_mb / nproc_per_node, at least 2000",
    )
    stop_before_limit_s: int = Field(
        180,
        gt=0,
        description="in a Slurm job with a time limit: the train stage saves and stops this many seconds before "
        "it, and the job is requeued to resume (the save must fit in this time)",
    )

    submit: Literal["local", "slurm"] = Field(
        "local",
        description="'slurm': the train stage, run outside a Slurm job (a login node, dvc exp run), submits itself "
        "with sbatch and waits for it (pipeline.submit); 'local': it runs where it is started",
    )
    slurm_args: list[str] = Field(
        default_factory=list,
        description="extra sbatch options of a submitted train job, e.g. ['--partition=gpu', '--account=proj']",
    )

    @model_validator(mode="after")
    def _a_gpu_per_process(self) -> LaunchParams:
        if 0 < self.gpus_per_node < self.nproc_per_node:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) is fewer than nproc_per_node ({self.nproc_per_node}): each "
                "process uses the GPU of its local rank; set gpus_per_node to 0 (CPU) or >= nproc_per_node"
            )
        return self

    @property
    def cpus(self) -> int:
        """CPU cores per node the train job asks for."""
        return self.cpus_per_node or self.nproc_per_node

    @property
    def stage_mem(self) -> int:
        """Memory (MB) of one of evaluate, generate and export: ``stage_mem_mb``, else one train process's share."""
        return self.stage_mem_mb or max(2000, self.mem_mb // self.nproc_per_node)


class PipelineParams(Params):
    """A complete, validated params file as the pipeline's commands read it."""

    launch: LaunchParams = LaunchParams()

    def cross_checks(self) -> list[tuple[str, str]]:
        """The library's cross-section rules, and the batch split over the world size ``launch`` asks for."""
        problems = super().cross_checks()
        world_size = self.launch.nnodes * self.launch.nproc_per_node
        rows = self.training.device_batch_size * world_size
        if not problems and self.training.global_batch_size % rows:
            problems.append(
                (
                    "training.global_batch_size",
                    f"must be a multiple of training.device_batch_size x world size ({self.training.device_batch_size}"
                    f" x {world_size} = {rows}, where world size = launch.nnodes x launch.nproc_per_node = "
                    f"{self.launch.nnodes} x {self.launch.nproc_per_node}), got {self.training.global_batch_size}",
                )
            )
        return problems


def load(path: str | Path, overrides: Sequence[str] = ()) -> PipelineParams:
    """Read, resolve and validate a params file with its ``launch`` section (``nanugpt.config.params.load_params``)."""
    return cast(PipelineParams, load_params(path, overrides, schema=PipelineParams))
