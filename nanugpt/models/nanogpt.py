"""``nanogpt``: a GPT-2 style decoder.

Token + learned position embeddings, pre-LayerNorm blocks of causal
self-attention (``scaled_dot_product_attention``) and a GELU MLP, a final
LayerNorm and a head tied to the token embedding (or not: ``tie_lm_head``).
Each dropout has its own rate (nanuGPT's ``attn_dropout``, ``resid_dropout``,
``mlp_dropout``, ``embed_dropout``); ``dropout`` is the rate of those left unset. Parameter names follow
GPT-2 (``wte``, ``wpe``, ``c_attn``, ``c_proj``, ``ln_f``) so that Hugging Face
interchange is a table of renames. The vocabulary is padded to a multiple of
64 for faster matmuls; padded ids are never produced by the tokenizer.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field

from nanugpt.config.schema import ModelOptions, Problem, heads_divide_width
from nanugpt.models.base import DecoderMixin, KVCache, MasksDocuments, family_sizes
from nanugpt.models.layers import causal_attention, dropout_layer


class NanoGPTOptions(ModelOptions):
    """GPT-2 style decoder: learned positions, pre-LayerNorm, GELU MLP, tied head by default."""

    n_layer: int = Field(gt=0, description="transformer blocks")
    n_head: int = Field(gt=0, description="attention heads; must divide n_embd")
    n_embd: int = Field(gt=0, description="embedding width")
    dropout: float = Field(0.0, ge=0, lt=1, description="rate of each of the four dropouts below left null")
    attn_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout on the attention weights (softmax of QK^T); null = dropout"
    )
    resid_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout after the attention's output projection; null = dropout"
    )
    mlp_dropout: float | None = Field(None, ge=0, lt=1, description="dropout after the MLP; null = dropout")
    embed_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout after token + position embeddings; null = dropout"
    )
    tie_lm_head: bool = Field(True, description="share the token embedding with the output head (GPT-2 does)")
    initializer_range: float = Field(
        0.02,
        gt=0,
        description="std of the normal init of Linear and Embedding weights (residual projections: "
        "divided by sqrt(2 n_layer))",
    )
    bias: bool = Field(True, description="biases in Linear and LayerNorm layers (GPT-2 has them)")
    pad_vocab_to: int = Field(64, gt=0, description="round the vocabulary up to a multiple of this")

    def check(self, params: Any) -> list[Problem]:
        return heads_divide_width(self.n_embd, self.n_head)

    def rate(self, part: Literal["attn", "resid", "mlp", "embed"]) -> float:
        """The dropout rate of ``part``: its own ``<part>_dropout``, or ``dropout`` when that is null."""
        own = getattr(self, f"{part}_dropout")
        return self.dropout if own is None else own

    def build(self, vocab_size: int) -> GPT:
        return GPT(self, vocab_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.n_head = opts.n_head
        self.c_attn = nn.Linear(opts.n_embd, 3 * opts.n_embd, bias=opts.bias)
        self.c_proj = nn.Linear(opts.n_embd, opts.n_embd, bias=opts.bias)
        self.dropout = opts.rate("attn")
        self.resid_dropout = dropout_layer(opts.rate("resid"))

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, past=past, dropout=dropout, mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.c_fc = nn.Linear(opts.n_embd, 4 * opts.n_embd, bias=opts.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * opts.n_embd, opts.n_embd, bias=opts.bias)
        self.dropout = dropout_layer(opts.rate("mlp"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.ln_1 = nn.LayerNorm(opts.n_embd, bias=opts.bias)
        self.attn = CausalSelfAttention(opts)
        self.ln_2 = nn.LayerNorm(opts.n_embd, bias=opts.bias)
        self.mlp = MLP(opts)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, mask=mask)
        return x + self.mlp(self.ln_2(x))


class GPT(MasksDocuments, DecoderMixin):
    """Token ids (B, T) -> logits (B, T, padded vocab); attention masked at document boundaries after
    ``mask_documents`` (with restarted positions: each document's learned positions from 0)."""

    def __init__(self, opts: NanoGPTOptions, vocab_size: int):
        super().__init__(**family_sizes(opts, vocab_size))
        self.opts = opts
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(self.padded_vocab, opts.n_embd),
                wpe=nn.Embedding(opts.context_length, opts.n_embd),
                drop=dropout_layer(opts.rate("embed")),
                h=nn.ModuleList([Block(opts) for _ in range(opts.n_layer)]),
                ln_f=nn.LayerNorm(opts.n_embd, bias=opts.bias),
            )
        )
        self.lm_head = nn.Linear(opts.n_embd, self.padded_vocab, bias=False)
        if opts.tie_lm_head:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                nn.init.normal_(param, mean=0.0, std=opts.initializer_range / math.sqrt(2 * opts.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.opts.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.opts.initializer_range)

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder blocks, in order."""
        return list(self.transformer.h)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, hidden_only: bool = False) -> torch.Tensor:
        """Logits (B, T, padded vocab), or with ``hidden_only`` the (B, T, C) input of the head."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        self.check_length(past + T)
        documents = self.documents(idx, cache)
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        if documents is not None and documents.positions is not None:
            pos = documents.positions  # (B, T)
        mask = documents.attn_mask if documents is not None else None  # (B, 1, T, T)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer, mask=mask)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        return x if hidden_only else self.lm_head(x)
