"""The model contract of ``nanugpt.models.base``: every catalog model is a ``LanguageModel`` with a padded
vocabulary, a FLOP count and a parameter count that leaves out exactly the tables that are only looked up."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import tiny_params

from nanugpt.config.params import validate_params
from nanugpt.config.protocols import LanguageModel
from nanugpt.models.base import CausalLM, DecoderMixin, padded_vocab

VOCAB = 65
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
TE_READY = importlib.util.find_spec("transformer_engine") is not None and torch.cuda.is_available()
LLAMA = {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "intermediate_size": 64}
SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 32}


def total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# name: (module, model section, vocabulary multiple, the non-embedding count as the family defined it before the
# shared base, whether it can be built here)
CASES: dict[str, tuple[str, dict[str, Any], int, Callable[[Any], int], bool]] = {
    "nanogpt": ("nanogpt", SMALL, 64, lambda m: total(m) - m.transformer.wpe.weight.numel(), True),  # wte: the head
    "nanogpt_modern": ("nanogpt_modern", SMALL, 64, lambda m: total(m) - m.transformer.wte.weight.numel(), True),
    "tinyllama": ("tinyllama", LLAMA, 64, lambda m: total(m) - m.model.embed_tokens.weight.numel(), True),
    "tinyllama_tied": ("tinyllama", {**LLAMA, "tie_word_embeddings": True}, 64, total, True),
    "tiny_transformer": (
        "tiny_transformer",
        SMALL,
        1,
        lambda m: total(m) - m.token_embedding.weight.numel() - m.position_embedding.weight.numel(),
        True,
    ),
    "te_llama3": ("te_llama3", LLAMA, 64, lambda m: total(m) - m.embed_tokens.weight.numel(), TE_READY),
    "hf_gpt2": ("hf_gpt2", SMALL, 64, lambda m: total(m) - m.hf.transformer.wpe.weight.numel(), HAS_TRANSFORMERS),
    "hf_llama": ("hf_llama", LLAMA, 64, lambda m: total(m) - m.hf.model.embed_tokens.weight.numel(), HAS_TRANSFORMERS),
}


def build(name: str) -> torch.nn.Module:
    module, section, *_ = CASES[name]
    tree = tiny_params("unused.txt")
    tree["model"] = {"module": module, **section, "context_length": 16}
    torch.manual_seed(0)
    return validate_params(tree, "test params").model.build(VOCAB)


@pytest.mark.parametrize("name", list(CASES))
def test_every_catalog_model_satisfies_the_protocol(name: str) -> None:
    _, _, multiple, non_embedding, available = CASES[name]
    if not available:
        pytest.skip(f"{name} cannot be built here: it needs transformers, or TransformerEngine and a CUDA GPU")
    model = build(name)
    assert isinstance(model, LanguageModel) and isinstance(model, CausalLM)
    assert model.vocab_size == VOCAB
    assert model.padded_vocab % multiple == 0 and model.padded_vocab >= VOCAB
    assert model.padded_vocab == padded_vocab(VOCAB, multiple)
    assert model.num_params(non_embedding=False) == total(model)
    assert model.num_params() == non_embedding(model)
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * 32 * 16 > 0
    if name != "te_llama3":  # CUDA only
        assert model(torch.randint(0, VOCAB, (2, 5))).shape == (2, 5, model.padded_vocab)
        with pytest.raises(ValueError, match="sequence of 17 tokens exceeds model.context_length 16"):
            model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(("name", "cap"), [("nanogpt", None), ("nanogpt_modern", 15.0), ("tinyllama", None)])
def test_decoders_declare_their_head(name: str, cap: float | None) -> None:
    model = build(name)
    assert isinstance(model, DecoderMixin)
    weight, softcap = model.linear_head()
    assert weight is model.lm_head.weight and softcap == cap
    assert model.new_cache().keys == [None, None]  # one slot per layer


def test_padded_vocab() -> None:
    assert [padded_vocab(v, 64) for v in (1, 64, 65, 50257)] == [64, 64, 128, 50304]
    assert padded_vocab(65, 1) == 65
