"""Algorithmic tasks as data components: ``grokking`` (``a op b = c`` mod a prime) and ``arithmetic``
(multi-digit multiplication).

Grokking takes every pair ``(a, b)`` up to ``p = 10,007`` (about 10^8 pairs);
above it (nanuGPT's ``prime50k``: 50,021^2 = 2.5 * 10^9 pairs) it draws
``data.sampled_examples`` distinct pairs instead, and never builds the table
(see ``GrokkingDataOptions``).

The tokenize stage generates every example of the task as text, encodes it
with the task's tokenizer (``tokenizer.module`` of the same name) and writes
each split as fixed-width rows of ``row_length`` tokens (``train.bin``,
``val.bin``; dtype, row length and counts in ``meta.json``), padded with the
pad token where examples differ in length. The split depends on
``data.split_seed`` alone: it is the same on every rank, in every run and for
every ``general.seed``.

A batch holds whole examples: inputs are ``row[:-1]``, targets are ``row[1:]``
with every position set to ``IGNORE_INDEX`` except the answer, i.e. the
tokens after ``=`` that are not padding (grokking: ``c``; arithmetic: the
digits of the product and the end-of-text token that closes it).

- train: the examples of step ``s`` are drawn, with replacement, from a
  generator seeded by ``(general.seed, split, s)``; process ``rank`` of
  ``world_size`` takes micro-batches ``rank, rank + world_size, ...`` of the
  global batch (its ``BatchShare``), as ``nanugpt.data.tokenized.BatchSource`` does. A pure function of its
  arguments, so resumed and distributed runs see the same examples.
- val (any split but train): micro-batch ``k`` (counted over steps,
  micro-steps and ranks) is the ``k``-th run of ``rows`` examples in split
  order, the last run shorter, wrapping around; so ``eval.eval_iters =
  ceil(val_rows / training.device_batch_size)`` evaluates every example
  exactly once and the reported accuracy is over the whole split.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from nanugpt.config.schema import BatchShare, DataOptions, Problem, TokenizerOptions
from nanugpt.config.token_meta import TokenMeta, tokenizer_fields, write_meta
from nanugpt.data.tokenized import DataError, TokenFile
from nanugpt.data.tokenizers.arithmetic import EOT
from nanugpt.data.tokenizers.grokking import GrokkingTokenizerOptions
from nanugpt.errors import UserError
from nanugpt.files.atomic import atomic_path

IGNORE_INDEX = -100  # the target of every position that is not part of the answer
SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

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


class TaskError(UserError):
    """Task options that do not fit together (data and tokenizer sections)."""


def answer_targets(batch: torch.Tensor, equals_id: int, pad_id: int | None) -> torch.Tensor:
    """Targets ``batch[:, 1:]`` of rows (B, L) with everything but the answer set to ``IGNORE_INDEX``.

    The answer is every token after the first ``=`` of its row that is not ``pad_id``.
    """
    targets = batch[:, 1:]  # (B, L-1): target j is row position j + 1
    answer = (batch == equals_id).cumsum(dim=1)[:, :-1] > 0  # an '=' at row position <= j
    if pad_id is not None:
        answer &= targets != pad_id
    return torch.where(answer, targets, IGNORE_INDEX)


class ExampleBatches:
    """Whole examples of one split as (inputs, targets) micro-batches, addressed by step (see the module doc)."""

    def __init__(
        self,
        examples: np.ndarray,
        equals_id: int,
        pad_id: int | None,
        share: BatchShare,
        seed: int,
        split: str,
    ):
        self.examples = examples  # (N, row_length)
        self.equals_id = equals_id
        self.pad_id = pad_id
        self.share = share
        self.seed = seed
        self.split_id = _SPLIT_IDS[split]
        self.sampled = split == "train"
        self.runs = math.ceil(len(examples) / share.rows)  # runs of ``rows`` examples in a walk through the split
        self._drawn_step: int | None = None
        self._drawn = np.zeros(0, dtype=np.int64)

    def indices(self, step: int, micro_step: int) -> np.ndarray:
        """Example numbers of this process's ``micro_step`` of step ``step``."""
        share = self.share
        if not self.sampled:
            run = (step * share.global_rows + share.first_row(micro_step)) // share.rows % self.runs
            return np.arange(run * share.rows, min((run + 1) * share.rows, len(self.examples)))
        if self._drawn_step != step:  # the global batch, the same on every rank, drawn once per step
            rng = np.random.default_rng([self.seed, self.split_id, step])
            self._drawn = rng.integers(0, len(self.examples), size=share.global_rows)
            self._drawn_step = step
        start = share.first_row(micro_step)
        return self._drawn[start : start + share.rows]

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, row_length - 1) and answer-only targets (B, row_length - 1), int64."""
        batch = torch.from_numpy(self.examples[self.indices(step, micro_step)].astype(np.int64))  # (B, L)
        return batch[:, :-1], answer_targets(batch, self.equals_id, self.pad_id)


class TaskDataOptions(DataOptions):
    """Generated examples of an algorithmic task, stored as fixed-width rows (see the module doc)."""

    tokenizer_module: ClassVar[str]

    split_seed: int = Field(0, ge=0, description="seed of the train/val split (independent of general.seed)")

    def examples(self) -> dict[str, list[str]]:
        """The text of every example of each split, in order."""
        raise NotImplementedError

    def row_length(self) -> int:
        """Tokens per row: the longest example."""
        raise NotImplementedError

    def describe(self) -> str:
        """A one-line description of the generated data (``source`` in meta.json)."""
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: TokenizerOptions) -> None:
        """Refuse a tokenizer that cannot write this task's examples."""
        if tokenizer.module != self.tokenizer_module:
            raise TaskError(
                f"data.module {self.module} needs tokenizer.module {self.tokenizer_module}, got {tokenizer.module!r}"
            )

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        """Generate the examples; write ``{train,val}.bin`` as rows of ``row_length()`` tokens and ``meta.json``."""
        # Imported here so that training, which only reads token files, does not depend on tokenizing code.
        from nanugpt.data.tokenize import token_dtype

        self.check_tokenizer(tokenizer)
        codec = tokenizer.build()
        texts = self.examples()
        length = self.row_length()
        dtype = token_dtype(codec.vocab_size)
        fill = codec.pad_id if codec.pad_id is not None else 0  # tasks without padding fill every row completely
        source = hashlib.sha256()  # of the examples as text, one per line, train then val
        counts: dict[str, Any] = {"source_bytes": 0}  # per split: rows, tokens, sha256
        for split in SPLITS:
            rows = np.full((len(texts[split]), length), fill, dtype=dtype.newbyteorder("<"))
            for i, text in enumerate(texts[split]):
                ids = codec.encode(text)
                rows[i, : len(ids)] = ids
            raw = rows.tobytes()
            with atomic_path(out_dir / f"{split}.bin") as tmp:
                tmp.write_bytes(raw)
            text_bytes = "".join(f"{text}\n" for text in texts[split]).encode("utf-8")
            source.update(text_bytes)
            counts["source_bytes"] += len(text_bytes)
            counts[f"{split}_rows"] = len(rows)
            counts[f"{split}_tokens"] = rows.size
            counts[f"{split}_sha256"] = hashlib.sha256(raw).hexdigest()
        meta = TokenMeta(
            **tokenizer_fields(tokenizer, codec),
            pad_id=codec.pad_id,
            equals_id=codec.equals_id,
            dtype=dtype.name,
            row_length=length,
            data=self.model_dump(mode="json"),
            source=self.describe(),
            source_sha256=source.hexdigest(),
            **counts,
        )
        write_meta(out_dir, meta)
        return meta

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, context_length: int, share: BatchShare, seed: int
    ) -> ExampleBatches | None:
        """Whole examples of ``split`` (see the module doc); refuses token files written for other options."""
        if meta.data != self.model_dump(mode="json") or meta.row_length is None or meta.equals_id is None:
            raise DataError(
                f"{data_dir}/meta.json was written for data {meta.data}, but params say data "
                f"{self.model_dump(mode='json')}; re-run the tokenize stage"
            )
        token_file = TokenFile(data_dir / f"{split}.bin", meta, split)
        if token_file.n_tokens == 0:
            return None
        length = meta.row_length
        if context_length < length - 1:
            raise DataError(
                f"model.context_length ({context_length}) is shorter than the {length - 1} input tokens of a "
                f"{self.module} example; set model.context_length to {length - 1}"
            )
        examples = token_file.tokens.reshape(-1, length)
        token_file.check_ids(examples)  # at most a few million tokens: checked whole, once
        return ExampleBatches(examples, meta.equals_id, meta.pad_id, share, seed, split)


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


class ArithmeticDataOptions(TaskDataOptions):
    """Multiplication problems ``a*b=c`` with up to ``digits`` digits per operand, sampled without repeats.

    With ``min_digits`` (nanuGPT's multi-length arithmetic), every operand length ``n`` from ``min_digits`` to
    ``digits`` has its own problems, both operands of exactly ``n`` digits, and an equal share of
    ``train_problems`` and ``val_problems`` (the longest lengths take the remainder).
    """

    tokenizer_module: ClassVar[str] = "arithmetic"

    digits: int = Field(3, ge=1, le=9, description="operands are uniform over 0 .. 10^digits - 1")
    min_digits: int | None = Field(
        None,
        ge=1,
        le=9,
        description="with it, every operand length from min_digits to digits in one dataset (both operands that "
        "long, an equal share of the problems each); null = one range, 0 .. 10^digits - 1",
    )
    train_problems: int = Field(100_000, gt=0, description="problems in the train split")
    val_problems: int = Field(1_000, description="problems in the val split (>= 1), none of them in train")
    reverse_answer: bool = Field(
        False, description="write the product least-significant digit first, which small models learn more easily"
    )

    @field_validator("val_problems")
    @classmethod
    def _val_not_empty(cls, value: int) -> int:
        if value < 1:
            raise ValueError("the validation split must not be empty: set it to 1 or more")
        return value

    @model_validator(mode="after")
    def _enough_problems(self) -> ArithmeticDataOptions:
        if self.min_digits is not None and self.min_digits > self.digits:
            raise ValueError(f"min_digits ({self.min_digits}) must be <= digits ({self.digits})")
        for n, (_, span), (n_train, n_val) in zip(self.lengths(), self.ranges(), self.shares()):
            if n_train + n_val <= span * span:
                continue
            if self.min_digits is None:
                raise ValueError(
                    f"train_problems + val_problems ({n_train + n_val}) exceeds the {span * span} distinct problems "
                    f"with {self.digits}-digit operands; lower them or raise digits"
                )
            raise ValueError(
                f"train_problems + val_problems give {n_train + n_val} problems with {n}-digit operands, more than "
                f"the {span * span} distinct ones; lower them or raise min_digits"
            )
        return self

    def lengths(self) -> list[int]:
        """The operand lengths: ``min_digits .. digits``, or ``[digits]`` for the one range."""
        return list(range(self.min_digits, self.digits + 1)) if self.min_digits is not None else [self.digits]

    def ranges(self) -> list[tuple[int, int]]:
        """``(lowest operand, count of operands)`` of each length: exactly n digits, or 0 .. 10^digits - 1."""
        if self.min_digits is None:
            return [(0, 10**self.digits)]
        return [(10 ** (n - 1), 9 * 10 ** (n - 1)) for n in self.lengths()]

    def shares(self) -> list[tuple[int, int]]:
        """``(train, val)`` problems of each length: equal shares, the remainder to the longest lengths."""
        k = len(self.lengths())

        def split(total: int) -> list[int]:
            return [total // k + (i >= k - total % k) for i in range(k)]

        return list(zip(split(self.train_problems), split(self.val_problems)))

    def operands(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``(a, b)`` of each split: distinct pairs of each length, drawn by a generator seeded by ``split_seed``."""
        rng = np.random.default_rng(self.split_seed)
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": []}
        for (low, span), (n_train, n_val) in zip(self.ranges(), self.shares()):
            drawn = rng.choice(span * span, size=n_train + n_val, replace=False)
            a, b = low + drawn // span, low + drawn % span
            parts["train"].append((a[:n_train], b[:n_train]))
            parts["val"].append((a[n_train:], b[n_train:]))
        return {split: tuple(np.concatenate(column) for column in zip(*pairs)) for split, pairs in parts.items()}

    def answer(self, a: int, b: int) -> str:
        """The product's digits as written in an example (reversed when ``reverse_answer``)."""
        product = str(a * b)
        return product[::-1] if self.reverse_answer else product

    def examples(self) -> dict[str, list[str]]:
        return {
            split: [f"{x}*{y}={self.answer(x, y)}{EOT}" for x, y in zip(a.tolist(), b.tolist())]
            for split, (a, b) in self.operands().items()
        }

    def row_length(self) -> int:
        return 4 * self.digits + 3  # digits, '*', digits, '=', 2 * digits, end-of-text

    def describe(self) -> str:
        order = ", answers reversed" if self.reverse_answer else ""
        if self.min_digits is not None:
            return f"arithmetic: multiplication of {self.min_digits}- to {self.digits}-digit numbers{order}"
        return f"arithmetic: multiplication of up to {self.digits}-digit numbers{order}"
