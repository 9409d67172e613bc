"""``tokenized``: batches of windows from the ``.bin`` token files of the tokenize stage.

Sampling is a pure function of ``(seed, split, step)``, and each process
takes its own slice of a step's global batch. So a resumed run sees exactly
the batches it would have seen, and one process or N processes train on the
same global batches. Two ways to pick the windows of the train split:

- ``random`` (nanoGPT's): every window start is drawn independently, from a
  generator seeded by ``(seed, split, step)``. After as many tokens as the
  file holds, about e^-1 = 37% of its tokens have never been a target.
- ``epochs``: the file is cut into non-overlapping windows whose targets
  cover every token once; each pass (epoch) takes them in a new shuffled
  order, with the cut moved by a random shift of under one window. No token
  is seen twice before every token was seen once.

Validation batches are always ``random``, so that runs with either sampling
are evaluated on the same batches. The dtype comes from ``meta.json``.

With ``packing: documents`` the windows hold whole documents instead
(``nanugpt.data.packing``): the split is cut once into windows of up to
``context_length + 1`` tokens at end-of-text ids, and ``random`` / ``epochs``
pick among those windows as above (``PackedBatchSource``); the model masks its
attention at the boundaries.

Token files are memory-mapped with ``MADV_RANDOM``: a batch touches a few
pages instead of faulting in megabytes of read-ahead.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nanugpt.config.protocols import DocumentPacking
from nanugpt.config.schema import BatchShare, DataOptions, Problem, TokenizerOptions
from nanugpt.config.token_meta import RETOKENIZE, DataError, TokenMeta
from nanugpt.data.packing import document_ends, eot_of, pack_windows
from nanugpt.errors import UserError
from nanugpt.files.hashing import sha256_file

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class HFSourceOptions(BaseModel):
    """Which Hugging Face dataset split and column to read when ``data.source`` is ``hf:<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str | None = Field(None, description="dataset configuration name")
    revision: str | None = Field(
        None,
        description="dataset revision on the hub: a commit sha or a tag, recorded in meta.json; null = the "
        "hub's main branch, whatever it holds that day",
    )
    split: str = Field("train", description="split whose documents are tokenized (val = its last val_fraction)")
    test_split: str | None = Field(
        "test", description="the dataset's own split tokenized into test.bin when it has one; null = never"
    )
    val_split: str | None = Field(
        None,
        description="the dataset's own split tokenized into val.bin (every document of split then trains, and "
        "data.val_fraction is not used); null = val is the last val_fraction of split",
    )
    text_field: str = Field("text", description="column holding the text")
    data_files: list[str] | dict[str, list[str]] | None = Field(
        None, description="local files for builders such as 'text' or 'json' (a list, or lists by split name)"
    )


class TokenizedDataOptions(DataOptions):
    """Random windows from the pre-tokenized .bin files of the tokenize stage."""

    numerics_neutral: ClassVar[tuple[str, ...]] = ("tokenize_workers", "verify", "sha256")
    not_in_tokens: ClassVar[tuple[str, ...]] = (
        "tokenize_workers",
        "verify",
        "sampling",
        "packing",
        "mask_first_target",
        "restart_positions",
    )

    source: str = Field(
        TINYSHAKESPEARE_URL,
        description="URL, text file, folder of .txt files, hf:<dataset> (Hugging Face datasets) or gen:<name> (a "
        "corpus the repository writes: gen:arithmetic)",
    )
    hf: HFSourceOptions = Field(HFSourceOptions(), description="split and column of an hf: source")
    sampling: Literal["random", "epochs"] = Field(
        "random",
        description="train windows: 'random' starts (nanoGPT's) or 'epochs', shuffled passes over "
        "non-overlapping windows (every token a target once per pass); val batches are always random",
    )
    packing: Literal["none", "documents"] = Field(
        "none",
        description="'none': windows cut anywhere in the token stream; 'documents': windows of whole documents "
        "(long ones split, short ones packed, the rest padded), attention masked at document boundaries; needs a "
        "tokenizer with an end-of-text id and a model that can mask (docs/packing.md)",
    )
    mask_first_target: bool = Field(
        False,
        description="with packing: documents, leave out of the loss each document's first token, the target "
        "predicted at the previous document's end-of-text",
    )
    restart_positions: bool = Field(
        True,
        description="with packing: documents, count each document's positions from 0 (learned or rotary "
        "embeddings); false = positions within the window",
    )
    sha256: str | None = Field(None, description="expected sha256 of a single-file source; null = not checked")
    val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of the corpus (its end) held out for val; 0 is refused, because "
        "training evaluates the val split (val loss, the best checkpoint) and would have none",
    )
    test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the corpus (its very end, after val's share) held out as test.bin, which the "
        "evaluate stage reports as test_loss / test_ppl; 0 = no test split (an hf dataset's own test split "
        "is used instead when it has one, see data.hf.test_split)",
    )
    tokenize_workers: int | None = Field(None, gt=0, description="processes for tokenizing; null = all cores")
    verify: Literal["sha256", "size"] = Field(
        "sha256",
        description="check token files against meta.json by sha256 (reads them once) or by size only; "
        "either way every batch is checked for token ids >= vocab_size",
    )

    @field_validator("val_fraction")
    @classmethod
    def _val_split_not_empty(cls, value: float) -> float:
        if value == 0:
            raise ValueError(
                "must be > 0: training evaluates the val split (val loss, best checkpoint), and 0 "
                "leaves it empty; use e.g. 0.1"
            )
        return value

    @model_validator(mode="after")
    def _train_split_not_empty(self) -> TokenizedDataOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction is {self.val_fraction + self.test_fraction:g}: it must be < 1, "
                "or nothing is left to train on"
            )
        return self

    @model_validator(mode="after")
    def _packing_keys_need_packing(self) -> TokenizedDataOptions:
        if self.packing == "none" and (self.mask_first_target or not self.restart_positions):
            raise ValueError(
                "mask_first_target and restart_positions apply to data.packing: documents only: set "
                "data.packing: documents, or leave them at their defaults (false, true)"
            )
        return self

    def check(self, params: Any) -> list[Problem]:
        ignore_index = getattr(params.loss, "ignore_index", -100)
        if self.packing == "documents" and ignore_index != -100:
            message = f"documents pads windows with targets of -100, but loss.ignore_index is {ignore_index}"
            return [("data.packing", message + ": set loss.ignore_index: -100")]
        return []

    def document_packing(self) -> DocumentPacking | None:
        """``PacksDocuments``: with ``packing: documents``, how the model must mask the windows' documents."""
        return DocumentPacking(restart_positions=self.restart_positions) if self.packing == "documents" else None

    def corpus_files(self) -> list[Path]:
        """The local files of ``source`` (a file, a folder's .txt files, an hf source's ``data_files``); none
        for a URL or a hub dataset (``nanugpt.data.sources.data_corpus_files``)."""
        from nanugpt.data.sources import corpus_files

        return corpus_files(self.source, self.hf.data_files)

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        # Imported here so that training, which only reads token files, does not depend on tokenizing code.
        from nanugpt.data.sources import HF_PREFIX, load_hf_documents, resolve_source
        from nanugpt.data.tokenize import tokenize_documents, tokenize_files

        if self.source.startswith(HF_PREFIX):
            hf = self.hf
            (batches, count), test, val = load_hf_documents(
                self.source,
                hf.split,
                hf.text_field,
                config=hf.config,
                data_files=hf.data_files,
                revision=hf.revision,
                test_split=hf.test_split,
                val_split=hf.val_split,
            )
            if test is not None and self.test_fraction > 0:
                raise UserError(
                    f"data.test_fraction is {self.test_fraction:g}, but {self.source} has its own "
                    f"{hf.test_split!r} split, which becomes test.bin: set data.test_fraction: 0, or "
                    "data.hf.test_split: null to hold out a share of the documents instead"
                )
            return tokenize_documents(
                batches,
                count,
                tokenizer,
                out_dir,
                self.val_fraction,
                workers=self.tokenize_workers,
                source=self.source,
                test_fraction=self.test_fraction,
                test_split=test,
                val_split=val,
                revision=hf.revision,
            )
        files = resolve_source(self.source, self.dataset, self.sha256, raw_dir)
        return tokenize_files(
            files,
            tokenizer,
            out_dir,
            self.val_fraction,
            workers=self.tokenize_workers,
            source=self.source,
            test_fraction=self.test_fraction,
        )

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> BatchSource | None:
        token_file = TokenFile(data_dir / f"{split}.bin", meta, split, verify_sha256=self.verify == "sha256")
        if token_file.n_tokens == 0:
            return None
        sampling = self.sampling if split == "train" else "random"
        if self.packing == "documents":
            return PackedBatchSource(
                token_file,
                context_length,
                share=share,
                seed=seed,
                split=split,
                sampling=sampling,
                eot_id=eot_of(meta, data_dir),
                mask_first_target=self.mask_first_target,
            )
        return BatchSource(token_file, context_length, share=share, seed=seed, split=split, sampling=sampling)


class TokenFile:
    """A read-only view of one ``.bin`` split of a checked ``meta.json`` (``read_meta`` compared the sizes),
    optionally verified by sha256."""

    def __init__(self, path: Path, meta: TokenMeta, split: str, verify_sha256: bool = False):
        self.path = path
        self.dtype = np.dtype(meta.dtype).newbyteorder("<")
        self.vocab_size = meta.vocab_size
        if not path.is_file():
            raise DataError(f"{path} not found: {RETOKENIZE}")
        expected_sha = meta.split_sha256(split)
        if verify_sha256 and expected_sha and sha256_file(path) != expected_sha:
            raise DataError(
                f"{path}: sha256 differs from meta.json: the file is corrupt or from another run; {RETOKENIZE}"
            )
        self.n_tokens = path.stat().st_size // self.dtype.itemsize
        if self.n_tokens == 0:
            self.tokens = np.zeros(0, dtype=self.dtype)
            return
        with open(path, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(self._mmap, "madvise"):
            self._mmap.madvise(mmap.MADV_RANDOM)
        self.tokens = np.frombuffer(self._mmap, dtype=self.dtype)

    def check_ids(self, ids: np.ndarray) -> None:
        """Refuse token ids outside the vocabulary (a corrupt file that ``verify: size`` does not read whole)."""
        if ids.size and (largest := int(ids.max())) >= self.vocab_size:
            raise DataError(
                f"{self.path}: token id {largest} is >= vocab_size {self.vocab_size} of meta.json: the "
                f"file is corrupt; {RETOKENIZE}, or set data.verify: sha256 to catch it before training"
            )

    def prefetch(self, offsets: np.ndarray, window: int) -> None:
        """Ask the kernel to read every window at once (a cold batch then waits for one round of reads, not one
        per window in turn)."""
        if self.n_tokens == 0 or not hasattr(self._mmap, "madvise"):
            return
        size = self.dtype.itemsize
        for offset in offsets:
            first = int(offset) * size // mmap.PAGESIZE * mmap.PAGESIZE
            last = (int(offset) + window) * size
            self._mmap.madvise(mmap.MADV_WILLNEED, first, last - first)


class BatchSource:
    """Windows of ``context_length + 1`` tokens, addressed by step, ``random`` or in ``epochs`` (module doc).

    ``share.global_rows`` rows are drawn per step; this process takes its ``share`` of them.
    """

    def __init__(
        self,
        token_file: TokenFile,
        context_length: int,
        *,
        share: BatchShare,
        seed: int,
        split: str,
        sampling: Literal["random", "epochs"] = "random",
    ):
        if token_file.n_tokens < context_length + 2:
            raise DataError(
                f"{token_file.path}: {token_file.n_tokens} tokens, fewer than model.context_length + 2 "
                f"({context_length + 2}); lower model.context_length or use a larger corpus"
            )
        self.file = token_file
        self.context_length = context_length
        self.share = share
        self.seed = seed
        self.split_id = _SPLIT_IDS[split]
        self._offsets_step: int | None = None
        self._offsets = np.zeros(0, dtype=np.int64)
        self._window = np.arange(context_length + 1)  # positions within a window, for one gather per batch
        self.sampling = sampling
        self.random_starts = token_file.n_tokens - context_length - 1  # random: windows start at 0 .. this - 1
        # epochs: windows start at shift + i * stride, i < windows_per_epoch, shift <= max_shift, so that
        # window i's targets are tokens shift + i * context_length + 1 ... + context_length
        self.stride = context_length
        self.windows_per_epoch = (token_file.n_tokens - 1) // context_length
        self.max_shift = token_file.n_tokens - 1 - self.windows_per_epoch * context_length
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}  # epoch: (shift, window order), the last two used

    def offsets(self, step: int) -> np.ndarray:
        """Start offsets of the whole global batch of ``step`` (same on every rank), computed once per step."""
        if self._offsets_step != step:
            if self.sampling == "epochs":
                self._offsets = self._epoch_offsets(step)
            else:
                rng = np.random.default_rng([self.seed, self.split_id, step])
                self._offsets = rng.integers(0, self.random_starts, size=self.share.global_rows)
            self._offsets_step = step
        return self._offsets

    def _epoch_offsets(self, step: int) -> np.ndarray:
        """Offsets of ``step``'s rows: window numbers ``step * global_rows ...`` of the concatenated epochs."""
        n = self.share.global_rows
        epochs, positions = np.divmod(step * n + np.arange(n), self.windows_per_epoch)
        offsets = np.empty(n, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():  # one, or two when the step straddles an epoch's end
            shift, order = self._epoch(epoch)
            rows = epochs == epoch
            offsets[rows] = shift + order[positions[rows]] * self.stride
        return offsets

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        """The shift and the shuffled window order of ``epoch``, from a generator seeded by (seed, split, epoch)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, self.split_id, epoch, 1])  # 4 numbers: not a random step's seed
            shift = int(rng.integers(0, self.max_shift + 1))
            self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = (shift, rng.permutation(self.windows_per_epoch))
        return self._epochs[epoch]

    def windows(self, offsets: np.ndarray) -> np.ndarray:
        """The token ids (rows, context_length + 1) of the windows that start at ``offsets``: read ahead in one
        round, gathered at once and checked against the vocabulary."""
        self.file.prefetch(offsets, self.context_length + 1)
        ids = self.file.tokens[offsets[:, None] + self._window]
        self.file.check_ids(ids)
        return ids

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (rows, context_length) int64, of this rank's ``micro_step``."""
        start = self.share.first_row(micro_step)
        ids = self.windows(self.offsets(step)[start : start + self.share.rows])
        batch = torch.from_numpy(ids.astype(np.int64))
        return batch[:, :-1], batch[:, 1:]


class PackedBatchSource(BatchSource):
    """Windows of whole documents (``nanugpt.data.packing``), picked ``random`` or in ``epochs`` by BatchSource.

    The split is packed once into windows of up to ``context_length + 1`` tokens; BatchSource's sampling then
    picks window numbers (``random``: each drawn independently; ``epochs``: a shuffled order per pass, no shift),
    deterministic per (seed, split, step) and sliced by rank as there. ``offsets(step)`` gives the picked windows'
    first tokens in the file. A window shorter than ``context_length + 1`` is padded with ``eot_id`` as input and
    ``IGNORE_INDEX`` as target; with ``mask_first_target`` the target after each end-of-text id (the next
    document's first token) is ``IGNORE_INDEX`` too. Windows of a single token (no target) are never picked.
    """

    IGNORE_INDEX = -100  # the loss's default ignore_index (TokenizedDataOptions.check refuses another)

    def __init__(
        self,
        token_file: TokenFile,
        context_length: int,
        *,
        share: BatchShare,
        seed: int,
        split: str,
        sampling: Literal["random", "epochs"] = "random",
        eot_id: int,
        mask_first_target: bool = False,
    ):
        super().__init__(token_file, context_length, share=share, seed=seed, split=split, sampling=sampling)
        self.eot_id = eot_id
        self.mask_first_target = mask_first_target

        def prefetch(start: int, count: int) -> None:
            token_file.prefetch(np.asarray([start]), count)

        ends = document_ends(token_file.tokens, eot_id, prefetch=prefetch)
        starts, stops = pack_windows(ends, token_file.n_tokens, context_length + 1)
        trained = stops - starts >= 2  # a window of one token has no target
        self.starts, self.lengths = starts[trained], (stops - starts)[trained]
        # BatchSource's sampling over window numbers instead of token offsets
        self.random_starts = self.windows_per_epoch = len(self.starts)
        self.stride, self.max_shift = 1, 0

    def offsets(self, step: int) -> np.ndarray:
        """The first token in the file of each window of the whole global batch of ``step``."""
        return self.starts[self.window_numbers(step)]

    def window_numbers(self, step: int) -> np.ndarray:
        """The packed windows (indexes into ``starts`` and ``lengths``) of the whole global batch of ``step``."""
        return super().offsets(step)

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (rows, context_length) int64, of this rank's ``micro_step``; padded (above)."""
        first = self.share.first_row(micro_step)
        numbers = self.window_numbers(step)[first : first + self.share.rows]
        starts, lengths = self.starts[numbers], self.lengths[numbers]
        window = self.context_length + 1
        self.file.prefetch(starts, window)
        inside = self._window < lengths[:, None]  # (rows, window): the window's own tokens
        positions = np.minimum(starts[:, None] + self._window, self.file.n_tokens - 1)
        ids = self.file.tokens[positions]  # (rows, window), past a window's end: read, then replaced
        self.file.check_ids(ids)
        ids = np.where(inside, ids.astype(np.int64), self.eot_id)
        x = torch.from_numpy(ids[:, :-1])
        y = torch.from_numpy(np.where(inside[:, 1:], ids[:, 1:], self.IGNORE_INDEX))
        if self.mask_first_target:
            y = y.masked_fill(x == self.eot_id, self.IGNORE_INDEX)
        return x, y


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device`` (pinned and non-blocking on CUDA; nothing to do on CPU)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
