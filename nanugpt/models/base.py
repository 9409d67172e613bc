"""The shared base of every model family: what decoders share. Their contract is
``nanugpt.config.protocols.LanguageModel``.

- ``padded_vocab``: the vocabulary rounded up to a multiple, for faster matmuls.
- ``CausalLM``: the ``nn.Module`` base of every family, which counts parameters and FLOPs once for all.
- ``DecoderMixin`` and ``KVCache``: the base of the decoders whose final hidden states meet a bias-free
  linear head: incremental decoding with a key/value cache, and the head the loss can fuse with.
- ``MasksDocuments``: the ``DocumentMasking`` capability (``data.packing: documents``) of the families whose
  attention takes a mask.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from nanugpt.models.layers import DocumentMask


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (``pad_vocab_to``)."""
    return math.ceil(vocab_size / multiple) * multiple


def family_sizes(opts: Any, vocab_size: int) -> dict[str, int]:
    """``CausalLM``'s sizes for a family whose options have ``n_layer``, ``n_embd`` and ``pad_vocab_to``."""
    return {
        "vocab_size": vocab_size,
        "padded_vocab": padded_vocab(vocab_size, opts.pad_vocab_to),
        "context_length": opts.context_length,
        "n_layer": opts.n_layer,
        "n_embd": opts.n_embd,
    }


class CausalLM(nn.Module):
    """Base of every model family: its sizes, the length check, and the parameter and FLOP counts."""

    def __init__(self, *, vocab_size: int, padded_vocab: int, context_length: int, n_layer: int, n_embd: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.padded_vocab = padded_vocab
        self.context_length = context_length
        self.n_layer = n_layer
        self.n_embd = n_embd

    def check_length(self, tokens: int) -> None:
        """Raise ValueError when a sequence of ``tokens`` positions does not fit the context window."""
        if tokens > self.context_length:
            raise ValueError(f"sequence of {tokens} tokens exceeds model.context_length {self.context_length}")

    def lookup_params(self) -> int:
        """Elements of the embedding tables that are only looked up, never multiplied: every ``nn.Embedding``
        weight that is not also the weight of an ``nn.Linear`` (a head tied to the token embedding is a matmul).
        Override where a model's lookups are held otherwise."""
        matmul = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        tables = {id(m.weight): m.weight for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(w.numel() for key, w in tables.items() if key not in matmul)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count, each shared tensor once; by default without ``lookup_params``, as in FLOP estimates."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.lookup_params() if non_embedding else n

    def transformer_blocks(self) -> list[nn.Module]:
        """The repeated blocks, in order (``LanguageModel.transformer_blocks``); none unless a family names them."""
        return []

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the weights plus 12 L T C for attention (PaLM appendix B)."""
        return 6 * self.num_params() + 12 * self.n_layer * self.n_embd * self.context_length


class KVCache:
    """Keys and values of past positions for incremental decoding, one slot per layer; also the last
    inputs of short convolutions (``nanogpt_modern``'s ``short_conv``), keyed by the convolution module.

    Each layer's keys and values live in a buffer of ``capacity`` positions, allocated at its first
    ``extend`` and written in place, so a decoding step copies only its new positions."""

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.conv_inputs: dict[nn.Module, torch.Tensor] = {}
        self.length = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, nh, T, hs) keys/values of ``layer`` after the ``length`` cached ones;
        return views of all so far, (B, nh, length + T, hs)."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            B, nh, _, hs = k.shape
            keys = self.keys[layer] = k.new_empty(B, nh, self.capacity, hs)
            values = self.values[layer] = v.new_empty(B, nh, self.capacity, hs)
        end = self.length + k.size(2)  # within capacity: the model's check_length ran before
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def extend_inputs(self, conv: nn.Module, x: torch.Tensor, keep: int) -> torch.Tensor:
        """Prepend the ``keep`` positions kept for ``conv`` (zeros at the start of a sequence, as in training)
        to this step's (B, T, C) ``x``, keep the last ``keep`` positions of the result and return it:
        (B, keep + T, C)."""
        past = self.conv_inputs.get(conv)
        if past is None:
            past = x.new_zeros(x.size(0), keep, x.size(2))
        whole = torch.cat([past, x], dim=1)
        self.conv_inputs[conv] = whole[:, whole.size(1) - keep :]
        return whole


class DecoderMixin(CausalLM):
    """Base of the decoders whose final hidden states meet a bias-free ``lm_head``.

    Their ``forward(idx, cache=None, hidden_only=False)`` gives the logits (B, T, padded vocab), reads and
    extends a ``KVCache`` (``new_cache``) when given one, and with ``hidden_only`` gives the (B, T, C) input of
    the head instead: ``forward(idx)`` is ``soft_cap(forward(idx, hidden_only=True) @ weight.T, cap)`` with
    ``weight, cap = linear_head()``, which lets the train step compute the loss with ``Loss.from_hidden``,
    without the logits in memory.
    """

    lm_head: nn.Linear
    logit_softcap: float | None = None  # cap * tanh(logits / cap) on the head's output; None: no cap

    def new_cache(self) -> KVCache:
        """An empty key/value cache for ``forward`` during generation, for up to ``context_length`` positions."""
        return KVCache(self.n_layer, self.context_length)

    def linear_head(self) -> tuple[torch.Tensor, float | None]:
        """The (padded vocab, C) weight of the head and the soft cap of its logits (None: none)."""
        return self.lm_head.weight, self.logit_softcap


class MasksDocuments:
    """``nanugpt.config.protocols.DocumentMasking`` for a family whose forward passes ``documents(idx, cache)``'s
    mask to its attention (and its positions to its position embeddings). Off until ``mask_documents``."""

    document_eot: int | None = None  # the end-of-text id that ends each document; None: one causal window
    restart_positions: bool = False

    def mask_documents(self, eot_id: int, *, restart_positions: bool) -> None:
        """Mask attention at the document boundaries that ``eot_id`` marks; with ``restart_positions``, count
        positions from each document's start."""
        self.document_eot = eot_id
        self.restart_positions = restart_positions

    def documents(self, idx: torch.Tensor, cache: KVCache | None = None) -> DocumentMask | None:
        """The documents of the (B, T) ids of this forward, or None: unmasked, or decoding with a key/value cache
        (generation attends over the whole window; a prompt without end-of-text ids is one document anyway)."""
        if self.document_eot is None or cache is not None:
            return None
        return DocumentMask(idx, self.document_eot, restart_positions=self.restart_positions)
