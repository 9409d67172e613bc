"""Layers shared by several model families: dropout, causal attention (optionally masked at document boundaries),
grouped-query and SwiGLU sizes, rotary position embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import ValidationInfo


def dropout_layer(p: float) -> nn.Module:
    """Dropout, or nothing at all when ``p`` is 0 (saves a call per layer per step)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    past: int = 0,
    scale: float | None = None,
    dropout: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal ``scaled_dot_product_attention`` of T new queries over ``past`` cached and T new keys.

    q is (B, nh, T, hs); k and v are (B, nkv, past + T, hs) with nkv dividing nh (grouped-query
    attention when fewer). ``scale`` multiplies q.k (None: 1 / sqrt(hs)); ``dropout`` is the probability
    of dropping an attention weight (pass 0 outside training). ``mask``: a (B, 1, T, T) boolean mask that
    replaces the causal one (``DocumentMask.attn_mask``: causal within each document; only with ``past`` 0).
    Returns (B, nh, T, hs).
    """
    nh, T = q.size(1), q.size(2)
    if k.size(1) != nh:
        # grouped-query attention: each key/value head serves nh / nkv consecutive query heads
        # (repeated here, as SDPA's enable_gqa needs torch >= 2.5 and the project supports 2.4)
        k = k.repeat_interleave(nh // k.size(1), dim=1)  # (B, nh, past + T, hs)
        v = v.repeat_interleave(nh // v.size(1), dim=1)  # (B, nh, past + T, hs)
    if mask is not None:  # packed documents: each query sees the earlier positions of its own document only
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale)
    if T == 1:  # one new query sees every position: no mask to build
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
    # new queries see every cached position and the causal part of the new ones
    mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)  # (T, past + T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


class DocumentMask:
    """Where the documents of packed windows begin and end, from the (B, T) token ids; built once per forward.

    The end-of-text id ends the document it follows: the document of position t is the number of end-of-text
    ids strictly before t in its row. ``attn_mask`` (B, 1, T, T) lets query t see key j iff j <= t and both are
    in the same document (every query sees itself, so no row is empty); ``positions`` (B, T), with
    ``restart_positions``, counts each position from its document's first token (else None: 0 .. T-1).
    """

    def __init__(self, idx: torch.Tensor, eot_id: int, *, restart_positions: bool):
        ends = idx == eot_id  # (B, T)
        self.ids = torch.cumsum(ends, dim=1) - ends.long()  # (B, T): document of each position
        T = idx.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()  # (T, T)
        same = self.ids.unsqueeze(2) == self.ids.unsqueeze(1)  # (B, T, T)
        self.attn_mask = (same & causal).unsqueeze(1)  # (B, 1, T, T)
        self.positions: torch.Tensor | None = None
        if restart_positions:
            t = torch.arange(T, device=idx.device).expand_as(idx)  # (B, T)
            starts = torch.ones_like(ends)
            starts[:, 1:] = ends[:, :-1]  # a document starts at 0 and after each end-of-text
            first = torch.cummax(torch.where(starts, t, 0), dim=1).values  # (B, T): its document's first position
            self.positions = t - first  # (B, T)


def even_rotary_head_size(cls: type, n_embd: int, info: ValidationInfo) -> int:
    """Validator of ``n_embd`` for rotary models: n_head times an even head size."""
    n_head = info.data.get("n_head")
    if n_head is not None and (n_embd % n_head or (n_embd // n_head) % 2):
        raise ValueError(f"must be n_head ({n_head}) x an even head size (rotary embeddings turn pairs of dimensions)")
    return n_embd


def kv_heads_divide_heads(cls: type, n_kv_head: int | None, info: ValidationInfo) -> int | None:
    """Validator of ``n_kv_head`` for grouped-query attention: it must divide ``n_head``."""
    n_head = info.data.get("n_head")
    if n_kv_head is not None and n_head is not None and n_head % n_kv_head:
        divisors = ", ".join(str(d) for d in range(1, n_head + 1) if n_head % d == 0)
        raise ValueError(
            f"must divide n_head ({n_head}): each key/value head serves n_head / n_kv_head query heads; "
            f"use one of {divisors}"
        )
    return n_kv_head


def swiglu_width(n_embd: int, intermediate_size: int | None) -> int:
    """The hidden width of a SwiGLU MLP: ``intermediate_size``, or Llama's 8/3 ``n_embd`` rounded up to 64."""
    return intermediate_size or 64 * math.ceil(8 * n_embd / 3 / 64)


class RotaryEmbedding(nn.Module):
    """Cosines and sines of rotary position embeddings (RoFormer) for positions 0..context_length-1.

    Layout of Hugging Face Llama: the frequencies ``theta^(-2i/hs)`` repeated over the two halves of a head,
    to be used with :func:`apply_rotary`. Buffers only (not saved in the state dict).
    """

    def __init__(self, head_size: int, context_length: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float) / head_size))  # (hs/2,)
        angles = torch.outer(torch.arange(context_length, dtype=torch.float), inv_freq)  # (T_max, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T_max, hs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of positions ``start .. start + length - 1``, each (T, hs)."""
        return self.cos[start : start + length], self.sin[start : start + length]

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of each row's own (B, T) positions, each (B, 1, T, hs): they broadcast over the heads."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)

    def of(self, start: int, length: int, documents: DocumentMask | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of a forward: of the documents' restarted positions where they have them, else of
        ``start .. start + length - 1``."""
        if documents is not None and documents.positions is not None:
            return self.at(documents.positions)
        return self(start, length)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) queries or keys by their positions' angles; ``rotate_half`` convention."""
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (B, nh, T, hs/2)
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, nh, T, hs)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
