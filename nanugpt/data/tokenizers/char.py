"""``char``: one token per character, vocabulary fitted on the corpus (nanoGPT's shakespeare_char)."""

from __future__ import annotations

from collections.abc import Sequence

from nanugpt.config.schema import TokenizerOptions


class CharTokenizerOptions(TokenizerOptions):
    """One id per character; the vocabulary is fitted on the corpus and saved in meta.json."""

    def build(self, vocab: list[str] | None = None) -> CharTokenizer:
        return CharTokenizer(vocab or [])


class CharTokenizer:
    """Ids are positions in the sorted character set of the training corpus."""

    name = "char"
    eot_id = None

    def __init__(self, chars: Sequence[str]):
        self.chars = sorted(set(chars))
        self.vocab_size = len(self.chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, chars: set[str]) -> CharTokenizer:
        """A tokenizer over the given character set."""
        return cls(sorted(chars))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; a character outside the fitted vocabulary is an error naming it."""
        try:
            return [self._index[c] for c in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the char vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] if 0 <= i < self.vocab_size else "\ufffd" for i in ids)

    def vocab(self) -> list[str]:
        return list(self.chars)
