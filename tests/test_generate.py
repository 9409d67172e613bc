"""Sampling: determinism by seed, top-k / top-p filtering, prompts from files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanugpt.generate import GenerateError, filter_logits, read_prompt, sample
from nanugpt.models.nanogpt import NanoGPTOptions
from nanugpt.params import GenerateParams


def model():
    torch.manual_seed(0)
    return (
        NanoGPTOptions(module="nanogpt", n_layer=2, n_head=2, n_embd=32, context_length=8).build(vocab_size=40).eval()
    )


def test_same_seed_same_samples_and_sliding_context() -> None:
    m = model()
    opts = GenerateParams(num_samples=2, max_new_tokens=20, seed=3)  # 20 new tokens > context of 8
    first = sample(m, [1, 2, 3], opts, 40, torch.device("cpu"))
    assert first == sample(m, [1, 2, 3], opts, 40, torch.device("cpu"))
    assert len(first) == 2 and all(len(s) == 20 for s in first)
    assert all(0 <= i < 40 for s in first for i in s)  # padded ids never sampled
    assert first != sample(m, [1, 2, 3], opts.model_copy(update={"seed": 4}), 40, torch.device("cpu"))


def test_greedy_is_deterministic_without_seed_effect() -> None:
    m = model()
    a = sample(m, [5], GenerateParams(temperature=0, max_new_tokens=5, seed=1), 40, torch.device("cpu"))
    b = sample(m, [5], GenerateParams(temperature=0, max_new_tokens=5, seed=2), 40, torch.device("cpu"))
    assert a == b


def test_top_k_and_top_p_filters() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, 2, None)[0, 2:]).all()
    assert not torch.isinf(filter_logits(logits, 2, None)[0, :2]).any()
    probs = logits.softmax(-1)[0]  # ~[0.64, 0.24, 0.09, 0.03]
    kept = ~torch.isinf(filter_logits(logits, None, 0.7)[0])
    assert kept.tolist() == [True, True, False, False] and probs[0] < 0.7


def test_prompt_from_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("ROMEO:")
    assert read_prompt(f"FILE:{tmp_path / 'p.txt'}") == "ROMEO:"
    with pytest.raises(GenerateError, match="cannot read"):
        read_prompt(f"FILE:{tmp_path / 'missing.txt'}")
