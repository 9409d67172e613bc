"""``nanogpt_modern``: the GPT of the modded-nanogpt speedrun recipe.

Changes to the GPT-2 decoder of ``nanogpt``, each of which the speedrun found
to train faster per token:

- rotary position embeddings instead of learned positions;
- RMSNorm without learnable parameters, on the embedding, before every
  block, on queries and keys per head (QK-norm) and before the head;
- no biases anywhere;
- a ReLU-squared MLP instead of GELU;
- an output head untied from the token embedding;
- zero-initialised output projections (attention and MLP ``c_proj``) and
  head: every block starts as the identity and the first prediction is
  uniform (loss ln V), so early steps are not spent undoing random outputs;
- optionally, logits soft-capped by ``cap * tanh(logits / cap)``.

And one addition from outside the speedrun, off by default: ``short_conv``,
Canon layers (Allen-Zhu, "Physics of Language Models: Part 4.1", 2025): a
short causal depthwise convolution, ``x + conv(x)``, on the normalised input
of every attention and MLP, so each position sees its few predecessors
without spending attention on them. At nanoGPT's CPU budget on Tiny
Shakespeare (characters) a kernel of 4 took val loss from 1.581 to 1.545 at
the same tokens (bench/README.md).

Parameter names follow GPT-2 (``wte``, ``h``, ``c_attn``, ``c_fc``,
``c_proj``, ``lm_head``). The vocabulary is padded to a multiple of
``pad_vocab_to``; padded ids are never produced by the tokenizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, field_validator

from nanugpt.config.schema import ModelOptions
from nanugpt.models.base import DecoderMixin, KVCache, MasksDocuments, family_sizes
from nanugpt.models.layers import (
    DocumentMask,
    RotaryEmbedding,
    apply_rotary,
    causal_attention,
    dropout_layer,
    even_rotary_head_size,
)
from nanugpt.ops.cross_entropy import soft_cap
from nanugpt.ops.relu_squared import relu_squared
from nanugpt.ops.rms_norm import rms_norm


class NanoGPTModernOptions(ModelOptions):
    """modded-nanogpt decoder: RoPE, parameter-free RMSNorm, QK-norm, ReLU² MLP, no biases, untied zero-init head."""

    n_layer: int = Field(gt=0, description="transformer blocks")
    n_head: int = Field(gt=0, description="attention heads")
    n_embd: int = Field(gt=0, description="embedding width; n_embd / n_head must be even")
    rope_base: float = Field(10000.0, gt=0, description="rotary embedding base")
    logit_softcap: float | None = Field(15.0, gt=0, description="cap logits by cap * tanh(logits / cap); null = no cap")
    pad_vocab_to: int = Field(64, gt=0, description="round the vocabulary up to a multiple of this")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the embeddings and on every residual branch")
    short_conv: int = Field(
        0,
        ge=0,
        description="kernel (positions, the current one included) of a causal depthwise convolution "
        "x + conv(x) on the normalised input of every attention and MLP (Canon layers); 0 = none",
    )
    attn_scale: float | None = Field(
        None,
        gt=0,
        description="multiplier of q.k in attention; null = 1/sqrt(head size), which with QK-norm "
        "caps attention logits at sqrt(head size)",
    )

    _even_head_size = field_validator("n_embd")(even_rotary_head_size)

    def build(self, vocab_size: int) -> ModernGPT:
        return ModernGPT(self, vocab_size)


class ShortConv(nn.Module):
    """``x + conv(x)``: each channel of each position plus a learned mix of the same channel at this and
    the ``kernel - 1`` positions before it; zeros stand in for positions before the sequence's start.
    Zero-initialised, so it starts as the identity.

    Cost, 4-layer 128-wide model, batch 24 x 64, 2 threads, kernel 4: compiled, within the machine's noise
    (+0.1%, -5% and +11% in three measurements, bench/README.md); eager, forward + backward 100.9 -> 120.2
    ms (a hand-written backward saved only 3 of those 19 ms).
    """

    def __init__(self, width: int, kernel: int):
        super().__init__()
        # weight[j, 0] weighs the input kernel - 1 - j positions back (weight[-1, 0]: the current one). Channels
        # last, so each tap is a contiguous row that compiled kernels load as vectors (in nn.Conv1d's (width,
        # 1, kernel) layout they gather it element by element: 2x the time). 3-D like any convolution kernel,
        # so Muon leaves it to AdamW.
        self.weight = nn.Parameter(torch.zeros(kernel, 1, width))

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, doc_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``doc_ids``: the (B, T) document of each position (``DocumentMask.ids``), whose earlier documents
        the convolution then does not see (as if each document started the sequence)."""
        kernel, T = self.weight.size(0), x.size(1)
        if cache is None:
            padded = F.pad(x, (0, 0, kernel - 1, 0))  # (B, kernel - 1 + T, C)
        else:
            padded = cache.extend_inputs(self, x, kernel - 1)
        if doc_ids is not None:  # zero the inputs of other documents than each position's own
            padded_docs = F.pad(doc_ids, (kernel - 1, 0), value=-1)  # (B, kernel - 1 + T)
        w = self.weight.view(kernel, -1)
        y = x
        for j in range(kernel):  # a sum of shifted copies, which inductor compiles into fused kernels
            shifted = padded[:, j : j + T]  # (B, T, C)
            if doc_ids is not None and j < kernel - 1:
                shifted = shifted * (padded_docs[:, j : j + T] == doc_ids).unsqueeze(-1).to(x.dtype)
            y = torch.addcmul(y, w[j], shifted)
        return y


class CausalSelfAttention(nn.Module):
    def __init__(self, opts: NanoGPTModernOptions):
        super().__init__()
        self.n_head = opts.n_head
        self.scale = opts.attn_scale
        self.c_attn = nn.Linear(opts.n_embd, 3 * opts.n_embd, bias=False)
        self.c_proj = nn.Linear(opts.n_embd, opts.n_embd, bias=False)
        self.dropout = dropout_layer(opts.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        nh = self.n_head
        qkv = self.c_attn(x).view(B, T, 3 * nh, C // nh).transpose(1, 2)  # (B, 3 nh, T, hs): q, k, v heads
        qk = apply_rotary(rms_norm(qkv[:, : 2 * nh]), cos, sin)  # QK-norm, then RoPE, on q and k at once
        q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, 2 * nh :]  # (B, nh, T, hs) each
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v)  # (B, nh, past + T, hs)
        y = causal_attention(q, k, v, past=past, scale=self.scale, mask=mask)  # (B, nh, T, hs)
        return self.dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, opts: NanoGPTModernOptions):
        super().__init__()
        self.c_fc = nn.Linear(opts.n_embd, 4 * opts.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * opts.n_embd, opts.n_embd, bias=False)
        self.dropout = dropout_layer(opts.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(relu_squared(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, opts: NanoGPTModernOptions):
        super().__init__()
        self.attn = CausalSelfAttention(opts)
        self.mlp = MLP(opts)
        k = opts.short_conv
        self.attn_conv = ShortConv(opts.n_embd, k) if k > 0 else None
        self.mlp_conv = ShortConv(opts.n_embd, k) if k > 0 else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        *,
        documents: DocumentMask | None = None,
    ) -> torch.Tensor:
        mask, ids = (documents.attn_mask, documents.ids) if documents is not None else (None, None)
        h = rms_norm(x)
        if self.attn_conv is not None:
            h = self.attn_conv(h, cache, ids)
        x = x + self.attn(h, cos, sin, cache, layer, mask=mask)
        h = rms_norm(x)
        if self.mlp_conv is not None:
            h = self.mlp_conv(h, cache, ids)
        return x + self.mlp(h)


class ModernGPT(MasksDocuments, DecoderMixin):
    """Token ids (B, T) -> logits (B, T, padded vocab); attention (and ``short_conv``) masked at document
    boundaries after ``mask_documents``."""

    def __init__(self, opts: NanoGPTModernOptions, vocab_size: int):
        super().__init__(**family_sizes(opts, vocab_size))
        self.opts = opts
        self.logit_softcap = opts.logit_softcap
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(self.padded_vocab, opts.n_embd),  # PyTorch's N(0, 1) init; normalised before use
                drop=dropout_layer(opts.dropout),
                h=nn.ModuleList([Block(opts) for _ in range(opts.n_layer)]),
            )
        )
        self.rotary = RotaryEmbedding(opts.n_embd // opts.n_head, opts.context_length, opts.rope_base)
        self.lm_head = nn.Linear(opts.n_embd, self.padded_vocab, bias=False)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if name.endswith("c_proj") or name == "lm_head":
                    nn.init.zeros_(module.weight)
                else:  # std 0.5 / sqrt(fan_in), as modded-nanogpt
                    nn.init.normal_(module.weight, mean=0.0, std=0.5 / math.sqrt(module.in_features))

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder blocks, in order."""
        return list(self.transformer.h)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, hidden_only: bool = False) -> torch.Tensor:
        """Logits (B, T, padded vocab), or with ``hidden_only`` the (B, T, C) input of the head."""
        T = idx.size(1)
        past = cache.length if cache is not None else 0
        self.check_length(past + T)
        documents = self.documents(idx, cache)
        cos, sin = self.rotary.of(past, T, documents)  # (T, hs) each, or (B, 1, T, hs) restarted
        x = self.transformer.drop(rms_norm(self.transformer.wte(idx)))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, cache, layer, documents=documents)
        if cache is not None:
            cache.length += T
        x = rms_norm(x)
        return x if hidden_only else soft_cap(self.lm_head(x), self.logit_softcap)
