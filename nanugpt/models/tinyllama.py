"""``tinyllama``: a Llama-style decoder in plain PyTorch.

Token embedding, pre-RMSNorm blocks of grouped-query causal self-attention
with rotary position embeddings (``scaled_dot_product_attention``, no
flash-attn or CUDA extension) and a SwiGLU MLP, a final RMSNorm and a head
that is tied to the embedding or not. No biases anywhere.

Parameter names, the RoPE convention (``rotate_half`` over the two halves of
each head) and the RMSNorm arithmetic are those of Hugging Face
``LlamaForCausalLM``, so ``model.state_dict()`` loads unchanged into
``LlamaForCausalLM(LlamaConfig(**model.hf_config()))`` and gives the same
logits. The vocabulary is padded to a multiple of ``pad_vocab_to`` for faster
matmuls; the Hugging Face ``vocab_size`` is that padded size (the padded ids
are never produced by the tokenizer), or slice ``embed_tokens`` and
``lm_head`` to the first ``vocab_size`` rows for an unpadded export.
"""

from __future__ import annotations

from typing import Any

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
    even_rotary_head_size,
    kv_heads_divide_heads,
    swiglu_width,
)


class TinyLlamaOptions(ModelOptions):
    """Llama-style decoder: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, optional tied head."""

    n_layer: int = Field(gt=0, description="transformer blocks (HF num_hidden_layers)")
    n_head: int = Field(gt=0, description="query heads (HF num_attention_heads)")
    n_kv_head: int | None = Field(
        None, gt=0, description="key/value heads for grouped-query attention; must divide n_head; null = n_head"
    )
    n_embd: int = Field(gt=0, description="embedding width (HF hidden_size); n_embd / n_head must be even")
    intermediate_size: int | None = Field(
        None, gt=0, description="SwiGLU hidden width; null = 8/3 n_embd rounded up to a multiple of 64"
    )
    rope_theta: float = Field(10000.0, gt=0, description="rotary embedding base (Llama 2: 1e4, Llama 3: 5e5)")
    rms_norm_eps: float = Field(1e-5, gt=0, description="epsilon of every RMSNorm")
    tie_word_embeddings: bool = Field(False, description="share the token embedding with the output head")
    init_std: float = Field(0.02, gt=0, description="std of the normal init of Linear and Embedding weights")
    pad_vocab_to: int = Field(64, gt=0, description="round the vocabulary up to a multiple of this")

    _kv_heads_divide_heads = field_validator("n_kv_head")(kv_heads_divide_heads)
    _even_head_size = field_validator("n_embd")(even_rotary_head_size)

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` when it is not set."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_width(self) -> int:
        """The SwiGLU hidden width: ``intermediate_size`` or its Llama-like default."""
        return swiglu_width(self.n_embd, self.intermediate_size)

    def build(self, vocab_size: int) -> TinyLlama:
        return TinyLlama(self, vocab_size)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in float32 (as Hugging Face ``LlamaRMSNorm``)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps)  # (..., C) in float32
        return self.weight * normed.to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, opts: TinyLlamaOptions):
        super().__init__()
        self.n_head, self.n_kv_head = opts.n_head, opts.kv_heads
        self.head_size = opts.n_embd // opts.n_head
        self.q_proj = nn.Linear(opts.n_embd, self.n_head * self.head_size, bias=False)
        self.k_proj = nn.Linear(opts.n_embd, self.n_kv_head * self.head_size, bias=False)
        self.v_proj = nn.Linear(opts.n_embd, self.n_kv_head * self.head_size, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_size, opts.n_embd, bias=False)

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
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v)  # (B, nkv, past + T, hs)
        y = causal_attention(q, k, v, past=past, mask=mask)  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_size))  # (B, T, C)


class LlamaMLP(nn.Module):
    def __init__(self, opts: TinyLlamaOptions):
        super().__init__()
        self.gate_proj = nn.Linear(opts.n_embd, opts.mlp_width, bias=False)
        self.up_proj = nn.Linear(opts.n_embd, opts.mlp_width, bias=False)
        self.down_proj = nn.Linear(opts.mlp_width, opts.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, opts: TinyLlamaOptions):
        super().__init__()
        self.input_layernorm = RMSNorm(opts.n_embd, opts.rms_norm_eps)
        self.self_attn = LlamaAttention(opts)
        self.post_attention_layernorm = RMSNorm(opts.n_embd, opts.rms_norm_eps)
        self.mlp = LlamaMLP(opts)

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
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, mask=mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """The decoder without its head (Hugging Face ``LlamaModel``): embedding, layers, final norm."""

    def __init__(self, opts: TinyLlamaOptions, vocab: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, opts.n_embd)
        self.layers = nn.ModuleList([LlamaDecoderLayer(opts) for _ in range(opts.n_layer)])
        self.norm = RMSNorm(opts.n_embd, opts.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(opts.n_embd // opts.n_head, opts.context_length, opts.rope_theta)

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, documents: DocumentMask | None = None
    ) -> torch.Tensor:
        past = cache.length if cache is not None else 0
        cos, sin = self.rotary_emb.of(past, idx.size(1), documents)  # (T, hs) each, or (B, 1, T, hs) restarted
        mask = documents.attn_mask if documents is not None else None  # (B, 1, T, T)
        x = self.embed_tokens(idx)  # (B, T, C)
        for layer, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, layer, mask=mask)
        return self.norm(x)  # (B, T, C)


class TinyLlama(MasksDocuments, DecoderMixin):
    """Token ids (B, T) -> logits (B, T, padded vocab), with Hugging Face ``LlamaForCausalLM`` names; attention
    masked at document boundaries after ``mask_documents``."""

    def __init__(self, opts: TinyLlamaOptions, vocab_size: int):
        super().__init__(**family_sizes(opts, vocab_size))
        self.opts = opts
        self.model = LlamaBody(opts, self.padded_vocab)
        self.lm_head = nn.Linear(opts.n_embd, self.padded_vocab, bias=False)
        self.apply(self._init_weights)
        if opts.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):  # as Hugging Face Llama (initializer_range)
            nn.init.normal_(module.weight, mean=0.0, std=self.opts.init_std)

    def hf_config(self) -> dict[str, Any]:
        """Keyword arguments of ``transformers.LlamaConfig`` describing this network.

        ``LlamaForCausalLM(LlamaConfig(**model.hf_config()))`` loads ``model.state_dict()`` as it is;
        ``vocab_size`` is the padded vocabulary.
        """
        o = self.opts
        return {
            "vocab_size": self.padded_vocab,
            "hidden_size": o.n_embd,
            "intermediate_size": o.mlp_width,
            "num_hidden_layers": o.n_layer,
            "num_attention_heads": o.n_head,
            "num_key_value_heads": o.kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": o.context_length,
            "rms_norm_eps": o.rms_norm_eps,
            "rope_theta": o.rope_theta,
            "tie_word_embeddings": o.tie_word_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "initializer_range": o.init_std,
        }

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder blocks, in order."""
        return list(self.model.layers)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, hidden_only: bool = False) -> torch.Tensor:
        """Logits (B, T, padded vocab), or with ``hidden_only`` the (B, T, C) input of the head."""
        past = cache.length if cache is not None else 0
        self.check_length(past + idx.size(1))
        x = self.model(idx, cache, self.documents(idx, cache))  # (B, T, C)
        if cache is not None:
            cache.length += idx.size(1)
        return x if hidden_only else self.lm_head(x)
