"""Sampling: determinism by seed, top-k / top-p filtering, prompts from files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanugpt.config.schema import GenerateParams
from nanugpt.inference.generate import GenerateError, check_fits, next_token, nucleus, read_prompt, sample
from nanugpt.models.nanogpt import NanoGPTOptions
from nanugpt.ops.decode_head import HeadKernel, choose_head_kernel, head_logits


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


def test_nucleus_keeps_the_tokens_that_first_reach_top_p() -> None:
    logits = torch.tensor([[3.0, 4.0, 1.0, 2.0]])
    probs = logits.softmax(-1)[0]  # ~[0.24, 0.64, 0.03, 0.09]
    kept = ~torch.isinf(nucleus(logits, 0.7)[0])
    assert kept.tolist() == [True, True, False, False] and probs[1] < 0.7
    assert torch.equal(nucleus(logits, 0.7)[0, :2], logits[0, :2])
    assert torch.equal(nucleus(logits, None), logits) and torch.equal(nucleus(logits, 1.0), logits)


@pytest.mark.parametrize(("top_k", "top_p", "kept"), [(None, None, 4), (2, None, 2), (3, 0.7, 2), (None, 0.9, 3)])
def test_next_token_draws_with_the_filtered_softmax_probabilities(top_k: int | None, top_p: float | None, kept: int):
    logits = torch.tensor([[4.0, 2.0, 1.0, -2.0]]).expand(40_000, 4)  # 40,000 draws at once
    opts = GenerateParams(temperature=2.0, top_k=top_k, top_p=top_p)
    drawn = next_token(logits, opts, torch.Generator().manual_seed(0))
    assert drawn.shape == (40_000, 1)
    frequencies = torch.bincount(drawn[:, 0], minlength=4) / 40_000
    expected = torch.zeros(4)
    expected[:kept] = (logits[0, :kept] / 2.0).softmax(-1)  # softmax(x / 2): 0.61, 0.22, 0.14, 0.03
    assert torch.allclose(frequencies, expected, atol=0.01)  # ~4 standard errors
    assert next_token(logits[:2], opts.model_copy(update={"temperature": 0.0}), torch.Generator()).tolist() == [
        [0],
        [0],
    ]


def test_prompt_from_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("ROMEO:")
    assert read_prompt(f"FILE:{tmp_path / 'p.txt'}") == "ROMEO:"
    with pytest.raises(GenerateError, match="cannot read"):
        read_prompt(f"FILE:{tmp_path / 'missing.txt'}")


@pytest.mark.parametrize(
    ("device_type", "dtype", "expected"),
    [
        ("cpu", torch.float32, HeadKernel.CPU_TRANSPOSED),
        ("cpu", torch.bfloat16, HeadKernel.LINEAR),
        ("cuda", torch.float32, HeadKernel.LINEAR),
        ("cuda", torch.bfloat16, HeadKernel.LINEAR),
    ],
)
def test_choose_head_kernel(device_type: str, dtype: torch.dtype, expected: HeadKernel) -> None:
    assert choose_head_kernel(device_type, dtype) is expected


@pytest.mark.parametrize("rows", [1, 3])
def test_head_logits_are_the_linear_heads_with_the_cpu_kernel(rows: int) -> None:
    weight = torch.randn(300, 32, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(rows, 32, generator=torch.Generator().manual_seed(1))
    logits = head_logits(hidden, weight, None)
    assert logits.shape == (rows, 300) and torch.allclose(logits, hidden @ weight.T, atol=1e-5)
    assert torch.allclose(head_logits(hidden, weight, 2.0), 2.0 * torch.tanh(hidden @ weight.T / 2.0), atol=1e-5)
    bf16 = head_logits(hidden.bfloat16(), weight.bfloat16(), None)  # the F.linear kernel
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.float(), logits, atol=0.2)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_cached_greedy_generation_equals_the_full_forwards(num_samples: int) -> None:
    m = model()
    greedy = GenerateParams(num_samples=num_samples, max_new_tokens=12, temperature=0)  # 13 tokens: the window slides
    cached = sample(m, [7], greedy, 40, torch.device("cpu"))
    idx = torch.tensor([[7]] * num_samples)
    with torch.no_grad():
        for _ in range(12):
            logits = m(idx[:, -m.context_length :])[:, -1, :40]  # (B, V), no cache, F.linear head
            idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    assert cached == idx[:, 1:].tolist()


@pytest.mark.parametrize("size", [{"num_samples": 10**9}, {"max_new_tokens": 10**9}])
def test_sampling_beyond_memory_is_refused_before_it_starts(size: dict[str, int]) -> None:
    """Issue 30, case 12: num_samples 1e9 died of MemoryError after 4 GB; max_new_tokens 1e9 ran with no end."""
    opts = GenerateParams(**size)
    with pytest.raises(
        GenerateError, match=r"need about [\d,.]+ GB, 24.0 GB are available: lower generate.num_samples"
    ):
        check_fits(opts, prompt_tokens=5, vocab_size=65, available=24 * 10**9)
    check_fits(GenerateParams(num_samples=8, max_new_tokens=500), prompt_tokens=5, vocab_size=50304, available=10**9)
    check_fits(opts, prompt_tokens=5, vocab_size=65, available=None)  # unknown memory: not checked
