"""nanuGPT's ``nanogpt`` options: separate dropouts, ``tie_lm_head``, ``initializer_range``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from helpers import TINY_TEXT

from nanugpt.models.nanogpt import GPT, NanoGPTOptions

SHAPE = {"module": "nanogpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16}


def build(seed: int = 0, **options: Any) -> GPT:
    torch.manual_seed(seed)
    return NanoGPTOptions(**SHAPE, **options).build(vocab_size=60)


def test_dropout_sets_the_four_rates_that_are_left_unset() -> None:
    opts = NanoGPTOptions(**SHAPE, dropout=0.2, mlp_dropout=0.0, attn_dropout=0.05)
    assert [opts.rate(part) for part in ("attn", "resid", "mlp", "embed")] == [0.05, 0.2, 0.0, 0.2]
    model = opts.build(60)
    block = model.transformer.h[0]
    assert block.attn.dropout == 0.05 and block.attn.resid_dropout.p == 0.2
    assert isinstance(block.mlp.dropout, nn.Identity) and model.transformer.drop.p == 0.2


def test_defaults_build_the_same_weights_and_names_as_before() -> None:
    explicit = build(tie_lm_head=True, initializer_range=0.02, dropout=0.0)
    default = build()
    assert list(explicit.state_dict()) == list(default.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(explicit.state_dict().values(), default.state_dict().values()))
    assert default.lm_head.weight is default.transformer.wte.weight


def test_an_untied_head_has_its_own_weights_and_the_same_names() -> None:
    tied, untied = build(), build(tie_lm_head=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert list(untied.state_dict()) == list(tied.state_dict())
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in tied.parameters()) + 64 * 32


def test_initializer_range_scales_the_init() -> None:
    wide = build(initializer_range=0.2).state_dict()
    std = build().state_dict()
    for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.weight"):
        torch.testing.assert_close(wide[name], 10 * std[name])  # same draws, ten times the std


def test_dropout_rates_act_in_training_only() -> None:
    model = build(attn_dropout=0.5)
    ids = torch.randint(0, 60, (2, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
        model.train()
        torch.manual_seed(1)
        first = model(ids)
        torch.manual_seed(2)
        assert not torch.equal(first, model(ids))


def test_an_untied_head_exports_to_gpt2_with_the_same_logits(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from nanugpt.inference.hf_export import gpt2_from_nanogpt, save_safetensors

    model = build(tie_lm_head=False, attn_dropout=0.1, embed_dropout=0.2).eval()
    config, tensors = gpt2_from_nanogpt(model, transformers)
    assert not config.tie_word_embeddings and (config.attn_pdrop, config.embd_pdrop) == (0.1, 0.2)
    save_safetensors(tensors, tmp_path / "model.safetensors")
    config.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    ids = torch.tensor([[ord(c) % 60 for c in TINY_TEXT[:16]]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=0)
