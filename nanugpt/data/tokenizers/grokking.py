"""``grokking``: the vocabulary of the modular-arithmetic tasks ``a op b = c (mod p)``.

Ids ``0 .. p-1`` are the residues themselves (id ``n`` is the number ``n``),
then ``=``, then one token per operator. Text is tokens separated by white
space, e.g. ``"3 + 5 = 8"`` or ``"3 x^2+y^2 5 = 34"``: the four basic
operations are written ``+ - * /``, the polynomial ones as their formula, one
token each.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from nanugpt.config.schema import TokenizerOptions

EQUALS = "="
OPERATOR_TOKENS: tuple[str, ...] = (
    "+",
    "-",
    "*",
    "/",
    "x^2+y^2",
    "x^2+xy+y^2",
    "x^2+xy+y^2+x",
    "x^3+xy",
    "x^3+xy^2+x",
    "(x//y)if(y%2==1)else(x-y)",  # last, so the ids of the others stay as they were
)


class GrokkingTokenizerOptions(TokenizerOptions):
    """Residues 0..prime-1, '=' and the operators of the grokking tasks; must match data.prime."""

    prime: int = Field(97, ge=2, description="the modulus p: residues 0..p-1 are tokens (same as data.prime)")

    def build(self, vocab: list[str] | None = None) -> GrokkingTokenizer:
        return GrokkingTokenizer(self.prime)


class GrokkingTokenizer:
    """White-space separated tokens; every token of the vocabulary has one id."""

    name = "grokking"
    eot_id = None
    pad_id = None  # every example has the same length

    def __init__(self, prime: int):
        self.prime = prime
        self.tokens = [str(n) for n in range(prime)] + [EQUALS, *OPERATOR_TOKENS]
        self.vocab_size = len(self.tokens)
        self._index = {token: i for i, token in enumerate(self.tokens)}
        self.equals_id = self._index[EQUALS]

    def operator_id(self, symbol: str) -> int:
        """The id of an operator token such as ``"+"`` or ``"x^3+xy"``."""
        return self._index[symbol]

    def encode(self, text: str) -> list[int]:
        """Ids of the white-space separated tokens of ``text``; an unknown token is an error naming it."""
        try:
            return [self._index[token] for token in text.split()]
        except KeyError as exc:
            raise ValueError(
                f"{exc.args[0]!r} is not a grokking token (residues 0..{self.prime - 1}, '=', "
                f"operators {' '.join(OPERATOR_TOKENS)}; separate tokens by spaces)"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Tokens joined by single spaces; an id outside the vocabulary becomes U+FFFD."""
        return " ".join(self.tokens[i] if 0 <= i < self.vocab_size else "\ufffd" for i in ids)

    def vocab(self) -> list[str]:
        """Every token by id (saved in meta.json so the token files are self-describing)."""
        return list(self.tokens)
