"""``arithmetic``: multi-digit multiplication problems ``a*b=c``. Batches and answers: ``nanugpt.data.tasks``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, field_validator, model_validator

from nanugpt.data.tasks import TaskDataOptions
from nanugpt.data.tokenizers.arithmetic import EOT


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
