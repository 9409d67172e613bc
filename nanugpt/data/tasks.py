"""The algorithmic tasks' shared base: data components whose examples are generated, not read from a corpus.

``grokking`` (``nanugpt.data.grokking``) and ``arithmetic`` (``nanugpt.data.arithmetic``) subclass
``TaskDataOptions``.

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
  ceil(val_rows / training.device_batch_size)`` (or ``null``) evaluates every
  example exactly once and the reported accuracy is over the whole split.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from nanugpt.config.schema import BatchShare, DataOptions, TokenizerOptions
from nanugpt.config.token_meta import TokenMeta, tokenizer_fields, write_meta
from nanugpt.data.tokenized import DataError, TokenFile
from nanugpt.errors import UserError
from nanugpt.files.atomic import atomic_path

IGNORE_INDEX = -100  # the target of every position that is not part of the answer
SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


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
        *,
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
        self.whole_split = self.runs  # val: the batches that cover the split once (``eval.eval_iters: null``)
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
    walks_val_split: ClassVar[bool] = True

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
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
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
        return ExampleBatches(
            examples, equals_id=meta.equals_id, pad_id=meta.pad_id, share=share, seed=seed, split=split
        )
