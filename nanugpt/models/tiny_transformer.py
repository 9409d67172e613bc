"""``tiny_transformer``: the small causal transformer of the algorithmic tasks.

Sized by default like the decoder of the grokking paper (Power et al., 2022:
2 layers, width 128, 4 heads): token + learned position embeddings,
pre-norm blocks of causal self-attention (``scaled_dot_product_attention``)
and a GELU MLP, a final norm and an untied head with no vocabulary padding.
Weights keep PyTorch's default init. The norms can be switched off, and
there is no dropout unless asked for. It maps (B, T) ids to (B, T, V)
logits like every model; a task's loss decides which positions count (e.g.
the last one, the answer of ``a op b =``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field

from nanugpt.config.schema import ModelOptions, Problem, heads_divide_width
from nanugpt.models.base import CausalLM, MasksDocuments
from nanugpt.models.layers import causal_attention, dropout_layer


class TinyTransformerOptions(ModelOptions):
    """Small causal transformer for algorithmic tasks (grokking, arithmetic): learned positions, optional norms."""

    n_layer: int = Field(2, gt=0, description="transformer blocks")
    n_head: int = Field(4, gt=0, description="attention heads; must divide n_embd")
    n_embd: int = Field(128, gt=0, description="embedding width")
    norm: Literal["layernorm", "none"] = Field("layernorm", description="norm before each sublayer and the head")
    bias: bool = Field(True, description="biases in Linear and LayerNorm layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention, MLP and embeddings")

    def check(self, params: Any) -> list[Problem]:
        return heads_divide_width(self.n_embd, self.n_head)

    def build(self, vocab_size: int) -> TinyTransformer:
        return TinyTransformer(self, vocab_size)


def make_norm(opts: TinyTransformerOptions) -> nn.Module:
    """A LayerNorm, or nothing when ``norm`` is 'none'."""
    return nn.LayerNorm(opts.n_embd, bias=opts.bias) if opts.norm == "layernorm" else nn.Identity()


class CausalSelfAttention(nn.Module):
    def __init__(self, opts: TinyTransformerOptions):
        super().__init__()
        self.n_head = opts.n_head
        self.dropout = opts.dropout
        self.qkv = nn.Linear(opts.n_embd, 3 * opts.n_embd, bias=opts.bias)
        self.proj = nn.Linear(opts.n_embd, opts.n_embd, bias=opts.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = causal_attention(q, k, v, dropout=self.dropout if self.training else 0.0, mask=mask)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, opts: TinyTransformerOptions):
        super().__init__()
        self.norm_1 = make_norm(opts)
        self.attn = CausalSelfAttention(opts)
        self.norm_2 = make_norm(opts)
        self.mlp = nn.Sequential(
            nn.Linear(opts.n_embd, 4 * opts.n_embd, bias=opts.bias),
            nn.GELU(),
            nn.Linear(4 * opts.n_embd, opts.n_embd, bias=opts.bias),
        )
        self.dropout = dropout_layer(opts.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_1(x), mask))
        return x + self.dropout(self.mlp(self.norm_2(x)))  # (B, T, C)


class TinyTransformer(MasksDocuments, CausalLM):
    """Token ids (B, T) -> logits (B, T, vocab); attention masked at document boundaries after
    ``mask_documents`` (with restarted positions: each document's learned positions from 0)."""

    def __init__(self, opts: TinyTransformerOptions, vocab_size: int):
        super().__init__(
            vocab_size=vocab_size,
            padded_vocab=vocab_size,
            context_length=opts.context_length,
            n_layer=opts.n_layer,
            n_embd=opts.n_embd,
        )
        self.opts = opts
        self.token_embedding = nn.Embedding(vocab_size, opts.n_embd)
        self.position_embedding = nn.Embedding(opts.context_length, opts.n_embd)
        self.dropout = dropout_layer(opts.dropout)
        self.blocks = nn.ModuleList([Block(opts) for _ in range(opts.n_layer)])
        self.norm_f = make_norm(opts)
        self.head = nn.Linear(opts.n_embd, vocab_size, bias=opts.bias)

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder blocks, in order."""
        return list(self.blocks)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        self.check_length(T)
        documents = self.documents(idx)
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        if documents is not None and documents.positions is not None:
            pos = documents.positions  # (B, T)
        mask = documents.attn_mask if documents is not None else None  # (B, 1, T, T)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm_f(x))  # (B, T, vocab)
