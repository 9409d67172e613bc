"""``te_llama3``: a Llama 3 decoder of NVIDIA TransformerEngine blocks, for NVIDIA GPUs.

Each block is a ``transformer_engine.pytorch.TransformerLayer`` configured
as Llama 3: pre-RMSNorm, grouped-query causal self-attention with rotary
position embeddings (TransformerEngine's fused attention), a SwiGLU MLP and
no biases; then a final RMSNorm and a head, tied to the embedding or not.
The options are those of ``tinyllama`` (the same architecture in plain
PyTorch, which runs anywhere), with Llama 3's rotary base by default.

TransformerEngine is an optional dependency with CUDA kernels: where it is not
installed, or torch sees no CUDA GPU, ``build()`` stops with a
``UserError`` that says what to install or where to run. Generation re-reads
the context window per token (no key/value cache).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn as nn
from pydantic import Field

from nanugpt.errors import UserError
from nanugpt.models.base import CausalLM, family_sizes
from nanugpt.models.tinyllama import TinyLlamaOptions

TE_INSTALL = "pip install transformer-engine[pytorch]"


class TransformerEngineUnavailable(UserError):
    """``te_llama3`` was asked for where TransformerEngine or a CUDA GPU is missing."""


def unavailable_reason(te_installed: bool, cuda_available: bool) -> str | None:
    """Why ``te_llama3`` cannot run here, as a message naming the fix; None when it can."""
    if not te_installed:
        return (
            "model.module te_llama3 needs NVIDIA TransformerEngine, which is not installed: run "
            f"`{TE_INSTALL}` on a machine with an NVIDIA GPU and CUDA, or use model.module tinyllama "
            "(the same architecture in plain PyTorch, CPU or GPU)"
        )
    if not cuda_available:
        return (
            "model.module te_llama3 runs on NVIDIA GPUs only (TransformerEngine kernels), but torch sees no CUDA "
            "GPU: run on a machine with one, or use model.module tinyllama (plain PyTorch, CPU or GPU)"
        )
    return None


class TELlama3Options(TinyLlamaOptions):
    """Llama 3 decoder of TransformerEngine TransformerLayer blocks (RMSNorm, SwiGLU, GQA, RoPE); NVIDIA GPU only."""

    rope_theta: float = Field(500000.0, gt=0, description="rotary embedding base (Llama 3: 5e5)")

    def build(self, vocab_size: int) -> TELlama3:
        reason = unavailable_reason(
            importlib.util.find_spec("transformer_engine") is not None, torch.cuda.is_available()
        )
        if reason is not None:
            raise TransformerEngineUnavailable(reason)
        return TELlama3(self, vocab_size)


class TELlama3(CausalLM):
    """Token ids (B, T) on a CUDA device -> logits (B, T, padded vocab)."""

    def __init__(self, opts: TELlama3Options, vocab_size: int):
        import transformer_engine.pytorch as te
        from transformer_engine.pytorch.attention import RotaryPositionEmbedding

        super().__init__(**family_sizes(opts, vocab_size))
        self.opts = opts

        def init(weight: torch.Tensor) -> None:
            nn.init.normal_(weight, mean=0.0, std=opts.init_std)

        self.embed_tokens = nn.Embedding(self.padded_vocab, opts.n_embd)
        init(self.embed_tokens.weight)
        self.layers = nn.ModuleList(
            [
                te.TransformerLayer(
                    hidden_size=opts.n_embd,
                    ffn_hidden_size=opts.mlp_width,
                    num_attention_heads=opts.n_head,
                    num_gqa_groups=opts.kv_heads,
                    layernorm_epsilon=opts.rms_norm_eps,
                    hidden_dropout=0.0,
                    attention_dropout=0.0,
                    init_method=init,
                    output_layer_init_method=init,
                    layer_number=layer + 1,  # 1-based in TransformerEngine
                    self_attn_mask_type="causal",
                    normalization="RMSNorm",
                    activation="swiglu",
                    bias=False,
                    attn_input_format="bshd",
                    fuse_qkv_params=True,
                )
                for layer in range(opts.n_layer)
            ]
        )
        self.norm = te.RMSNorm(opts.n_embd, eps=opts.rms_norm_eps)
        self.lm_head = nn.Linear(opts.n_embd, self.padded_vocab, bias=False)
        if opts.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        else:
            init(self.lm_head.weight)
        rope = RotaryPositionEmbedding(opts.n_embd // opts.n_head, rotary_base=opts.rope_theta)
        self.register_buffer("rope_freqs", rope(max_seq_len=opts.context_length), persistent=False)  # (T_max, 1, 1, hs)

    def transformer_blocks(self) -> list[nn.Module]:
        """The decoder blocks, in order."""
        return list(self.layers)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if idx.device.type != "cuda":
            raise TransformerEngineUnavailable(
                f"model.module te_llama3 runs on CUDA only, got input on {idx.device}; set general.device_type "
                "to 'auto' or 'cuda'"
            )
        self.check_length(T)
        x = self.embed_tokens(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, rotary_pos_emb=self.rope_freqs[:T])  # (B, T, C)
        return self.lm_head(self.norm(x))  # (B, T, padded vocab)
