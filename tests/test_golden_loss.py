"""Golden losses: the first 20 per-step train losses of tiny fixed eager CPU runs, compared bitwise.

A refactor must not change numerics. When a change is meant to (a new init, another kernel), rerun
with ``NANUGPT_UPDATE_GOLDEN=1`` to rewrite ``tests/assets/losses/*.json``, and say so in the commit.
Runs use one intra-op thread, so the figures do not depend on the number of cores.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_TEXT, tiny_params

from nanugpt.params import validate_params
from stages import tokenize, train

ASSETS = Path(__file__).resolve().parent / "assets" / "losses"
STEPS = 20

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


def step_losses(name: str, tmp_path: Path) -> list[float]:
    """Train recipe ``name`` for ``STEPS`` steps on the tiny corpus; its per-step train losses."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    params = validate_params(tiny_params(corpus, **RECIPES[name]), f"golden recipe {name}")
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    with open(tmp_path / "out" / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_first_losses_are_bitwise_golden(name: str, tmp_path: Path, one_thread: None) -> None:
    losses = step_losses(name, tmp_path)
    assert len(losses) == STEPS
    golden = ASSETS / f"{name}.json"
    if os.environ.get("NANUGPT_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps({"recipe": RECIPES[name], "losses": losses}, indent=1) + "\n")
    expected = json.loads(golden.read_text())["losses"]
    mismatches = [(step, want, got) for step, (want, got) in enumerate(zip(expected, losses), 1) if want != got]
    assert not mismatches, f"losses differ from {golden.name} (step, golden, now): {mismatches[:5]}"
