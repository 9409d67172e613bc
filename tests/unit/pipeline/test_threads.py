"""Each stage's process uses the threads it was given (``pipeline.threads``), not one per core of the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_params, write_params

from nanugpt.config.params import load_params
from nanugpt.errors import UserError
from pipeline.threads import STRICT_KERNELS, process_threads, rank_threads, require_strict_kernels, usable_cores
from stages import train

NO_HINTS = {"PATH": os.environ.get("PATH", "")}  # nothing that says how many threads


def test_a_process_takes_the_first_count_it_is_given() -> None:
    assert process_threads(3, {"OMP_NUM_THREADS": "2"}, cores=8) == 3  # general.threads first
    assert process_threads(None, {"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "6"}, cores=8) == 2
    assert process_threads(None, {"SLURM_CPUS_PER_TASK": "6", "LOCAL_WORLD_SIZE": "2"}, cores=8) == 3
    assert process_threads(None, {"LOCAL_WORLD_SIZE": "4"}, cores=8) == 2  # the usable cores, shared
    assert process_threads(None, {"LOCAL_WORLD_SIZE": "4"}, cores=2) == 1  # never 0
    assert process_threads(None, NO_HINTS, cores=8) == 8


def test_torchrun_ranks_share_the_jobs_cores() -> None:
    assert rank_threads(None, {"OMP_NUM_THREADS": "8"}, cores=64, cpus=None, nproc=2) == 4  # Snakemake's threads
    assert rank_threads(None, {"SLURM_CPUS_PER_TASK": "16"}, cores=64, cpus=None, nproc=4) == 4
    assert rank_threads(None, NO_HINTS, cores=64, cpus=12, nproc=4) == 3  # launch.cpus_per_node
    assert rank_threads(None, NO_HINTS, cores=2, cpus=None, nproc=2) == 1
    assert rank_threads(2, {"OMP_NUM_THREADS": "8"}, cores=64, cpus=None, nproc=2) == 2  # general.threads


def test_a_count_that_is_not_a_number_is_named() -> None:
    with pytest.raises(UserError, match="OMP_NUM_THREADS='many': expected a positive number of threads"):
        process_threads(None, {"OMP_NUM_THREADS": "many"}, cores=2)


@pytest.mark.parametrize(
    ("threads", "env", "expected"),
    [
        (None, {"OMP_NUM_THREADS": "1"}, 1),  # what Snakemake hands a rule's job
        (None, {}, usable_cores()),  # nothing given: the cores it may run on
    ],
    ids=["omp", "cores"],
)
def test_the_train_stage_runs_with_the_threads_it_was_given(
    tmp_path: Path, corpus: Path, threads: int | None, env: dict[str, str], expected: int
) -> None:
    params = tiny_params(corpus, training={"max_steps": 2, "checkpoint_every": 0}, eval={"eval_every": 0})
    params["general"]["threads"] = threads
    params_file = write_params(tmp_path / "params.yaml", params)
    command = [sys.executable, "-m", "stages.tokenize", str(params_file)]
    base = {**NO_HINTS, "PYTHONPATH": str(REPO), "DATA_ROOT": str(tmp_path / "data"), "OUT_DIR": str(tmp_path / "out")}
    subprocess.run(command, env=base, check=True, capture_output=True, timeout=120)
    command[2] = "stages.train"
    result = subprocess.run(command, env=base | env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = json.loads((tmp_path / "out" / "run_info.json").read_text())["environment"]["threads"]
    assert recorded == expected  # torch.get_num_threads() inside the stage


def test_a_strict_train_stage_started_without_the_strict_kernels_is_refused(tmp_path: Path, corpus: Path) -> None:
    require_strict_kernels("strict", STRICT_KERNELS)
    require_strict_kernels("machine", {})
    params = load_params(write_params(tmp_path / "p.yaml", tiny_params(corpus, general={"reproducible": "strict"})))
    with pytest.raises(UserError, match=r"started without ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX"):
        train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")  # by hand, in this process
    assert not (tmp_path / "out").exists()  # refused before anything was written
