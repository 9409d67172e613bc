"""The launcher: the command it builds, what it refuses before it starts anything (one line, exit 2 or 1), and the
kernels it chooses for ``general.reproducible: strict``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ASSETS, REPO, TINY_TEXT, losses, tiny_params, write_params

from nanugpt.config.params import validate_params
from pipeline.launch import SlurmJob, build_command, parse_time_left
from pipeline.schema import load
from stages import tokenize, train

# The kernels an AVX2 CPU runs, chosen on this one: ATen's, MKL's and oneDNN's dispatch capped at AVX2.
AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
STRICT_GOLDEN = ASSETS / "losses" / "strict.json"


def launch(params_file: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline.launch params_file args`` in a fresh process, outside any Slurm job."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.launch", str(params_file), *args],
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=params_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45", 45), ("1:05", 65), ("2:00:01", 7201), ("1-00:00:10", 86410), ("UNLIMITED", None), ("NOT_SET", None)],
)
def test_squeue_time_left_is_read_in_seconds(text: str, seconds: int | None) -> None:
    assert parse_time_left(text) == seconds


def test_two_nodes_run_one_torchrun_per_node_with_rendezvous_on_the_first(tmp_path: Path, corpus: Path) -> None:
    params = load(
        write_params(
            tmp_path / "p.yaml",
            tiny_params(corpus, training={"device_batch_size": 2}, launch={"nnodes": 2, "nproc_per_node": 2}),
        )
    )
    command = build_command(params, ["p.yaml"], SlurmJob("77", "n1", 2))  # a one-host list needs no scontrol
    assert command[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert command[4:7] == [sys.executable, "-m", "pipeline.torchrun"]
    assert "--rdzv-endpoint=n1:29500" in command and "--rdzv-id=77" in command
    assert command[-3:] == ["-m", "stages.train", "p.yaml"]


def test_a_batch_that_does_not_split_over_the_world_size_is_refused_before_launch(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "p.yaml", tiny_params(corpus, launch={"nnodes": 2, "nproc_per_node": 2}))
    result = launch(path)
    assert result.returncode == 2
    assert result.stderr == (
        f"{path}: training.global_batch_size: must be a multiple of training.device_batch_size x world size "
        "(4 x 4 = 16, where world size = launch.nnodes x launch.nproc_per_node = 2 x 2), got 8\n"
    )
    assert "launch:" not in result.stdout  # nothing was started


def test_more_nodes_than_the_allocation_has_are_refused(tmp_path: Path, corpus: Path) -> None:
    params = tiny_params(corpus, training={"device_batch_size": 2}, launch={"nnodes": 2, "nproc_per_node": 2})
    path = write_params(tmp_path / "p.yaml", params)
    outside = launch(path)
    assert (outside.returncode, outside.stderr) == (
        1,
        "error: launch.nnodes is 2: run inside a Slurm allocation of 2 nodes (sbatch -N 2)\n",
    )
    small = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n1", "SLURM_JOB_NUM_NODES": "1"}
    inside = launch(path, env=small)
    assert (inside.returncode, inside.stderr) == (
        1,
        "error: launch.nnodes is 2 but Slurm job 5 has 1 node(s) (n1): ask for --nodes=2\n",
    )


def test_a_gpu_count_below_the_process_count_is_refused(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "p.yaml", tiny_params(corpus, launch={"nproc_per_node": 2, "gpus_per_node": 1}))
    result = launch(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "gpus_per_node (1) is fewer than nproc_per_node (2)" in result.stderr


@pytest.mark.slow
def test_an_error_after_start_is_printed_once_not_per_rank(tmp_path: Path, corpus: Path) -> None:
    """Two ranks under torchrun fail the same way (no token files): one error line, one line from torchrun."""
    path = write_params(tmp_path / "p.yaml", tiny_params(corpus, launch={"nproc_per_node": 2}))
    result = launch(path, env={"DATA_ROOT": str(tmp_path / "no-data"), "OUT_DIR": str(tmp_path / "out")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line or "torchrun:" in line]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and "no-data" in lines[0]
    # Rank 1 exits with 1 by itself, or with 143 when torchrun stops it (SIGTERM) after rank 0 failed first.
    assert re.fullmatch(r"torchrun: on \S+, rank 0 with 1, rank 1 with (1|143)", lines[1]), lines[1]


def reproducible_params(corpus: Path, mode: str) -> dict[str, Any]:
    """8 steps of a small model at one thread in ``general.reproducible`` mode ``mode``: wide enough (64) that the
    kernels of an AVX2 and an AVX-512 CPU give other last bits from the third step on."""
    return tiny_params(
        corpus,
        general={"seed": 7, "device_type": "cpu", "threads": 1, "reproducible": mode},
        model={"n_head": 4, "n_embd": 64, "context_length": 32},
        training={"max_steps": 8, "checkpoint_every": 0, "peak_flops": 1e11},  # not measured: 4 products of 2048²
        eval={"eval_every": 0},
    )


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny corpus and its DATA_ROOT, tokenized once for this module's runs."""
    root = tmp_path_factory.mktemp("reproducible")
    corpus = root / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    tokenize.run(validate_params(reproducible_params(corpus, "machine"), "tokens"), data_root=root / "data")
    return corpus, root / "data"


def launched(tmp_path: Path, tokens: tuple[Path, Path], mode: str, cpu: dict[str, str]) -> tuple[list[float], dict]:
    """The per-step losses and the environment fingerprint of a run launched in ``mode`` with the kernel
    variables ``cpu``, as ``dvc repro`` launches it."""
    corpus, data_root = tokens
    path = write_params(tmp_path / f"{mode}.yaml", reproducible_params(corpus, mode))
    out = tmp_path / "out"
    result = launch(path, env={**cpu, "DATA_ROOT": str(data_root), "OUT_DIR": str(out), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return losses(out), json.loads((out / "run_info.json").read_text())["environment"]


@pytest.mark.parametrize("cpu", [{}, AVX2_CPU], ids=["this-cpu", "avx2-cpu"])
def test_strict_runs_compute_the_stored_losses_bitwise_on_any_cpu(
    tmp_path: Path, tokens: tuple[Path, Path], cpu: dict[str, str]
) -> None:
    got, environment = launched(tmp_path, tokens, "strict", cpu)
    assert environment["cpu_capability"] == "DEFAULT"
    assert "MKL_CBWR=COMPATIBLE" in environment["kernel_variables"]
    if os.environ.get("NANUGPT_UPDATE_GOLDEN") == "1" and not cpu:
        STRICT_GOLDEN.write_text(json.dumps({"losses": got}, indent=1) + "\n")
    expected = json.loads(STRICT_GOLDEN.read_text())["losses"]
    assert got == expected, f"strict mode is not bitwise on {environment['cpu']} (docs/reproducibility.md): {got}"


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="emulates an AVX2 CPU on AVX-512")
def test_without_strict_an_avx2_cpu_computes_other_last_bits(tmp_path: Path, tokens: tuple[Path, Path]) -> None:
    """What strict mode is for: the same run on this CPU and, with its kernels, on an AVX2 one."""
    avx2, _ = launched(tmp_path, tokens, "machine", AVX2_CPU)
    params = validate_params(reproducible_params(tokens[0], "machine"), "this cpu")
    train.run(params, data_root=tokens[1], out_dir=tmp_path / "here")
    here = losses(tmp_path / "here")
    assert avx2 != here and all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(avx2, here))
