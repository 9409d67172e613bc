"""A tokenizer rebuilt from its saved options: those of a ``meta.json``, or those a tokenize worker is handed."""

from __future__ import annotations

from typing import Any

from nanugpt.config import registry
from nanugpt.config.protocols import Tokenizer
from nanugpt.config.token_meta import TokenMeta


def tokenizer_from_options(options: dict[str, Any], vocab: list[str] | None) -> Tokenizer:
    """The tokenizer of the plain ``options`` (its ``module`` and keys), with a fitted ``vocab`` where it has one."""
    cls = registry.resolve("tokenizer", options["module"])
    return cls.model_validate(options).build(vocab=vocab)


def tokenizer_from_meta(meta: TokenMeta) -> Tokenizer:
    """Rebuild the tokenizer that wrote a ``meta.json`` (options and any fitted vocabulary)."""
    return tokenizer_from_options(meta.tokenizer, meta.vocab)
