"""``hf_dataset``: train on a Hugging Face ``datasets`` corpus tokenized on the fly (corpora not worth pre-tokenizing).

Training. Each rank reads only its share of the split's documents
(``datasets.distributed.split_dataset_by_node``: whole shards per rank when the
number of shards is a multiple of the world size, else every world_size-th
document), passes them through a seeded shuffle buffer, tokenizes them, joins
them with the end-of-text token, and cuts its token stream into rows of
``context_length + 1`` tokens, each starting at the last token of the one
before (every token is a target once). A rank's micro-batches are its next
rows, taken in order: unlike token files, the batches of 1 and N ranks differ.

Shuffling. Each rank keeps ``shuffle_buffer`` documents and yields a random one
of them, refilling from the reader; draw ``k`` of epoch ``e`` on rank ``r`` is a
pure function of ``(general.seed, r, e, k)``, so the order is reproducible and
changes per epoch. When a rank's share runs out, its next epoch starts.
(``IterableDataset.shuffle`` is not used: its ``state_dict`` leaves the buffer
out, so a resumed run would refill it with other documents.)

Resume. The stream's state (``IterableDataset.state_dict()`` of the reader, the
buffer's documents, epoch and draw count, the tokens cut but not yet used) goes
into the checkpoint, one per rank (``batches_state`` gathers them), so a resumed
run continues where it stopped without reading the documents before (datasets
re-reads at most the current chunk of the current shard). It resumes on the
same number of ranks.

Validation. ``val_split`` when the dataset has one; with ``val_split: null``
the first ``val_documents`` documents of the training split (in stored order,
the same on every run) are held out, and training skips every document equal
to one of them. Validation rows are read once per process and kept: each
evaluation reads nothing again.

The tokenize stage only checks that the splits open and writes ``meta.json``
(tokenizer, vocabulary); no token files are written.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field

from nanugpt.config.protocols import Tokenizer
from nanugpt.config.schema import BatchShare, DataOptions, TokenizerOptions
from nanugpt.config.token_meta import TokenMeta, tokenizer_fields, write_meta
from nanugpt.data.sources import HF_PREFIX, corpus_files, files_digest
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import CheckpointError, UserError

if TYPE_CHECKING:
    from datasets import IterableDataset

SHUFFLE_BLOCK = 4096  # random draws generated at once


class HFDatasetOptions(DataOptions):
    """A Hugging Face dataset streamed and tokenized during training (no token files)."""

    name: str = Field(description="dataset name on the hub, or a builder such as 'text' / 'json' for local files")
    config: str | None = Field(None, description="dataset configuration name")
    split: str = Field("train", description="training split")
    val_split: str | None = Field(
        "validation",
        description="split used for evaluation; null holds out the first val_documents documents of the training "
        "split instead (for datasets without one, such as FineWeb)",
    )
    val_documents: int = Field(
        1000,
        gt=0,
        description="with val_split null: documents held out of the training split for evaluation, its first "
        "ones in stored order (the same on every run); training skips every document equal to one of them",
    )
    text_field: str = Field("text", description="column holding the text")
    data_files: dict[str, list[str]] | None = Field(None, description="local files per split, for 'text' / 'json'")
    revision: str | None = Field(
        None,
        description="the dataset's revision on the hub (a commit or tag), recorded in meta.json; null: what the hub "
        "serves that day (pin one for a reproducible stream)",
    )
    streaming: bool = Field(True, description="read documents as a stream instead of downloading the split first")
    shuffle_buffer: int = Field(
        1000,
        gt=0,
        description="documents in each rank's shuffle buffer, a seeded random one taken at a time (the order "
        "changes per epoch); 1 keeps the stored order",
    )

    def open(self, split: str, key: str) -> IterableDataset:
        """The documents of ``split`` (the value of params key ``key``) as an iterable dataset, from the start."""
        try:
            import datasets
        except ImportError:
            raise UserError("data.module hf_dataset needs the datasets package: pip install 'nanugpt[hf]'") from None
        try:
            dataset = datasets.load_dataset(
                self.name,
                self.config,
                split=split,
                data_files=self.data_files,
                streaming=self.streaming,
                revision=self.revision,
            )
        except Exception as exc:  # datasets raises many types: missing, offline, bad split
            fix = "; a dataset without one: set data.val_split: null to hold out data.val_documents"
            if key != "data.val_split":
                fix = ""
            raise UserError(
                f"{key} {split!r}: cannot open this split of {self.name} ({type(exc).__name__}: {exc}){fix}"
            ) from None
        if not self.streaming:
            dataset = dataset.to_iterable_dataset()
        if dataset.features is not None:  # known: read the text column only (parquet then decodes no other)
            if self.text_field not in dataset.features:
                raise UserError(
                    f"data.text_field {self.text_field!r} is not a column of {self.name} ({sorted(dataset.features)})"
                )
            dataset = dataset.select_columns([self.text_field])
        return dataset

    def corpus_files(self) -> list[Path]:
        """The local ``data_files`` (the source stage records their sha256, so an edit re-runs what reads them)."""
        return corpus_files(HF_PREFIX + self.name, self.data_files)

    def texts(self, dataset: IterableDataset) -> Iterator[str]:
        """The ``text_field`` of each document of ``dataset``."""
        field = self.text_field
        for example in dataset:
            if field not in example:
                raise UserError(f"data.text_field {field!r} is not a column of {self.name} ({sorted(example)})")
            yield example[field]

    def held_out(self) -> list[str]:
        """The documents held out for validation (``val_split: null``): the training split's first ones."""
        return list(self.texts(self.open(self.split, "data.split").take(self.val_documents)))

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        codec = tokenizer.build()
        splits = {"data.split": self.split, **({"data.val_split": self.val_split} if self.val_split else {})}
        for key, split in splits.items():  # fail now, not in the middle of training, if a split does not open
            if next(self.texts(self.open(split, key)), None) is None:
                raise UserError(f"{key} {split!r} of {self.name} has no documents")
        meta = TokenMeta(
            **tokenizer_fields(tokenizer, codec),
            dtype="streamed",
            source=f"hf:{self.name}",
            source_sha256=files_digest(self.corpus_files()),
            revision=self.revision,
            train_tokens=0,
            val_tokens=0,
            streamed=True,
        )
        write_meta(out_dir, meta)
        return meta

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> StreamBatches | FixedRows | None:
        tokenizer = tokenizer_from_meta(meta)
        if split == "train":
            from datasets.distributed import split_dataset_by_node

            skip = frozenset(map(digest, self.held_out())) if self.val_split is None else frozenset()
            reader = split_dataset_by_node(self.open(self.split, "data.split"), share.rank, share.world_size)
            where = f"rank {share.rank} of {share.world_size} in data.split {self.split!r} of {self.name}"
            documents = DocumentStream(
                reader, self.texts, buffer_size=self.shuffle_buffer, seed=seed, rank=share.rank, skip=skip, where=where
            )
            return StreamBatches(documents, tokenizer, context_length, share)
        if split != "val":
            return None  # no test split
        if self.val_split is None:
            shortage = f"data.val_documents: the {self.val_documents} held-out documents"
            return FixedRows(iter(self.held_out()), tokenizer, context_length, share, shortage)
        documents = self.texts(self.open(self.val_split, "data.val_split"))
        shortage = f"the documents of data.val_split {self.val_split!r}"
        return FixedRows(documents, tokenizer, context_length, share, shortage)


def digest(text: str) -> bytes:
    """A document's identity for holding it out: 16 bytes of BLAKE2b of its UTF-8 text."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class DocumentStream:
    """One rank's documents, endlessly, epoch after epoch, through a seeded shuffle buffer; resumable exactly.

    ``reader`` is this rank's share of the split (its ``state_dict()`` says how far it has read); ``texts``
    turns it into document texts; documents whose ``digest`` is in ``skip`` (held out) are passed over.
    """

    def __init__(
        self,
        reader: IterableDataset,
        texts: Callable[[IterableDataset], Iterator[str]],
        *,
        buffer_size: int,
        seed: int,
        rank: int,
        skip: frozenset[bytes],
        where: str,
    ):
        self.reader, self.texts, self.buffer_size = reader, texts, buffer_size
        self.seed, self.rank, self.skip, self.where = seed, rank, skip, where
        self._texts: Iterator[str] | None = None  # opened at the first read, from the reader's state
        self.buffer: list[str] = []
        self.epoch = 0
        self.draws = 0  # random draws made this epoch
        self.position = 0  # documents read over the run, resumed ones included
        self.read_here = 0  # documents this process read: what resuming cost (not restored)
        self._block: tuple[tuple[int, int], np.ndarray] | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def _read(self) -> str | None:
        """The reader's next document that is not held out; None at the end of this rank's share."""
        if self._texts is None:
            self._texts = self.texts(self.reader)
        for text in self._texts:
            self.position += 1
            self.read_here += 1
            if not self.skip or digest(text) not in self.skip:
                return text
        return None

    def _fill(self) -> None:
        while len(self.buffer) < self.buffer_size and (text := self._read()) is not None:
            self.buffer.append(text)

    def _draw(self, n: int) -> int:
        """A random index below ``n``: draw ``draws`` of this epoch, a pure function of (seed, rank, epoch, draws)."""
        block, offset = divmod(self.draws, SHUFFLE_BLOCK)
        if self._block is None or self._block[0] != (self.epoch, block):
            rng = np.random.default_rng([self.seed, self.rank, self.epoch, block])
            self._block = ((self.epoch, block), rng.integers(0, 1 << 62, size=SHUFFLE_BLOCK))
        self.draws += 1
        return int(self._block[1][offset]) % n

    def __next__(self) -> str:
        self._fill()
        if not self.buffer:  # this rank's share is read and drawn: the next epoch starts
            self.epoch, self.draws = self.epoch + 1, 0
            self.reader.set_epoch(self.epoch)  # a reader in another epoch than its loaded state starts afresh
            self._texts = None
            self._fill()
            if not self.buffer:
                raise UserError(
                    f"{self.where}: no documents to train on (fewer documents than ranks, or all held out by "
                    "data.val_documents): use more data, fewer ranks, or fewer data.val_documents"
                )
        index = self._draw(len(self.buffer))
        self.buffer[index], self.buffer[-1] = self.buffer[-1], self.buffer[index]
        return self.buffer.pop()

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is: the reader's state, the buffer's documents, epoch and draws (plain values)."""
        return {
            "reader": copy.deepcopy(self.reader.state_dict()),
            "buffer": list(self.buffer),
            "epoch": self.epoch,
            "draws": self.draws,
            "position": self.position,
            "read_here": self.read_here,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``: the next document is the one that stream would have given."""
        self.reader.set_epoch(state["epoch"])
        self.reader.load_state_dict(copy.deepcopy(state["reader"]))
        self._texts = None
        self.buffer = list(state["buffer"])
        self.epoch, self.draws, self.position = state["epoch"], state["draws"], state["position"]


class RowCutter:
    """Rows of ``context_length + 1`` tokens cut from documents, each document followed by the end-of-text token;
    a row starts at the last token of the one before, so every token is a target once."""

    def __init__(self, documents: Iterator[str], tokenizer: Tokenizer, context_length: int):
        if tokenizer.eot_id is None:
            raise UserError("data.module hf_dataset needs a tokenizer with an end-of-text token (byte, tiktoken, hf)")
        self.documents, self.tokenizer, self.context_length = documents, tokenizer, context_length
        self.pending = np.zeros(0, dtype=np.int64)  # tokens cut from documents, not yet in a row (but its first)
        self.documents_read = 0

    def row(self) -> np.ndarray | None:
        """The next row (int64), or None when the documents end first."""
        width = self.context_length + 1
        while len(self.pending) < width:
            document = next(self.documents, None)
            if document is None:
                return None
            self.documents_read += 1
            ids = np.array([*self.tokenizer.encode(document), self.tokenizer.eot_id], dtype=np.int64)
            self.pending = np.concatenate([self.pending, ids])
        row, self.pending = self.pending[:width], self.pending[self.context_length :]
        return row


class StreamBatches:
    """This rank's training micro-batches: the next rows of its document stream, asked for in order."""

    def __init__(self, documents: DocumentStream, tokenizer: Tokenizer, context_length: int, share: BatchShare):
        self.documents, self.share = documents, share
        self.cutter = RowCutter(documents, tokenizer, context_length)
        self.next = (0, 0)  # the (step, micro_step) whose rows come next

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (rows, context_length) of this process's ``micro_step`` of step ``step``: the next
        rows of the stream, so steps come in order (a resumed run continues from the checkpoint's state)."""
        if (step, micro_step) != self.next:
            raise RuntimeError(f"a stream gives micro-batches in order: {self.next} is next, not {(step, micro_step)}")
        rows = [self.cutter.row() for _ in range(self.share.rows)]
        micro_step += 1
        self.next = (step, micro_step) if micro_step < self.share.micro_steps else (step + 1, 0)
        batch = torch.from_numpy(np.stack(rows))  # type: ignore[arg-type]  (an endless stream gives every row)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        """The stream's state and the tokens cut but unused: a resumed run gives the same next rows."""
        return {
            "documents": self.documents.state_dict(),
            "pending": torch.from_numpy(self.cutter.pending.copy()),
            "next": list(self.next),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``."""
        self.documents.load_state_dict(state["documents"])
        self.cutter.pending = state["pending"].numpy().astype(np.int64)
        self.next = (int(state["next"][0]), int(state["next"][1]))


class FixedRows:
    """Evaluation batches of a fixed set of documents, cut once and kept: batch ``i`` is the same on every call,
    and calling again reads nothing. ``shortage`` names the documents in the error when they run out."""

    def __init__(
        self, documents: Iterator[str], tokenizer: Tokenizer, context_length: int, share: BatchShare, shortage: str
    ):
        self.cutter = RowCutter(documents, tokenizer, context_length)
        self.share, self.shortage = share, shortage
        self.rows: list[np.ndarray] = []

    @property
    def documents_read(self) -> int:
        """Documents read so far by this process."""
        return self.cutter.documents_read

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (rows, context_length) of ``micro_step`` of evaluation batch ``step``."""
        first = step * self.share.global_rows + self.share.first_row(micro_step)
        while len(self.rows) < first + self.share.rows:
            row = self.cutter.row()
            if row is None:
                raise UserError(
                    f"{self.shortage} give {len(self.rows)} rows of {self.cutter.context_length + 1} tokens; "
                    f"evaluation needs {first + self.share.rows}: lower eval.eval_iters or use more documents"
                )
            self.rows.append(row)
        batch = torch.from_numpy(np.stack(self.rows[first : first + self.share.rows]))
        return batch[:, :-1], batch[:, 1:]


def skip_batches(batches: object, data_steps: range, micro_steps: int) -> None:
    """Draw and drop the micro-batches of ``data_steps`` from train batches that keep a state (a stream, which gives
    its batches in order), so that the next one is the step after them; batches addressed by step need nothing."""
    if getattr(batches, "state_dict", None) is None:
        return
    for data_step in data_steps:
        for micro in range(micro_steps):
            batches.micro_batch(data_step, micro)  # type: ignore[attr-defined]


def batches_state(batches: object, info: DistInfo) -> dict[str, Any]:
    """``{"stream_by_rank": [rank 0's state, rank 1's, ...]}`` of train batches that keep a state (a stream's
    position), gathered from every rank, so that rank 0's checkpoint holds them all (every rank calls it); ``{}``
    for batches addressed by step alone."""
    state_dict = getattr(batches, "state_dict", None)
    if state_dict is None:
        return {}
    state = state_dict()
    if info.world_size == 1:
        return {"stream_by_rank": [state]}
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return {"stream_by_rank": gathered}


def load_batches_state(batches: object, saved: dict[str, Any], info: DistInfo) -> None:
    """Give each rank's train batches its own state of ``batches_state()``'s ``saved``."""
    load_state_dict = getattr(batches, "load_state_dict", None)
    if load_state_dict is None:
        return
    ranks = saved.get("stream_by_rank")
    if ranks is None:
        raise CheckpointError(
            "the checkpoint has no stream position (saved by an older version): start over with training.resume: never"
        )
    if len(ranks) != info.world_size:
        raise CheckpointError(
            f"the checkpoint's stream positions are of {len(ranks)} ranks, this run has {info.world_size}: resume a "
            f"data.module hf_dataset run on {len(ranks)} ranks, or start over with training.resume: never"
        )
    load_state_dict(ranks[info.rank])
