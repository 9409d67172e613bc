"""``arithmetic``: the vocabulary of the multiplication task, one token per character.

Ids ``0 .. 9`` are the digits themselves, then ``*``, ``=``, the end-of-text
token ``<|endoftext|>`` (closes every answer) and the padding token
``<|pad|>`` (fills fixed-width rows). Special tokens are written by name in
text, so ``decode`` and ``encode`` round-trip: ``"12*34=408<|endoftext|>"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nanugpt.config.schema import TokenizerOptions

EOT = "<|endoftext|>"
PAD = "<|pad|>"
TOKENS: tuple[str, ...] = (*"0123456789", "*", "=", EOT, PAD)
_PIECES = re.compile(f"{re.escape(EOT)}|{re.escape(PAD)}|.", re.DOTALL)


class ArithmeticTokenizerOptions(TokenizerOptions):
    """Digits, '*', '=', end-of-text and padding: the multiplication task's 14 tokens."""

    def build(self, vocab: list[str] | None = None) -> ArithmeticTokenizer:
        return ArithmeticTokenizer()


class ArithmeticTokenizer:
    """One id per digit or operator character, plus the special tokens by name."""

    name = "arithmetic"
    vocab_size = len(TOKENS)
    eot_id = TOKENS.index(EOT)
    pad_id = TOKENS.index(PAD)
    equals_id = TOKENS.index("=")

    def __init__(self) -> None:
        self._index = {token: i for i, token in enumerate(TOKENS)}

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; a character outside the vocabulary is an error naming it."""
        try:
            return [self._index[piece] for piece in _PIECES.findall(text)]
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not an arithmetic token (digits, '*', '=', {EOT}, {PAD})") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Characters and special-token names; an id outside the vocabulary becomes U+FFFD."""
        return "".join(TOKENS[i] if 0 <= i < self.vocab_size else "\ufffd" for i in ids)

    def vocab(self) -> list[str]:
        """Every token by id (saved in meta.json so the token files are self-describing)."""
        return list(TOKENS)
