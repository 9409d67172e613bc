"""``hf``: a Hugging Face ``transformers`` tokenizer from a local folder or a hub name."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from nanugpt.config.schema import TokenizerOptions
from nanugpt.errors import UserError


class HFTokenizerOptions(TokenizerOptions):
    """A transformers AutoTokenizer from a local folder or hub name."""

    name_or_path: str = Field(description="local folder with tokenizer files, or a hub name such as 'gpt2'")

    def build(self, vocab: list[str] | None = None) -> HFTokenizer:
        return HFTokenizer(self.name_or_path)


class HFTokenizer:
    """Wraps ``transformers.AutoTokenizer``; no special tokens are added when encoding."""

    name = "hf"

    def __init__(self, name_or_path: str):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise UserError("tokenizer.module 'hf' needs the transformers package: pip install 'nanugpt[hf]'") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except OSError as exc:
            raise UserError(
                f"cannot load HF tokenizer {name_or_path!r}: {exc}. Offline, give a local folder that "
                "holds the tokenizer files."
            ) from None
        self.vocab_size = len(self.tokenizer)
        self.eot_id = self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def vocab(self) -> None:
        return None
