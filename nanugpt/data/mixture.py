"""``mixture``: train on several corpora at chosen weights, each tokenized once into a folder of its own.

A mixture's ``sources`` are ``tokenized`` data sections (a URL, local files or
``hf:``), each with a ``weight``. The tokenize stage writes each source into a
folder shared by every mixture that uses the same source with the same
tokenizer (``DATA_ROOT/<source dataset>/shared/<digest of its settings>``), and
only when its settings or its local files changed; the mixture's own folder
(``DATA_ROOT/<mixture dataset>/<tokenizer>``) holds hard links to those files,
one subfolder per source, and a ``meta.json`` of the whole. So a new weight
re-tokenizes nothing, and editing one source re-tokenizes that source alone.

Row ``g`` of the run's train batches (counted over every step's global batch)
comes from the source whose share of ``[0, 1)`` holds ``frac(c + g * phi)``,
with ``phi`` the golden ratio's fractional part and ``c`` drawn from the seed:
a low-discrepancy sequence, so any run of consecutive rows matches the weights
closely (the gap shrinks as ``log n / n``), and a pure function of (seed, row),
so a resumed run and any number of processes see the same global batches.
Within its source a row's window is drawn at random, as ``tokenized`` draws
them, from a generator of its own per source. Val batches are mixed the same
way; each source's own val split also gives a val loss of its own.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from nanugpt.config.schema import BatchShare, DataOptions, Params, Problem, TokenizerOptions, tokens_settings
from nanugpt.config.token_meta import META_FILE, RETOKENIZE, DataError, TokenMeta, read_meta, write_meta
from nanugpt.data.sources import data_record
from nanugpt.data.tokenized import BatchSource, TokenFile, TokenizedDataOptions
from nanugpt.files.atomic import remove_stale_temporaries, write_json
from nanugpt.files.folder_lock import locked

GOLDEN = (5**0.5 - 1) / 2  # the fractional part of the golden ratio: the most evenly spread Weyl sequence
SHARED = "shared"  # DATA_ROOT/<source dataset>/shared/<digest>: a source's token files, shared by mixtures
RECORD = "source.json"  # in a shared folder: the settings and local files its token files were made from
# A source's name is also a subfolder of the mixture's folder: these are the files beside it.
RESERVED = frozenset({META_FILE, f"{META_FILE}.sha256", RECORD, "train.bin", "val.bin", "test.bin"})


class MixtureSource(TokenizedDataOptions):
    """One source of a mixture: a ``tokenized`` data section (``module`` may be left out) and its weight."""

    not_in_tokens: ClassVar[tuple[str, ...]] = (*TokenizedDataOptions.not_in_tokens, "weight")

    module: Literal["tokenized"] = "tokenized"
    weight: float = Field(gt=0, description="share of the train rows, relative to the other sources' weights")

    @field_validator("sampling")
    @classmethod
    def _random_windows(cls, value: str) -> str:
        if value != "random":
            raise ValueError(
                "a mixture draws each source's windows at random (its rows interleave the sources, so no source "
                "is read in passes): leave sampling out or set it to 'random'"
            )
        return value

    @field_validator("packing")
    @classmethod
    def _windows_cut_anywhere(cls, value: str) -> str:
        if value != "none":
            raise ValueError("a mixture does not pack documents yet: leave packing out or set it to 'none'")
        return value


class MixtureDataOptions(DataOptions):
    """Weighted sources, each tokenized once into a shared folder (module doc)."""

    sources: list[MixtureSource] = Field(
        min_length=1,
        description="the corpora, each a tokenized data section (dataset, source, hf, val_fraction, ...) with a "
        "weight; weights are relative (normalized to sum to 1); the source's dataset names its metrics",
    )

    @model_validator(mode="after")
    def _distinct_names(self) -> MixtureDataOptions:
        names = [source.dataset for source in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: each source needs a dataset name of its own, got {names}")
        if taken := RESERVED & set(names):
            raise ValueError(f"sources: {sorted(taken)} name files of the mixture's folder; rename the source")
        return self

    def check(self, params: Params) -> list[Problem]:
        if params.tokenizer.module == "char":
            return [
                (
                    "tokenizer.module",
                    "a mixture needs one vocabulary for all its sources, and char fits one to each corpus: use "
                    "a fixed vocabulary (byte, tiktoken, hf)",
                )
            ]
        return []

    def document_packing(self) -> None:
        """None: a mixture's windows are cut anywhere in each source."""
        return None

    @property
    def weights(self) -> np.ndarray:
        """The sources' weights, normalized to sum to 1."""
        raw = np.asarray([source.weight for source in self.sources], dtype=np.float64)
        return raw / raw.sum()

    def corpus_files(self) -> list[Path]:
        """Every source's local files."""
        return [path for source in self.sources for path in source.corpus_files()]

    def tokenize(self, tokenizer: TokenizerOptions, out_dir: Path, raw_dir: Path) -> TokenMeta:
        data_root = raw_dir.parent.parent  # raw_dir is DATA_ROOT/<dataset>/raw (DataOptions.tokenize)
        metas = {}
        for source in self.sources:
            shared = shared_dir(source, tokenizer, data_root)
            metas[source.dataset] = tokenize_shared(source, tokenizer, shared, data_root / source.dataset / "raw")
            link_folder(shared, out_dir / source.dataset)
        first = next(iter(metas.values()))
        for name, meta in metas.items():
            if (meta.vocab_size, meta.vocab, meta.eot_id, meta.dtype) != (
                first.vocab_size,
                first.vocab,
                first.eot_id,
                first.dtype,
            ):
                raise DataError(f"data.sources: {name}'s vocabulary differs from {self.sources[0].dataset}'s")
        meta = TokenMeta(
            tokenizer=first.tokenizer,
            tokenizer_name=first.tokenizer_name,
            vocab_size=first.vocab_size,
            vocab=first.vocab,
            eot_id=first.eot_id,
            dtype=first.dtype,
            source="mixture of " + ", ".join(metas),
            source_sha256=hashlib.sha256("".join(m.digest() for m in metas.values()).encode()).hexdigest(),
            source_bytes=sum(m.source_bytes for m in metas.values()),
            train_tokens=sum(m.train_tokens or 0 for m in metas.values()),
            val_tokens=sum(m.val_tokens or 0 for m in metas.values()),
            sources=list(metas),
        )
        write_meta(out_dir, meta)
        return meta

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> MixtureBatches | None:
        if meta.sources != [source.dataset for source in self.sources]:
            raise DataError(f"{data_dir / META_FILE}: made for sources {meta.sources}, not these; {RETOKENIZE}")
        parts = {}
        for index, source in enumerate(self.sources):
            folder = data_dir / source.dataset
            part_meta = read_meta(folder)
            token_file = TokenFile(folder / f"{split}.bin", part_meta, split, verify_sha256=source.verify == "sha256")
            if token_file.n_tokens == 0:
                return None
            own_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            parts[source.dataset] = BatchSource(
                token_file, context_length, share=share, seed=own_seed, split=split, sampling="random"
            )
        return MixtureBatches(parts, self.weights, share=share, seed=seed)


def shared_dir(source: MixtureSource, tokenizer: TokenizerOptions, data_root: Path) -> Path:
    """``DATA_ROOT/<dataset>/shared/<digest>``: the folder of a source's token files, named by what they depend on
    (the source's settings but its weight, and the tokenizer's), so mixtures that agree on them share it."""
    settings = {"source": tokens_settings(source), "tokenizer": tokenizer.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return data_root / source.dataset / SHARED / digest


def tokenize_shared(source: MixtureSource, tokenizer: TokenizerOptions, folder: Path, raw_dir: Path) -> TokenMeta:
    """The meta of ``folder``'s token files, tokenizing ``source`` there first unless they were made from the same
    local files (the shared folder's ``source.json``); one process at a time per folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with held(folder, source.dataset):
        record = data_record(source, hashes=folder / ".source-hashes.json")
        made_from = folder / RECORD
        if made_from.is_file() and json.loads(made_from.read_text()) == record:
            try:
                meta = read_meta(folder)
            except DataError:
                pass  # damaged or incomplete: tokenize it again
            else:
                print(f"{source.dataset}: token files up to date in {folder}")
                return meta
        made_from.unlink(missing_ok=True)
        for path in remove_stale_temporaries(folder):
            print(f"cleaned up {path}, left by a process killed while writing")
        print(f"{source.dataset}: tokenizing into {folder}")
        meta = source.tokenize(tokenizer, folder, raw_dir)
        write_json(made_from, record)
        return meta


@contextmanager
def held(folder: Path, name: str) -> Iterator[None]:
    """Hold ``folder`` alone while the block runs, waiting (and saying so) while another tokenize holds it."""
    said = False
    while True:
        with locked(folder / ".lock", exclusive=True) as lock:
            if lock is not None:
                yield
                return
        if not said:
            print(f"{name}: waiting for the other process that tokenizes into {folder}")
            said = True
        time.sleep(1.0)


def link_folder(source: Path, target: Path) -> None:
    """Make ``target`` hold hard links to the token files and meta of ``source`` (copies across file systems)."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        old.unlink()
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or path.name == RECORD or not path.is_file():
            continue
        try:
            os.link(path, target / path.name)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copy2(path, target / path.name)


class MixtureBatches:
    """Batches whose rows come from several ``BatchSource``s in the given proportions (module doc)."""

    def __init__(self, parts: dict[str, BatchSource], weights: np.ndarray, *, share: BatchShare, seed: int):
        self.parts = parts
        self.names = list(parts)
        self.bounds = np.cumsum(weights)[:-1]  # source k holds [bounds[k - 1], bounds[k]) of [0, 1)
        self.share = share
        self.context_length = next(iter(parts.values())).context_length
        split_id = next(iter(parts.values())).split_id
        self.start = float(np.random.default_rng([seed, split_id, 0, 2]).random())  # 4 numbers: no step's seed
        self._counted = (0, np.zeros(len(parts), dtype=np.int64))  # (rows, rows of each source among them)

    def sources_of(self, first_row: int, count: int) -> np.ndarray:
        """The source index of global rows ``first_row ... first_row + count - 1``."""
        rows = np.arange(first_row, first_row + count, dtype=np.float64)
        return np.searchsorted(self.bounds, np.mod(self.start + rows * GOLDEN, 1.0), side="right")

    def sources_of_micro_batch(self, step: int, micro_step: int) -> tuple[int, np.ndarray]:
        """The position in ``step``'s global batch of this rank's ``micro_step``'s first row, and the source index
        of each of its rows."""
        n, start = self.share.global_rows, self.share.first_row(micro_step)
        return start, self.sources_of(step * n, n)[start : start + self.share.rows]

    def origins(self, step: int, micro_step: int) -> list[tuple[str, int]]:
        """``(source/split file, first token)`` of each row of this rank's ``micro_step`` (``pipeline.batch_at``)."""
        start, which = self.sources_of_micro_batch(step, micro_step)
        origins = []
        for row, index in enumerate(which.tolist()):
            part = self.parts[self.names[index]]
            origins.append((f"{self.names[index]}/{part.file.path.name}", int(part.offsets(step)[start + row])))
        return origins

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (rows, context_length) int64, of this rank's ``micro_step``."""
        start, which = self.sources_of_micro_batch(step, micro_step)
        ids = np.empty((self.share.rows, self.context_length + 1), dtype=np.int64)
        for index in np.unique(which).tolist():
            part = self.parts[self.names[index]]
            mine = which == index
            ids[mine] = part.windows(part.offsets(step)[start : start + self.share.rows][mine])
        batch = torch.from_numpy(ids)
        return batch[:, :-1], batch[:, 1:]

    def tokens_by_source(self, steps: int) -> dict[str, int]:
        """The train tokens each source gave in the first ``steps`` steps (counted on from the last call)."""
        rows = steps * self.share.global_rows
        done, counts = self._counted
        if rows < done:
            done, counts = 0, np.zeros(len(self.parts), dtype=np.int64)
        chunk = 1 << 20
        for first in range(done, rows, chunk):
            found = self.sources_of(first, min(chunk, rows - first))
            counts = counts + np.bincount(found, minlength=len(self.parts))
        self._counted = (rows, counts)
        return {name: int(count) * self.context_length for name, count in zip(self.names, counts.tolist())}

    def named_parts(self) -> dict[str, BatchSource]:
        """Each source's batches alone (its own val loss)."""
        return self.parts
