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

from nanugpt.components import ModelOptions
from nanugpt.losses import soft_cap
from nanugpt.models.nanogpt import DecoderMixin, KVCache, dropout_layer
from nanugpt.models.tinyllama import RotaryEmbedding, apply_rotary, causal_attention, even_rotary_head_size


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


class _RMSNorm(torch.autograd.Function):
    """Parameter-free RMSNorm with a hand-written backward, ``dx = (dy - y mean(dy y)) / rms``.

    On CPU, ``F.rms_norm`` is a decomposition (pow, mean, rsqrt, mul) that autograd differentiates op
    by op: 7 full-size passes over the activations forward and backward, against 5 here. Together
    with ``relu_squared`` and one QK-norm call for q and k, forward + backward of the 4-layer, 128-wide
    CPU shape went from 62.4 to 54.4 ms (bench/README.md).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)  # (..., 1)
        y = x * rstd
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor) -> torch.Tensor:
        y, rstd = ctx.saved_tensors
        return torch.addcmul(dy, y, (dy * y).mean(-1, keepdim=True), value=-1.0).mul_(rstd)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension, without learnable parameters (eps: the dtype's machine epsilon)."""
    if x.device.type == "cpu":
        return _RMSNorm.apply(x)
    return F.rms_norm(x, (x.size(-1),))  # a fused kernel on GPUs


class _ReluSquared(torch.autograd.Function):
    """``relu(x)^2``, keeping only ``relu(x)`` for a one-pass backward ``dx = 2 relu(x) dy``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (2 * r).mul_(dy)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)^2``, the MLP activation."""
    return _ReluSquared.apply(x)


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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        kernel = self.weight.size(0)
        if cache is None:
            padded = F.pad(x, (0, 0, kernel - 1, 0))  # (B, kernel - 1 + T, C)
        else:
            padded = cache.extend_inputs(self, x, kernel - 1)
        w = self.weight.view(kernel, -1)
        y = x
        for j in range(kernel):  # a sum of shifted copies, which inductor compiles into fused kernels
            y = torch.addcmul(y, w[j], padded[:, j : j + x.size(1)])
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
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
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
        y = causal_attention(q, k, v, past, self.scale)  # (B, nh, T, hs)
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
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        h = rms_norm(x)
        if self.attn_conv is not None:
            h = self.attn_conv(h, cache)
        x = x + self.attn(h, cos, sin, cache, layer)
        h = rms_norm(x)
        if self.mlp_conv is not None:
            h = self.mlp_conv(h, cache)
        return x + self.mlp(h)


class ModernGPT(DecoderMixin, nn.Module):
    """Token ids (B, T) -> logits (B, T, padded vocab)."""

    def __init__(self, opts: NanoGPTModernOptions, vocab_size: int):
        super().__init__()
        self.opts = opts
        self.vocab_size = vocab_size
        padded = math.ceil(vocab_size / opts.pad_vocab_to) * opts.pad_vocab_to
        self.context_length = opts.context_length
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(padded, opts.n_embd),  # PyTorch's N(0, 1) init; normalised before use
                drop=dropout_layer(opts.dropout),
                h=nn.ModuleList([Block(opts) for _ in range(opts.n_layer)]),
            )
        )
        self.rotary = RotaryEmbedding(opts.n_embd // opts.n_head, opts.context_length, opts.rope_base)
        self.lm_head = nn.Linear(opts.n_embd, padded, bias=False)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if name.endswith("c_proj") or name == "lm_head":
                    nn.init.zeros_(module.weight)
                else:  # std 0.5 / sqrt(fan_in), as modded-nanogpt
                    nn.init.normal_(module.weight, mean=0.0, std=0.5 / math.sqrt(module.in_features))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the token embedding (a lookup, not a matmul) excluded by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wte.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, hidden_only: bool = False) -> torch.Tensor:
        """Logits (B, T, padded vocab), or with ``hidden_only`` the (B, T, C) input of the head."""
        T = idx.size(1)
        past = cache.length if cache is not None else 0
        if past + T > self.context_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds model.context_length {self.context_length}")
        cos, sin = self.rotary(past, T)  # (T, hs) each
        x = self.transformer.drop(rms_norm(self.transformer.wte(idx)))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, cache, layer)
        if cache is not None:
            cache.length += T
        x = rms_norm(x)
        return x if hidden_only else soft_cap(self.lm_head(x), self.opts.logit_softcap)
