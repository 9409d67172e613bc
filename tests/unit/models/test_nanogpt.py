"""The nanogpt model: shapes, init, tying, padding, the KV cache and the hidden states under the head."""

from __future__ import annotations

import torch

from nanugpt.models.nanogpt import NanoGPTOptions


def build(**kw):
    opts = NanoGPTOptions(module="nanogpt", n_layer=2, n_head=2, n_embd=32, context_length=16, **kw)
    torch.manual_seed(0)
    return opts.build(vocab_size=65)


def test_logits_shape_and_padded_vocab() -> None:
    model = build()
    logits = model(torch.randint(0, 65, (3, 10)))
    assert logits.shape == (3, 10, 128)  # 65 padded to a multiple of 64


def test_head_tied_and_residual_projections_scaled() -> None:
    model = build()
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 2) ** 0.5) < 0.004


def test_same_seed_same_init() -> None:
    a, b = build(), build()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_hidden_states_and_linear_head_give_the_logits() -> None:
    model = build()
    idx = torch.randint(0, 65, (2, 12))
    weight, cap = model.linear_head()
    assert weight is model.transformer.wte.weight and cap is None
    torch.testing.assert_close(model(idx, hidden_only=True) @ weight.t(), model(idx))


def test_kv_cache_matches_full_forward() -> None:
    model = build().eval()
    idx = torch.randint(0, 65, (2, 12))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = [model(idx[:, :5], cache)] + [model(idx[:, t : t + 1], cache) for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_no_bias_option_and_flops() -> None:
    model = build(bias=False)
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())
    assert model.flops_per_token() > 6 * model.num_params()
