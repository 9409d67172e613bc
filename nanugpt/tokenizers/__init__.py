"""Tokenizers: text <-> token ids. Each module holds one tokenizer and its options.

Every tokenizer has ``name``, ``vocab_size``, ``eot_id`` (end-of-text id or
None), ``encode(text) -> list[int]``, ``decode(ids) -> str`` and
``vocab() -> list[str] | None`` (the vocabulary to save beside the tokens
when it was fitted on the corpus, else None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Tokenizer(Protocol):
    """What the tokenize stage, the data loader and generation need of a tokenizer."""

    name: str
    vocab_size: int
    eot_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def vocab(self) -> list[str] | None: ...


def tokenizer_from_meta(meta: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer that wrote a ``meta.json`` (options and any fitted vocabulary)."""
    from nanugpt import registry

    options = meta["tokenizer"]
    cls = registry.resolve("tokenizer", options["module"])
    return cls.model_validate(options).build(vocab=meta.get("vocab"))
