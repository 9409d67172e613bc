"""Golden losses: the first 20 per-step train losses of tiny fixed eager CPU runs, against stored values.

A refactor must not change numerics. When a change is meant to (a new init, another kernel), rerun
with ``NANUGPT_UPDATE_GOLDEN=1`` to rewrite ``tests/assets/losses/*.json``, say so in the commit, and run
``make test-quality`` (the default experiment's 2000 steps against nanoGPT's val loss, not in ``make test``).
Runs use one intra-op thread, so the figures do not depend on the number of cores.

The stored values are compared within ``RTOL``, not bitwise: CPU kernels promise the same bits only on
the same machine, and another CPU of the same family differs in the last bits (a few 1e-8 relative).
A real change of numerics, even in one operation, moves the losses past ``RTOL``: the last test shows it.
Bitwise equality is tested where it is a property of the code (the same run twice, resume, a halving rung
continued); 1 and N ranks agree within 1e-4 (tests/e2e/test_ddp_e2e.py: gradients are summed in another order).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ASSETS, TINY_TEXT, tiny_params

from nanugpt.config.params import validate_params
from nanugpt.optim.losses import AutoregressiveOptions, Loss
from stages import tokenize, train

GOLDEN = ASSETS / "losses"
STEPS = 20
RTOL = 1e-5  # machine-to-machine noise is about 1e-7 relative; the perturbed run below moves the losses by 1e-4

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # nanoGPT's recipe: GPT-2 decoder, AdamW, cosine; two micro-steps per step (gradient accumulation)
    "nanogpt": {
        "training": {
            "max_steps": STEPS,
            "device_batch_size": 4,
            "global_batch_size": 8,
            "log_every": 5,
            "checkpoint_every": 0,
            "resume": "never",
        },
        "eval": {"eval_every": 10, "eval_iters": 2},
    },
    # the modern recipe: nanogpt_modern with short convolutions, Muon, warmup-stable-decay, epochs sampling
    "modern": {
        "data": {"sampling": "epochs"},
        "model": {
            "module": "nanogpt_modern",
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 32,
            "context_length": 16,
            "short_conv": 4,
        },
        "optimizer": {"module": "muon", "lr": 0.02},
        "scheduler": {"module": "constant", "warmup_steps": 2, "cooldown_steps": 10},
        "training": {
            "max_steps": STEPS,
            "device_batch_size": 8,
            "global_batch_size": 8,
            "log_every": 5,
            "checkpoint_every": 0,
            "resume": "never",
        },
        "eval": {"eval_every": 10, "eval_iters": 2},
    },
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step_losses(name: str, tmp_path: Path, **changes: dict[str, Any]) -> list[float]:
    """Train recipe ``name`` (with ``changes`` of whole sections) for ``STEPS`` steps on the tiny corpus; its
    per-step train losses."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    params = validate_params(tiny_params(corpus, **(RECIPES[name] | changes)), f"golden recipe {name}")
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    with open(tmp_path / "out" / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_first_losses_match_the_golden_ones(name: str, tmp_path: Path, one_thread: None) -> None:
    losses = step_losses(name, tmp_path)
    assert len(losses) == STEPS
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("NANUGPT_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps({"recipe": RECIPES[name], "losses": losses}, indent=1) + "\n")
    expected = json.loads(golden.read_text())["losses"]
    assert not mismatches(expected, losses), f"losses differ from {golden.name}: {mismatches(expected, losses)[:5]}"


def mismatches(expected: list[float], losses: list[float]) -> list[tuple[int, float, float]]:
    """(step, golden, now) of each step whose loss is not within ``RTOL`` of the golden one."""
    return [
        (step, want, got)
        for step, (want, got) in enumerate(zip(expected, losses), 1)
        if not math.isclose(want, got, rel_tol=RTOL)
    ]


class PlainCrossEntropy(Loss):
    """The autoregressive loss through ``F.cross_entropy`` on the logits, with a label smoothing: at 1e-4 one
    operation's numerics slightly changed, at 0 the control run through the same code path."""

    def __init__(self, label_smoothing: float):
        super().__init__()
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        flat = logits.flatten(0, 1).float()
        return torch.nn.functional.cross_entropy(flat, targets.flatten(), label_smoothing=self.label_smoothing)

    def of_model(
        self, model: torch.nn.Module, plain: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return self(model(x), y)


class SmoothedLossOptions(AutoregressiveOptions):
    """Names the perturbed loss (label smoothing 1e-4) by import path."""

    def build(self) -> Loss:
        return PlainCrossEntropy(label_smoothing=1e-4)


class ExactLossOptions(AutoregressiveOptions):
    """Names the control loss (no smoothing) by import path."""

    def build(self) -> Loss:
        return PlainCrossEntropy(label_smoothing=0.0)


def test_a_change_in_one_operation_fails_the_golden_comparison(tmp_path: Path, one_thread: None) -> None:
    expected = json.loads((GOLDEN / "nanogpt.json").read_text())["losses"]
    control = step_losses("nanogpt", tmp_path / "exact", loss={"module": f"{__name__}:ExactLossOptions"})
    perturbed = step_losses("nanogpt", tmp_path / "smoothed", loss={"module": f"{__name__}:SmoothedLossOptions"})
    assert not mismatches(expected, control)  # the same numerics through another code path stay within RTOL
    assert len(mismatches(expected, perturbed)) >= STEPS // 2
