"""The default experiment reaches nanoGPT's published CPU quality (val loss <= 1.88) in 2000 steps.

Run by ``make test-quality``, not by ``make test``: its training is a seventh of the CPU time of CI's whole run.
Run it with every change that rewrites the golden losses (tests/unit/train/test_golden_loss.py) or a preset."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO

from pipeline.schema import load
from stages import evaluate, tokenize, train


@pytest.mark.slow
@pytest.mark.quality
def test_shakespeare_char_cpu_shape_reaches_nanogpt_val_loss(tmp_path: Path, shakespeare: Path) -> None:
    # evaluated at the end only: the preset's evaluations every 500 steps (200 batches each) change no training
    # number, and the evaluate stage below gives the figure this test is about
    overrides = ["--data.source", str(shakespeare), "--eval.eval_every", "0"]
    params = load(REPO / "params" / "tinyshakespeare_char.yaml", overrides)
    assert (params.model.n_layer, params.model.n_head, params.model.n_embd) == (4, 4, 128)
    assert (params.model.context_length, params.training.global_batch_size, params.training.max_steps) == (64, 12, 2000)
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    metrics = evaluate.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    print(
        f"val_loss {metrics['val_loss']:.4f} after {summary['seconds']:.0f} s at {summary['tokens_per_s']:,.0f} tok/s"
    )
    assert metrics["val_loss"] <= 1.88
