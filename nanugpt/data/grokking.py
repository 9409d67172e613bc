"""``grokking``: ``a op b = c`` mod a prime, split at random into train and val (Power et al., 2022).

Grokking takes every pair ``(a, b)`` up to ``p = 10,007`` (about 10^8 pairs);
above it (nanuGPT's ``prime50k``: 50,021^2 = 2.5 * 10^9 pairs) it draws
``data.sampled_examples`` distinct pairs instead, and never builds the table
(see ``GrokkingDataOptions``). Batches and answers: ``nanugpt.data.tasks``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from nanugpt.config.schema import Problem, TokenizerOptions
from nanugpt.data.tasks import TaskDataOptions, TaskError
from nanugpt.data.tokenizers.grokking import GrokkingTokenizerOptions

Operation = Literal[
    "x+y",
    "x-y",
    "x*y",
    "x/y",
    "x^2+y^2",
    "x^2+xy+y^2",
    "x^2+xy+y^2+x",
    "x^3+xy",
    "x^3+xy^2+x",
    "(x//y)if(y%2==1)else(x-y)",
]
MAX_PRIME = 1_000_003  # the operations' terms fit int64 (above)
FULL_TABLE_PRIME = 10_007  # above it the p*p table would take gigabytes: data.sampled_examples is required
ODD_DIVIDE = "(x//y)if(y%2==1)else(x-y)"  # nanuGPT's: integer division by an odd y, difference otherwise
DIVISIONS = ("x/y", ODD_DIVIDE)  # operations that divide by y: b runs over 1..p-1


def _divide(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    """x * y^-1 (mod p); y^-1 = y^(p-2) by Fermat's little theorem (p prime, y != 0)."""
    inverse = np.array([pow(int(v), p - 2, p) for v in range(p)], dtype=np.int64)
    return x * inverse[y]


# operation -> (operator token, c before reduction mod p). Operands are < p <= MAX_PRIME, so no term overflows
# int64 (the largest, x^3 + xy^2 + x, stays below 2 p^3 + p < 2^63).
OPERATIONS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]]] = {
    "x+y": ("+", lambda x, y, p: x + y),
    "x-y": ("-", lambda x, y, p: x - y),
    "x*y": ("*", lambda x, y, p: x * y),
    "x/y": ("/", _divide),
    "x^2+y^2": ("x^2+y^2", lambda x, y, p: x**2 + y**2),
    "x^2+xy+y^2": ("x^2+xy+y^2", lambda x, y, p: x**2 + x * y + y**2),
    "x^2+xy+y^2+x": ("x^2+xy+y^2+x", lambda x, y, p: x**2 + x * y + y**2 + x),
    "x^3+xy": ("x^3+xy", lambda x, y, p: x**3 + x * y),
    "x^3+xy^2+x": ("x^3+xy^2+x", lambda x, y, p: x**3 + x * y**2 + x),
    ODD_DIVIDE: (ODD_DIVIDE, lambda x, y, p: np.where(y % 2 == 1, x // y, x - y)),
}


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def distinct_sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct integers of ``0 .. n-1`` in the order ``rng`` draws them (``k <= n / 2``), without building
    ``0 .. n-1``: draws with replacement, keeps each number's first draw, and draws again for the repeats. Holds
    O(k) numbers; with ``k <= n / 2`` at least half of each round's draws are new, so it takes few rounds."""
    drawn = np.zeros(0, dtype=np.int64)
    while len(drawn) < k:
        candidates = np.concatenate([drawn, rng.integers(0, n, size=k - len(drawn), dtype=np.int64)])
        _, first = np.unique(candidates, return_index=True)
        drawn = candidates[np.sort(first)]  # the earlier rounds' numbers keep their places
    return drawn


class GrokkingDataOptions(TaskDataOptions):
    """Every ``a op b = c (mod prime)``, or a sample of them, split at random into train and val (Power et al., 2022).

    With ``sampled_examples``, that many distinct pairs are drawn at random, for primes whose table is too large.

    Memory, for k examples (all p^2 pairs, or ``sampled_examples``): tokenizing holds each example as text and
    as Python numbers, about 190 bytes an example, and writes k rows of 5 tokens (10 bytes an example up to
    p = 65,521, uint16; 20 above). The whole table at p = 10,007 is 10^8 examples, about 19 GB while
    tokenizing, hence the sample above ``FULL_TABLE_PRIME``; drawing a sample holds O(k) numbers and never the
    p^2 table (``distinct_sample``). The division operations' inverse table holds p numbers.
    """

    tokenizer_module: ClassVar[str] = "grokking"

    prime: int = Field(
        97,
        ge=2,
        le=MAX_PRIME,
        description=f"the prime modulus p; examples are pairs 0 <= a, b < p (all of them up to p = "
        f"{FULL_TABLE_PRIME:,}, else data.sampled_examples of them)",
    )
    operation: Operation = Field(
        "x/y", description="c as a function of a (x) and b (y), mod p; x/y is x times y's inverse, with y != 0"
    )
    train_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the pairs (all, or the sample) in the train split; the rest is val"
    )
    sampled_examples: int | None = Field(
        None,
        gt=0,
        le=100_000_000,
        description="draw this many distinct pairs (a, b) at random (seeded by split_seed) instead of taking all "
        f"p*p; at most half of them; required above p = {FULL_TABLE_PRIME:,}; null = all pairs",
    )

    @field_validator("prime")
    @classmethod
    def _prime(cls, value: int) -> int:
        if not _is_prime(value):
            raise ValueError("must be a prime (division and the modular group need one)")
        return value

    @model_validator(mode="after")
    def _both_splits(self) -> GrokkingDataOptions:
        pairs, k = self.n_pairs(), self.sampled_examples
        if k is None and self.prime > FULL_TABLE_PRIME:
            raise ValueError(
                f"prime {self.prime} has {pairs:,} pairs, too many to take all (the limit is p = "
                f"{FULL_TABLE_PRIME:,}): set data.sampled_examples, e.g. 1000000, to draw that many at random"
            )
        if k is not None and k > pairs // 2:
            raise ValueError(
                f"sampled_examples ({k:,}) is more than half of the {pairs:,} pairs mod {self.prime}: "
                "set it to null to take them all, or lower it"
            )
        n = self.n_examples()
        n_train = self.n_train()
        if not 0 < n_train < n:
            raise ValueError(
                f"train_fraction {self.train_fraction} of the {n} examples leaves {n_train} for train and "
                f"{n - n_train} for val; both need at least one: pick a fraction between {1 / n:.4g} and "
                f"{1 - 1 / n:.4g}"
            )
        return self

    def check(self, params: Any) -> list[Problem]:
        """The grokking tokenizer must write numbers below the same prime."""
        tokenizer = params.tokenizer
        if isinstance(tokenizer, GrokkingTokenizerOptions) and tokenizer.prime != self.prime:
            return [("tokenizer.prime", f"must equal data.prime ({self.prime}), got {tokenizer.prime}")]
        return []

    def n_pairs(self) -> int:
        """All pairs (a, b): p * p, or p * (p - 1) for division (b != 0)."""
        return self.prime * (self.prime - (self.operation in DIVISIONS))

    def n_examples(self) -> int:
        """Examples of both splits: ``sampled_examples``, or all pairs."""
        return self.sampled_examples if self.sampled_examples is not None else self.n_pairs()

    def n_train(self) -> int:
        """Examples in the train split: ``floor(train_fraction * n_examples)``."""
        return int(self.train_fraction * self.n_examples())

    def equations(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, c)`` of the pairs numbered ``numbers`` (a-major then b, ``0 .. n_pairs() - 1``), with
        ``c = a op b mod p``."""
        p = self.prime
        first_b = 1 if self.operation in DIVISIONS else 0
        a, b = numbers // (p - first_b), first_b + numbers % (p - first_b)
        c = np.mod(OPERATIONS[self.operation][1](a, b, p), p)
        return a, b, c

    def split_order(self) -> dict[str, np.ndarray]:
        """Pair numbers (into ``equations()``) of each split, seeded by ``split_seed``: a permutation of all
        pairs, or ``sampled_examples`` distinct ones (``distinct_sample``); train first, the rest val."""
        rng = np.random.default_rng(self.split_seed)
        if self.sampled_examples is None:
            order = rng.permutation(self.n_pairs())
        else:
            order = distinct_sample(self.n_pairs(), self.sampled_examples, rng)
        return {"train": order[: self.n_train()], "val": order[self.n_train() :]}

    def examples(self) -> dict[str, list[str]]:
        symbol = OPERATIONS[self.operation][0]
        texts = {}
        for split, order in self.split_order().items():
            a, b, c = (column.tolist() for column in self.equations(order))
            texts[split] = [f"{x} {symbol} {y} = {z}" for x, y, z in zip(a, b, c)]
        return texts

    def row_length(self) -> int:
        return 5  # a op b = c

    def describe(self) -> str:
        if self.sampled_examples is not None:
            return f"grokking: {self.sampled_examples:,} random {self.operation} mod {self.prime}"
        return f"grokking: every {self.operation} mod {self.prime}"

    def check_tokenizer(self, tokenizer: TokenizerOptions) -> None:
        super().check_tokenizer(tokenizer)
        if isinstance(tokenizer, GrokkingTokenizerOptions) and tokenizer.prime != self.prime:
            raise TaskError(
                f"tokenizer.prime ({tokenizer.prime}) differs from data.prime ({self.prime}); "
                "set both to the same prime"
            )
