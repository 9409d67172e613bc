"""Sampling text from a trained model with a key/value cache."""

from __future__ import annotations

from pathlib import Path

import torch

from nanugpt.errors import UserError
from nanugpt.params import GenerateParams


class GenerateError(UserError):
    """A prompt that cannot be read or encoded."""


def read_prompt(prompt: str) -> str:
    """The prompt text; ``FILE:path`` reads it from a file."""
    if prompt.startswith("FILE:"):
        path = Path(prompt[len("FILE:") :]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise GenerateError(
                f"generate.prompt: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); FILE: takes a text file"
            ) from None
        except OSError as exc:
            raise GenerateError(
                f"generate.prompt: cannot read {path}: {exc.strerror}; FILE: takes a path to a text file"
            ) from None
    return prompt


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k and the top-p nucleus to -inf; (B, V) -> (B, V)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def sample(
    model: torch.nn.Module, prompt_ids: list[int], opts: GenerateParams, vocab_size: int, device: torch.device
) -> list[list[int]]:
    """``opts.num_samples`` continuations of ``prompt_ids``, each ``opts.max_new_tokens`` long.

    A model with ``new_cache()`` is run incrementally with a KV cache; once the
    context is full, the window slides (the last ``context_length`` tokens are
    re-encoded).
    The same ``opts.seed`` gives the same samples.
    """
    if not prompt_ids:
        raise GenerateError("generate.prompt encodes to no tokens; give a non-empty prompt")
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    context = model.context_length
    idx = torch.tensor([prompt_ids] * opts.num_samples, dtype=torch.long, device=device)  # (B, T)
    cached = hasattr(model, "new_cache")  # models without a KV cache re-read the whole window each token
    cache = None
    for _ in range(opts.max_new_tokens):
        if not cached:
            logits = model(idx[:, -context:])
        elif cache is None or cache.length >= context:
            cache = model.new_cache()
            logits = model(idx[:, -context:], cache)
        else:
            logits = model(idx[:, -1:], cache)
        logits = logits[:, -1, :vocab_size].float()  # (B, V): padded ids are never sampled
        if opts.temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = filter_logits(logits / opts.temperature, opts.top_k, opts.top_p).softmax(dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    return idx[:, len(prompt_ids) :].tolist()
