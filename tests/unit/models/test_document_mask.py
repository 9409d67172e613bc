"""Attention masked at document boundaries (``data.packing: documents``), for every model family that can take it.

A token cannot attend across a boundary: change the previous document of a row, and the logits of the next
document's positions stay bitwise equal (``torch.equal``, fixed seeds); unmasked, they change, so the test can
fail. With restarted positions a document's logits do not depend on where in the window it starts (allclose at
1e-5: SDPA's sums run over other lengths). ``te_llama3`` cannot take a mask and is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nanugpt.config.protocols import DocumentMasking
from nanugpt.config.registry import resolve
from nanugpt.config.schema import GenerateParams
from nanugpt.data.packing import mask_model_documents
from nanugpt.data.tokenized import TokenizedDataOptions
from nanugpt.errors import UserError
from nanugpt.inference.generate import sample
from nanugpt.models.base import CausalLM
from nanugpt.models.layers import DocumentMask
from nanugpt.models.te_llama3 import TELlama3

VOCAB = 65
EOT = 0
SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16}
FAMILIES: dict[str, dict[str, Any]] = {  # every catalog family that masks, with a rotary / learned-position variant
    "nanogpt": {"module": "nanogpt", **SMALL},
    "nanogpt_modern": {"module": "nanogpt_modern", **SMALL},
    "nanogpt_modern_short_conv": {"module": "nanogpt_modern", **SMALL, "short_conv": 3},
    "tinyllama": {"module": "tinyllama", **SMALL, "n_head": 4, "n_kv_head": 2, "intermediate_size": 64},
    "tiny_transformer": {"module": "tiny_transformer", **SMALL},
    "hf_gpt2": {"module": "hf_gpt2", **SMALL},
    "hf_llama": {"module": "hf_llama", **SMALL, "n_head": 4, "n_kv_head": 2, "intermediate_size": 64},
}
BOUNDARY = 5  # the first document of each row ends with EOT at position 5; the next starts at 6


def build(name: str) -> torch.nn.Module:
    """The family's tiny model in eval mode, with random (not zero-initialised) weights everywhere."""
    section = FAMILIES[name]
    if section["module"].startswith("hf_"):
        pytest.importorskip("transformers")
    options = resolve("model", section["module"]).model_validate(section)
    torch.manual_seed(0)
    model = options.build(VOCAB).eval()
    with torch.no_grad():
        for p in model.parameters():  # nanogpt_modern starts with zero projections: every position alike
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def rows_with_other_first_documents() -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of 2 rows that differ only in their first document (positions 0-4, EOT at 5)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randint(1, VOCAB, (2, 16), generator=g)
    a[:, BOUNDARY] = EOT
    a[1, 11] = EOT  # the second row holds three documents
    b = a.clone()
    b[:, :BOUNDARY] = torch.randint(1, VOCAB, (2, BOUNDARY), generator=g)
    return a, b


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_token_cannot_attend_across_a_boundary(name: str) -> None:
    model = build(name)
    assert isinstance(model, DocumentMasking)
    a, b = rows_with_other_first_documents()
    with torch.no_grad():
        unmasked = model(a), model(b)
        model.mask_documents(EOT, restart_positions=False)
        masked = model(a), model(b)
    after = slice(BOUNDARY + 1, None)
    assert not torch.allclose(unmasked[0][:, after], unmasked[1][:, after], atol=1e-3)  # the test can fail
    assert torch.equal(masked[0][:, after], masked[1][:, after])
    assert torch.equal(masked[0][:, :BOUNDARY], unmasked[0][:, :BOUNDARY])  # the first document: causal as before


@pytest.mark.parametrize("name", list(FAMILIES))
def test_restarted_positions_make_a_document_the_same_anywhere(name: str) -> None:
    model = build(name)
    a, _ = rows_with_other_first_documents()
    model.mask_documents(EOT, restart_positions=True)
    with torch.no_grad():
        after_another = model(a)[:, BOUNDARY + 1 :]
        starting_the_window = model(a[:, BOUNDARY + 1 :])
    assert torch.allclose(after_another, starting_the_window, atol=1e-5), (
        (after_another - starting_the_window).abs().max()
    )


def test_learned_positions_differ_without_restart() -> None:
    model = build("nanogpt")
    a, _ = rows_with_other_first_documents()
    model.mask_documents(EOT, restart_positions=False)
    with torch.no_grad():
        assert not torch.allclose(model(a)[:, BOUNDARY + 1 :], model(a[:, BOUNDARY + 1 :]), atol=1e-3)


def test_document_ids_mask_and_positions() -> None:
    idx = torch.tensor([[5, 6, EOT, 7, EOT, EOT, 8]])
    documents = DocumentMask(idx, EOT, restart_positions=True)
    assert documents.ids.tolist() == [[0, 0, 0, 1, 1, 2, 3]]  # the end-of-text id ends its own document
    assert documents.positions is not None and documents.positions.tolist() == [[0, 1, 2, 0, 1, 0, 0]]
    mask = documents.attn_mask[0, 0]
    assert mask[2].tolist() == [True, True, True, False, False, False, False]
    assert mask[4].tolist() == [False, False, False, True, True, False, False]
    assert mask[6].tolist() == [False] * 6 + [True]
    assert DocumentMask(idx, EOT, restart_positions=False).positions is None


@pytest.mark.parametrize("name", ["nanogpt", "tinyllama", "tiny_transformer"])
def test_generation_of_a_prompt_without_end_of_text_is_unchanged(name: str) -> None:
    opts = GenerateParams(prompt="x", num_samples=2, max_new_tokens=8, top_k=None, seed=3)
    prompt, eot = [7, 8, 9, 10], VOCAB - 1  # sampled ids stay below eot: no sample ends a document
    plain = sample(build(name), prompt, opts, eot, torch.device("cpu"))
    masked_model = build(name)
    masked_model.mask_documents(eot, restart_positions=True)
    assert sample(masked_model, prompt, opts, eot, torch.device("cpu")) == plain


def test_a_model_without_the_capability_is_refused() -> None:
    assert not issubclass(TELlama3, DocumentMasking)  # TransformerEngine packs with cu_seqlens, not a mask
    plain = CausalLM(vocab_size=VOCAB, padded_vocab=VOCAB, context_length=16, n_layer=1, n_embd=8)
    packed = TokenizedDataOptions(module="tokenized", dataset="d", packing="documents")
    with pytest.raises(UserError, match=r"^model.module te_llama3 cannot mask attention .* data.packing: documents"):
        mask_model_documents(plain, packed, eot_id=EOT, module="te_llama3")
    unpacked = TokenizedDataOptions(module="tokenized", dataset="d")
    mask_model_documents(plain, unpacked, eot_id=EOT, module="te_llama3")  # nothing asked of the model


def test_masking_needs_an_end_of_text_id() -> None:
    with pytest.raises(UserError, match="data.packing: documents needs token files with an end-of-text id"):
        packed = TokenizedDataOptions(module="tokenized", dataset="d", packing="documents")
        mask_model_documents(build("nanogpt"), packed, eot_id=None, module="nanogpt")
