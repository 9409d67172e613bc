"""The tokenizer that wrote a ``meta.json``, rebuilt from the options and vocabulary it saved there."""

from __future__ import annotations

from nanugpt.config import registry
from nanugpt.config.protocols import Tokenizer
from nanugpt.config.token_meta import TokenMeta


def tokenizer_from_meta(meta: TokenMeta) -> Tokenizer:
    """Rebuild the tokenizer that wrote a ``meta.json`` (options and any fitted vocabulary)."""
    cls = registry.resolve("tokenizer", meta.tokenizer["module"])
    return cls.model_validate(meta.tokenizer).build(vocab=meta.vocab)
