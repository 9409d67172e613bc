"""``hf_dataset``: train on a Hugging Face ``datasets`` corpus tokenized on the fly (corpora not worth pre-tokenizing).

The documents of a split are read in order (``streaming: true`` reads them
over the network or from local files without a full download), tokenized,
joined with the end-of-text token, and cut into consecutive rows of
``context_length + 1`` tokens. Row ``r`` of the split is therefore a fixed
piece of the token stream, and batches are addressed by row number like the
other data components: the global batch of ``step`` is rows
``[step * global_rows, (step + 1) * global_rows)``, and each process takes its
own micro-batches of it. A resumed run (or a later evaluation) re-reads the
stream from the start up to its row: cheap next to training, and exact.

The tokenize stage only checks that the dataset opens and writes
``meta.json`` (tokenizer, vocabulary); no token files are written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from nanugpt.components import BatchShare, DataOptions, TokenizerOptions
from nanugpt.errors import UserError
from nanugpt.meta import TokenMeta, tokenizer_fields, write_meta
from nanugpt.tokenizers import Tokenizer, tokenizer_from_meta


class HFDatasetOptions(DataOptions):
    """A Hugging Face dataset streamed and tokenized during training (no token files)."""

    name: str = Field(description="dataset name on the hub, or a builder such as 'text' / 'json' for local files")
    config: str | None = Field(None, description="dataset configuration name")
    split: str = Field("train", description="training split")
    val_split: str = Field("validation", description="split used for evaluation")
    text_field: str = Field("text", description="column holding the text")
    data_files: dict[str, list[str]] | None = Field(None, description="local files per split, for 'text' / 'json'")
    streaming: bool = Field(True, description="read documents as a stream instead of downloading the split first")

    def open(self, split: str) -> Callable[[], Iterator[str]]:
        """A function that starts the split's documents from the beginning, each call."""
        try:
            import datasets
        except ImportError:
            raise UserError("data.module hf_dataset needs the datasets package: pip install 'nanugpt[hf]'") from None
        try:
            dataset = datasets.load_dataset(
                self.name, self.config, split=split, data_files=self.data_files, streaming=self.streaming
            )
        except Exception as exc:  # datasets raises many types: missing, offline, bad split
            raise UserError(
                f"data.name {self.name!r}: cannot open split {split!r} ({type(exc).__name__}: {exc})"
            ) from None
        field = self.text_field

        def documents() -> Iterator[str]:
            for example in dataset:
                if field not in example:
                    raise UserError(f"data.text_field {field!r} is not a column of {self.name} ({sorted(example)})")
                yield example[field]

        return documents

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        codec = tokenizer.build()
        for split in (self.split, self.val_split):
            next(self.open(split)(), None)  # fail now, not in the middle of training, if a split does not open
        meta = TokenMeta(
            **tokenizer_fields(tokenizer, codec),
            dtype="streamed",
            source=f"hf:{self.name}",
            train_tokens=0,
            val_tokens=0,
            streamed=True,
        )
        write_meta(out_dir, meta)
        return meta

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, context_length: int, share: BatchShare, seed: int
    ) -> StreamBatches:
        name = self.split if split == "train" else self.val_split
        return StreamBatches(self.open(name), tokenizer_from_meta(meta), context_length, share)


class StreamBatches:
    """Consecutive rows of ``context_length + 1`` tokens of a document stream, addressed by step."""

    def __init__(
        self, documents: Callable[[], Iterator[str]], tokenizer: Tokenizer, context_length: int, share: BatchShare
    ):
        if tokenizer.eot_id is None:
            raise UserError("data.module hf_dataset needs a tokenizer with an end-of-text token (byte, tiktoken, hf)")
        self.documents, self.tokenizer = documents, tokenizer
        self.width = context_length + 1
        self.share = share
        self._restart()

    def _restart(self) -> None:
        self._stream = self.documents()
        self._buffer: list[int] = []
        self._next_row = 0  # the row number of the first full row in the buffer

    def _row(self, index: int) -> list[int]:
        if index < self._next_row:  # behind the stream (a new evaluation round): read it again from the start
            self._restart()
        while True:
            skip = (index - self._next_row) * self.width
            if len(self._buffer) >= skip + self.width:
                del self._buffer[:skip]
                self._next_row = index
                return self._buffer[: self.width]
            document = next(self._stream, None)
            if document is None:
                raise UserError(f"the dataset stream ended before row {index}: train fewer steps or on more data")
            self._buffer += [*self.tokenizer.encode(document), self.tokenizer.eot_id]

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (rows, context_length) of this process's ``micro_step`` of global batch ``step``."""
        first = step * self.share.global_rows + self.share.first_row(micro_step)
        rows = range(first, first + self.share.rows)
        batch = torch.from_numpy(np.array([self._row(r) for r in rows], dtype=np.int64))
        return batch[:, :-1], batch[:, 1:]
