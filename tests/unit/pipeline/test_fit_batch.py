"""``python -m pipeline.fit_batch``: the largest micro-batch within a memory budget, and its tokens/s (on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_params, write_params

from nanugpt.distributed.process_group import DistInfo
from pipeline.fit_batch import Probe, largest_fit, main, probe
from pipeline.schema import load
from stages import tokenize

CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def test_doubling_then_bisection_finds_the_largest_fit() -> None:
    batch, probes = largest_fit(lambda b: Probe(b, b <= 37, b))
    assert batch == 37
    assert [p.batch for p in probes] == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert largest_fit(lambda b: Probe(b, False, b))[0] == 0
    assert largest_fit(lambda b: Probe(b, True, b), largest=100)[0] == 100


@pytest.fixture
def tokenized(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    tokenize.run(load(path))
    return path


def test_counted_memory_grows_with_the_micro_batch(tokenized: Path) -> None:
    params = load(tokenized)
    small, large = probe(params, 2, CPU, 2**40), probe(params, 8, CPU, 2**40)
    assert small.fits and large.memory > small.memory > 0
    assert not probe(params, 8, CPU, small.memory).fits  # over the budget: does not fit


def test_the_command_suggests_the_largest_batch_within_the_budget(
    tokenized: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = load(tokenized)
    budget = probe(params, 6, CPU, 2**40).memory  # exactly what a micro-batch of 6 needs
    assert main([str(tokenized), "--memory-gb", str(budget / 2**30), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "suggested: --training.device_batch_size 6 --training.global_batch_size 6" in out  # params' 8 -> 6
    assert "device_batch_size     8: does not fit" in out and "tokens/s at device_batch_size 6" in out


def test_cpu_needs_a_budget(tokenized: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tokenized)]) == 2
    assert "on CPU pass --memory-gb" in capsys.readouterr().err
