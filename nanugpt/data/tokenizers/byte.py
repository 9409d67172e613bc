"""``byte``: UTF-8 bytes as tokens 0..255, then special tokens."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from nanugpt.config.schema import TokenizerOptions


class ByteTokenizerOptions(TokenizerOptions):
    """UTF-8 bytes (ids 0-255) plus special tokens; accepts any input."""

    special_tokens: list[str] = Field(["<|endoftext|>"], description="special tokens, ids 256, 257, ...")

    def build(self, vocab: list[str] | None = None) -> ByteTokenizer:
        return ByteTokenizer(self.special_tokens)


class ByteTokenizer:
    """Any text, any bytes: decoding never fails (invalid UTF-8 becomes U+FFFD)."""

    name = "byte"

    def __init__(self, special_tokens: Sequence[str]):
        self.special_tokens = list(special_tokens)
        self.vocab_size = 256 + len(self.special_tokens)
        self.eot_id = 256 if self.special_tokens else None

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text``; special-token text is encoded as plain bytes."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text; special tokens by name; partial characters become U+FFFD."""
        out: list[str] = []
        run = bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run.clear()
            special = i - 256
            out.append(self.special_tokens[special] if 0 <= special < len(self.special_tokens) else "\ufffd")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def vocab(self) -> None:
        return None
