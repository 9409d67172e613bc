"""``nanogpt``: a GPT-2 style decoder.

Token + learned position embeddings, pre-LayerNorm blocks of causal
self-attention (``scaled_dot_product_attention``) and a GELU MLP, a final
LayerNorm and a head tied to the token embedding. Parameter names follow
GPT-2 (``wte``, ``wpe``, ``c_attn``, ``c_proj``, ``ln_f``) so that Hugging Face
interchange is a table of renames. The vocabulary is padded to a multiple of
64 for faster matmuls; padded ids are never produced by the tokenizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from nanugpt.components import ModelOptions


class NanoGPTOptions(ModelOptions):
    """GPT-2 style decoder: learned positions, pre-LayerNorm, GELU MLP, tied head."""

    n_layer: int = Field(gt=0, description="transformer blocks")
    n_head: int = Field(gt=0, description="attention heads; must divide n_embd")
    n_embd: int = Field(gt=0, description="embedding width")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after attention, MLP and embeddings")
    bias: bool = Field(True, description="biases in Linear and LayerNorm layers (GPT-2 has them)")
    pad_vocab_to: int = Field(64, gt=0, description="round the vocabulary up to a multiple of this")

    def build(self, vocab_size: int) -> GPT:
        return GPT(self, vocab_size)


class KVCache:
    """Keys and values of past positions for incremental decoding, one slot per layer; also the last
    inputs of short convolutions (``nanogpt_modern``'s ``short_conv``), keyed by the convolution module."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.conv_inputs: dict[nn.Module, torch.Tensor] = {}
        self.length = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (B, nh, T, hs) keys/values of ``layer``; return all so far."""
        past_k, past_v = self.keys[layer], self.values[layer]
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

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


def dropout_layer(p: float) -> nn.Module:
    """Dropout, or nothing at all when ``p`` is 0 (saves a call per layer per step)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class DecoderMixin:
    """FLOP count and KV cache of a decoder whose ``opts`` has n_layer, n_embd and context_length
    and which counts its matmul weights with ``num_params()``."""

    opts: ModelOptions
    lm_head: nn.Linear

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the weights plus 12 L T C for attention (PaLM appendix B)."""
        o = self.opts
        return 6 * self.num_params() + 12 * o.n_layer * o.n_embd * o.context_length

    def new_cache(self) -> KVCache:
        """An empty key/value cache for ``forward`` during generation."""
        return KVCache(self.opts.n_layer)

    def linear_head(self) -> tuple[torch.Tensor, float | None]:
        """The (padded vocab, C) weight of the bias-free head and the soft cap of its logits (None: none):
        ``forward(idx)`` is ``soft_cap(forward(idx, hidden_only=True) @ weight.T, cap)``, which lets the
        train step compute the loss with ``Loss.from_hidden``, without the logits in memory."""
        return self.lm_head.weight, getattr(self.opts, "logit_softcap", None)


class CausalSelfAttention(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.n_head = opts.n_head
        self.c_attn = nn.Linear(opts.n_embd, 3 * opts.n_embd, bias=opts.bias)
        self.c_proj = nn.Linear(opts.n_embd, opts.n_embd, bias=opts.bias)
        self.dropout = opts.dropout
        self.resid_dropout = dropout_layer(opts.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:  # new queries see every cached position and the causal part of the new ones
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.c_fc = nn.Linear(opts.n_embd, 4 * opts.n_embd, bias=opts.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * opts.n_embd, opts.n_embd, bias=opts.bias)
        self.dropout = dropout_layer(opts.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, opts: NanoGPTOptions):
        super().__init__()
        self.ln_1 = nn.LayerNorm(opts.n_embd, bias=opts.bias)
        self.attn = CausalSelfAttention(opts)
        self.ln_2 = nn.LayerNorm(opts.n_embd, bias=opts.bias)
        self.mlp = MLP(opts)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(DecoderMixin, nn.Module):
    """Token ids (B, T) -> logits (B, T, padded vocab)."""

    def __init__(self, opts: NanoGPTOptions, vocab_size: int):
        super().__init__()
        self.opts = opts
        self.vocab_size = vocab_size
        padded = math.ceil(vocab_size / opts.pad_vocab_to) * opts.pad_vocab_to
        self.context_length = opts.context_length
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(padded, opts.n_embd),
                wpe=nn.Embedding(opts.context_length, opts.n_embd),
                drop=dropout_layer(opts.dropout),
                h=nn.ModuleList([Block(opts) for _ in range(opts.n_layer)]),
                ln_f=nn.LayerNorm(opts.n_embd, bias=opts.bias),
            )
        )
        self.lm_head = nn.Linear(opts.n_embd, padded, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * opts.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default, as in FLOP estimates."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, hidden_only: bool = False) -> torch.Tensor:
        """Logits (B, T, padded vocab), or with ``hidden_only`` the (B, T, C) input of the head."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.context_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds model.context_length {self.context_length}")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        return x if hidden_only else self.lm_head(x)
