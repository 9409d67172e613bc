"""Sampling text from a trained model with a key/value cache."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from nanugpt.config.schema import GenerateParams
from nanugpt.distributed.device import available_bytes
from nanugpt.errors import UserError
from nanugpt.models.base import DecoderMixin
from nanugpt.ops.decode_head import head_logits


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


def nucleus(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Set the logits outside the top-p nucleus to -inf (None or 1: keep all); (B, V) -> (B, V). The nucleus
    is the most likely tokens whose probabilities, summed in order, first reach ``top_p``."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # keep the token that crosses top_p
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def next_token(logits: torch.Tensor, opts: GenerateParams, generator: torch.Generator) -> torch.Tensor:
    """The next token ids (B, 1) for logits (B, V): the most likely with ``temperature`` 0, else a draw from the
    softmax at ``temperature`` among the ``top_k`` most likely and then the ``top_p`` nucleus of those.

    The draw is the exponential race: the argmax of p / E over the candidates, with E independent standard
    exponentials, picks each with probability p. It costs a few elementwise passes, where
    ``torch.multinomial`` over a whole vocabulary is much slower on CPU."""
    if opts.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / opts.temperature
    candidates = None
    if opts.top_k is not None and opts.top_k < logits.size(-1):
        logits, candidates = torch.topk(logits, opts.top_k, dim=-1)  # (B, k) each, the most likely first
    probs = nucleus(logits, opts.top_p).softmax(dim=-1)
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
    choice = (probs / race).argmax(dim=-1, keepdim=True)  # (B, 1); a clamped E keeps p = 0 from becoming 0 / 0
    return choice if candidates is None else candidates.gather(-1, choice)


# What a generated token costs per sample, besides the model: its id in the (B, T) tensor (8 bytes) and as a
# Python int in the returned lists (about 36); per step, the logits and their float copies over the vocabulary.
BYTES_PER_TOKEN = 48
BYTES_PER_LOGIT = 16


def check_fits(opts: GenerateParams, prompt_tokens: int, vocab_size: int, available: int | None) -> None:
    """Refuse ``opts.num_samples`` x (prompt + ``opts.max_new_tokens``) tokens that cannot fit in ``available``
    bytes, before anything is allocated (None: unknown, not checked)."""
    tokens = opts.num_samples * (prompt_tokens + opts.max_new_tokens)
    needed = tokens * BYTES_PER_TOKEN + opts.num_samples * vocab_size * BYTES_PER_LOGIT
    if available is not None and needed > available:
        raise GenerateError(
            f"generate.num_samples x (prompt + generate.max_new_tokens) = {opts.num_samples:,} x "
            f"({prompt_tokens:,} + {opts.max_new_tokens:,}) tokens need about {needed / 1e9:,.1f} GB, "
            f"{available / 1e9:,.1f} GB are available: lower generate.num_samples or generate.max_new_tokens"
        )


@torch.no_grad()
def sample(
    model: torch.nn.Module, prompt_ids: list[int], opts: GenerateParams, vocab_size: int, device: torch.device
) -> list[list[int]]:
    """``opts.num_samples`` continuations of ``prompt_ids``, each ``opts.max_new_tokens`` long.

    A decoder (``DecoderMixin``) is run incrementally with a KV cache, its head only on the last position,
    with ``head_logits``' kernel for the device; once the context is full, the window slides (the last
    ``context_length`` tokens are re-encoded). Other models re-read the whole window for each token.
    The same ``opts.seed`` gives the same samples. Sampling that cannot fit in memory is refused before it
    starts (``check_fits``); a progress bar counts the tokens on a terminal.
    """
    if not prompt_ids:
        raise GenerateError("generate.prompt encodes to no tokens; give a non-empty prompt")
    check_fits(opts, len(prompt_ids), vocab_size, available_bytes(device))
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    context = model.context_length
    idx = torch.tensor([prompt_ids] * opts.num_samples, dtype=torch.long, device=device)  # (B, T)
    decoder = isinstance(model, DecoderMixin)
    cache = None
    for _ in tqdm(range(opts.max_new_tokens), desc="generate", unit="tok", disable=None, leave=False):
        if not decoder:
            logits = model(idx[:, -context:])[:, -1]
        else:
            if cache is None or cache.length >= context:
                cache = model.new_cache()
                window = idx[:, -context:]
            else:
                window = idx[:, -1:]
            logits = head_logits(model(window, cache, hidden_only=True)[:, -1], *model.linear_head())
        next_id = next_token(logits[:, :vocab_size].float(), opts, generator)  # padded ids are never sampled
        idx = torch.cat([idx, next_id], dim=1)
    return idx[:, len(prompt_ids) :].tolist()
