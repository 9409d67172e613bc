"""Turning a text corpus into ``train.bin`` / ``val.bin`` (and ``test.bin``) token files plus ``meta.json``.

The corpus is streamed in chunks cut at line ends, so memory stays flat
however large it is, and large corpora are encoded by a pool of processes.
The corpus's last ``test_fraction`` of the bytes (cut at a line end) becomes
the test split, the ``val_fraction`` before it the validation split, and the
rest the training split; with ``test_fraction`` 0 no ``test.bin`` is written.
Documents (files) keep
their order and are separated by the end-of-text token when the tokenizer has
one. Token files hold little-endian uint16 when the vocabulary fits, else
uint32. Each file is written under a temporary name and renamed only when
complete; ``meta.json`` is written last.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from nanugpt.config.protocols import Tokenizer
from nanugpt.config.schema import TokenizerOptions
from nanugpt.config.token_meta import TokenMeta, drop_meta, tokenizer_fields, write_meta
from nanugpt.data.sources import Documents
from nanugpt.data.tokenizers.byte import ByteTokenizer
from nanugpt.data.tokenizers.char import CharTokenizer
from nanugpt.data.tokenizers.from_meta import tokenizer_from_options
from nanugpt.errors import UserError
from nanugpt.files.atomic import atomic_path

CHUNK_BYTES = 1 << 20
PARALLEL_MIN_BYTES = 8 << 20  # below this a process pool costs more than it saves
SPLITS = ("train", "val", "test")


class CorpusError(UserError):
    """A corpus that cannot be tokenized: empty, not UTF-8, or with characters outside the vocabulary."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


_SPACE = frozenset(b" \t\n\r\x0b\x0c")


def _is_clean_cut(data: bytes, i: int) -> bool:
    """True when cutting before ``data[i]`` splits at a newline between two non-space bytes.

    BPE pre-tokenizers split text at exactly such places, so encoding the
    pieces one by one gives the same ids as encoding the whole text.
    """
    return 2 <= i < len(data) and data[i - 1] == 0x0A and data[i] not in _SPACE and data[i - 2] not in _SPACE


def _safe_end(data: bytes) -> int:
    """The last clean cut in ``data`` (see ``_is_clean_cut``), or 0 when there is none."""
    i = len(data) - 1
    while (i := data.rfind(b"\n", 0, i)) >= 0:
        if _is_clean_cut(data, i + 1):
            return i + 1
    return 0


def _split_of(offset: int, cuts: tuple[int, ...]) -> str:
    """The split of corpus byte ``offset``: ``cuts`` are the offsets where val (and test) start."""
    return SPLITS[bisect.bisect_right(cuts, offset)]


def _chunks(files: list[Path], total: int, cuts: tuple[int, ...], chunk_bytes: int) -> Iterator[tuple[str, int, bytes]]:
    """Yield ``(split, corpus offset, bytes)`` chunks; no chunk crosses one of ``cuts``.

    An empty chunk marks the boundary between two files (documents).
    """
    offset = 0
    for index, path in enumerate(files):
        with open(path, "rb") as f:
            pending = b""
            while block := f.read(chunk_bytes):
                data = pending + block
                end = _safe_end(data)
                if end == 0 and len(data) < 8 * chunk_bytes:
                    pending = data  # no cut point yet: read on (bounded, see below)
                    continue
                if end == 0:  # a huge run without a line break: cut at a character boundary
                    end = len(data)
                    while end > 0 and (data[end - 1] & 0xC0) == 0x80:
                        end -= 1
                    end = end - 1 if end > 0 and data[end - 1] >= 0xC0 else end
                yield from _split_at_cuts(data[:end], offset, cuts)
                offset += end
                pending = data[end:]
            if pending:
                yield from _split_at_cuts(pending, offset, cuts)
                offset += len(pending)
        if index + 1 < len(files):
            yield _split_of(offset, cuts), offset, b""
    if offset != total:
        raise CorpusError(f"the corpus changed while it was read ({offset} bytes read, {total} expected)")


def _split_at_cuts(data: bytes, offset: int, cuts: tuple[int, ...]) -> Iterator[tuple[str, int, bytes]]:
    start = 0
    for cut in cuts:
        if offset + start < cut < offset + len(data):
            yield _split_of(offset + start, cuts), offset + start, data[start : cut - offset]
            start = cut - offset
    yield _split_of(offset + start, cuts), offset + start, data[start:]


def _find_cut(files: list[Path], total: int, fraction: float) -> int:
    """Byte offset where the corpus's last ``fraction`` starts: the first clean cut at or after it."""
    if fraction <= 0:
        return total
    target = int(total * (1 - fraction))
    offset = 0
    for path in files:
        size = path.stat().st_size
        if offset + size > target:
            start = max(0, target - offset - 2)
            with open(path, "rb") as f:
                f.seek(start)
                window = f.read(1 << 20)
            for i in range(target - offset - start, len(window)):
                if _is_clean_cut(window, i):
                    return offset + start + i
            return target
        offset += size
    return total


def _decode(data: bytes, offset: int, file_hint: str) -> str:
    try:
        return codecs.decode(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{file_hint}: not valid UTF-8 at corpus byte {offset + exc.start} ({exc.reason}); "
            "the byte tokenizer accepts any bytes"
        ) from None


Payload = bytes | list[str]  # a chunk of a file (b"" marks a file boundary), or whole documents


def _encode(tokenizer: Tokenizer, payload: Payload, offset: int, hint: str, dtype: np.dtype) -> np.ndarray:
    """Token ids of one unit of work: a chunk of bytes, or documents each followed by end-of-text."""
    if isinstance(payload, bytes):
        if isinstance(tokenizer, ByteTokenizer):
            return np.frombuffer(payload, dtype=np.uint8).astype(dtype)
        texts, where = [_decode(payload, offset, hint)], f"{hint}: near corpus byte {offset}"
    else:
        texts, where = payload, f"{hint}: in documents {offset}-{offset + len(payload) - 1}"
    eot = isinstance(payload, list) and tokenizer.eot_id is not None
    eot_ids = np.asarray([tokenizer.eot_id if eot else 0], dtype=dtype)
    # A tokenizer that can return an array directly saves a Python list of every id (13% of tokenize time).
    encode = getattr(tokenizer, "encode_array", None) or (lambda text: np.asarray(tokenizer.encode(text), dtype))
    pieces: list[np.ndarray] = []
    try:
        for text in texts:
            pieces += [encode(text), eot_ids] if eot else [encode(text)]
    except ValueError as exc:
        raise CorpusError(f"{where}: {exc}") from None
    return np.concatenate(pieces).astype(dtype, copy=False) if pieces else np.zeros(0, dtype=dtype)


def fit_char_vocab(files: list[Path]) -> set[str]:
    """Every character of the corpus, read in chunks (``char`` tokenizer)."""
    chars: set[str] = set()
    offset = 0
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                try:
                    chars.update(decoder.decode(block))
                except UnicodeDecodeError as exc:
                    raise CorpusError(
                        f"{path}: not valid UTF-8 at corpus byte {offset + exc.start} ({exc.reason}); "
                        "the byte tokenizer accepts any bytes"
                    ) from None
                offset += len(block)
            try:
                chars.update(decoder.decode(b"", final=True))
            except UnicodeDecodeError:
                raise CorpusError(f"{path}: ends inside a UTF-8 character (corpus byte {offset})") from None
    return chars


def tokenize_files(
    files: list[Path],
    options: TokenizerOptions,
    out_dir: Path,
    val_fraction: float,
    *,
    workers: int | None = None,
    source: str = "",
    chunk_bytes: int = CHUNK_BYTES,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    test_fraction: float = 0.0,
) -> TokenMeta:
    """Tokenize text files into ``out_dir/{train,val}.bin`` (``test.bin`` when ``test_fraction`` > 0) and
    ``out_dir/meta.json``; return the meta.

    Each file is a document. ``workers`` processes encode chunks of
    ``chunk_bytes`` when the corpus has at least ``parallel_min_bytes``; the
    output does not depend on either.
    """
    total = sum(p.stat().st_size for p in files)
    if total == 0:
        raise CorpusError(f"the corpus is empty ({', '.join(map(str, files))})")
    vocab = sorted(fit_char_vocab(files)) if options.module == "char" else None
    cuts = (_find_cut(files, total, val_fraction + test_fraction),)
    if test_fraction > 0:
        cuts += (_find_cut(files, total, test_fraction),)
    corpus = Corpus(
        source=source,
        hint=str(files[0]) if len(files) == 1 else f"{len(files)} files",
        size=total,
        unit="B",
        workers=_pool_size(workers) if total >= parallel_min_bytes else 1,
    )
    splits = SPLITS if test_fraction > 0 else SPLITS[:2]
    units = _chunks(files, total, cuts, chunk_bytes)
    return _write_tokens(
        units, corpus, options=options, vocab=vocab, out_dir=out_dir, splits=splits, val_fraction=val_fraction
    )


def tokenize_documents(
    batches: Documents,
    n_documents: int,
    options: TokenizerOptions,
    out_dir: Path,
    val_fraction: float,
    *,
    workers: int | None = None,
    source: str = "",
    parallel_min_documents: int = 10_000,
    test_fraction: float = 0.0,
    test_split: tuple[Documents, int] | None = None,
    val_split: tuple[Documents, int] | None = None,
    revision: str | None = None,
) -> TokenMeta:
    """Tokenize ``n_documents`` documents (``batches()`` yields them in order, in lists) like ``tokenize_files``.

    The last ``test_fraction`` of the documents, in their given order, become
    the test split and the ``val_fraction`` before them the validation split;
    or, given ``test_split`` (its documents and their count: a dataset's own
    test split), those documents are the test split. Every document is followed
    by the end-of-text token when the tokenizer has one. Given ``val_split`` (a
    dataset's own val split), its documents are the validation split and
    ``val_fraction`` carves none. ``revision`` is the dataset revision recorded
    in ``meta.json``.
    """
    if n_documents == 0:
        raise CorpusError(f"the corpus is empty ({source} has no documents)")
    test_batches, n_test = test_split or (lambda: iter(()), 0)
    val_batches, n_val = val_split or (lambda: iter(()), 0)
    if val_split is not None:
        val_fraction = 0.0
        if n_val == 0:
            raise CorpusError(f"the validation split is empty ({source}'s val split has no documents)")
    every_doc = (doc for batch in itertools.chain(batches(), val_batches(), test_batches()) for doc in batch)
    vocab = sorted({c for doc in every_doc for c in doc}) if options.module == "char" else None
    first_val = n_documents - int(n_documents * (val_fraction + test_fraction))
    first_test = n_documents - int(n_documents * test_fraction)
    units = _document_units(batches, val_batches, test_batches, first_val=first_val, first_test=first_test)
    corpus = Corpus(
        source=source,
        hint=source,
        size=n_documents + n_val + n_test,
        unit="doc",
        workers=_pool_size(workers) if n_documents + n_val + n_test >= parallel_min_documents else 1,
        revision=revision,
    )
    splits = SPLITS if test_fraction > 0 or test_split is not None else SPLITS[:2]
    return _write_tokens(
        units, corpus, options=options, vocab=vocab, out_dir=out_dir, splits=splits, val_fraction=val_fraction
    )


def _document_units(
    batches: Documents, val_batches: Documents, test_batches: Documents, *, first_val: int, first_test: int
) -> Iterator[tuple[str, int, Payload]]:
    """``(split, index of the first document, documents)`` in order: documents before ``first_val`` train, those
    before ``first_test`` val, the rest test; then every document of ``val_batches`` val and of ``test_batches``
    test."""
    index = 0
    for batch in batches():
        train, val = max(0, first_val - index), max(0, first_test - index)
        for split, first, last in (("train", 0, train), ("val", train, val), ("test", val, len(batch))):
            if min(last, len(batch)) > first:
                yield split, index + first, batch[first:last]
        index += len(batch)
    for split, extra in (("val", val_batches), ("test", test_batches)):
        for batch in extra():
            yield split, index, batch
            index += len(batch)


def _pool_size(workers: int | None) -> int:
    """The processes that encode a large corpus: ``workers``, or one per core."""
    return workers or os.cpu_count() or 1


@dataclass(frozen=True)
class Corpus:
    """What is being tokenized, as ``meta.json``, the progress bar and error messages describe it."""

    source: str  # meta.json's source: a path, URL or hf: name
    hint: str  # how an encoding error names the corpus
    size: int  # the progress bar's total, in ``unit``
    unit: str  # "B" (bytes of files) or "doc" (documents)
    workers: int  # encoding processes; 1 encodes in this process
    revision: str | None = None  # the dataset revision of an hf: source


class SplitFiles:
    """The split files being written, each under a temporary name until complete: ids appended in order,
    counted and hashed, and the digest and size of the text they came from."""

    def __init__(self, stack: ExitStack, out_dir: Path, splits: tuple[str, ...], dtype: np.dtype):
        self.dtype = dtype
        paths = {split: stack.enter_context(atomic_path(out_dir / f"{split}.bin")) for split in splits}
        self.outputs: dict[str, BinaryIO] = {split: stack.enter_context(open(paths[split], "wb")) for split in splits}
        self.counts = {split: 0 for split in splits}
        self.digests = {split: hashlib.sha256() for split in splits}
        self.source_digest = hashlib.sha256()
        self.source_bytes = 0

    def write(self, split: str, ids: np.ndarray, payload: Payload = b"") -> None:
        """Append ``ids`` to ``split``; ``payload`` is the text they encode, for the source digest."""
        for data in [payload] if isinstance(payload, bytes) else (doc.encode("utf-8") + b"\0" for doc in payload):
            self.source_digest.update(data)
            self.source_bytes += len(data)
        raw = ids.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        self.outputs[split].write(raw)
        self.digests[split].update(raw)
        self.counts[split] += len(ids)

    def finish(self, val_fraction: float) -> None:
        """Flush the files and refuse an empty split that was asked for (before any file takes its name)."""
        for f in self.outputs.values():
            f.flush()
        if self.counts["train"] == 0:
            raise CorpusError("the training split is empty: the corpus is too small or data.val_fraction too large")
        if val_fraction > 0 and self.counts["val"] == 0:
            raise CorpusError("the validation split is empty: raise data.val_fraction or use a larger corpus")
        if self.counts.get("test") == 0:
            raise CorpusError("the test split is empty: raise data.test_fraction or use a larger corpus")


def _write_tokens(
    units: Iterable[tuple[str, int, Payload]],
    corpus: Corpus,
    *,
    options: TokenizerOptions,
    vocab: list[str] | None,
    out_dir: Path,
    splits: tuple[str, ...],
    val_fraction: float,
) -> TokenMeta:
    """Encode units of work in order and write the ``splits``' token files, then meta.json."""
    tokenizer = options.build(vocab=vocab)
    if isinstance(tokenizer, CharTokenizer) and tokenizer.vocab_size == 0:
        raise CorpusError("the corpus has no characters")
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.asarray([tokenizer.eot_id], dtype=dtype) if tokenizer.eot_id is not None else None
    with ExitStack() as stack:
        files = SplitFiles(stack, out_dir, splits, dtype)
        progress = stack.enter_context(
            tqdm(total=corpus.size, unit=corpus.unit, unit_scale=True, desc="tokenize", disable=None)
        )
        for split, payload, ids in _encoded(units, tokenizer, options=options, vocab=vocab, corpus=corpus, dtype=dtype):
            if ids is not None:
                files.write(split, ids, payload)
                progress.update(len(payload))
            elif eot is not None:  # a boundary between two files
                files.write(split, eot)
        files.finish(val_fraction)
        meta = TokenMeta(
            **tokenizer_fields(options, tokenizer),
            dtype=dtype.name,
            source=corpus.source,
            source_sha256=files.source_digest.hexdigest(),
            source_bytes=files.source_bytes,
            train_tokens=files.counts["train"],
            val_tokens=files.counts["val"],
            train_sha256=files.digests["train"].hexdigest(),
            val_sha256=files.digests["val"].hexdigest(),
            test_tokens=files.counts.get("test"),
            test_sha256=files.digests["test"].hexdigest() if "test" in splits else None,
            revision=corpus.revision,
        )
        drop_meta(out_dir)  # the files take their names next: a kill among the renames leaves no meta.json over them
    write_meta(out_dir, meta)
    return meta


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (in the main thread): each is recorded and raised again
    after it, where its handler can act. Python runs a handler between two bytecodes, wherever they are, and an
    exception raised inside ``os.fork``'s callbacks is printed and dropped, so a Ctrl-C there would be lost."""
    pending: list[int] = []
    previous = {signum: signal.signal(signum, lambda got, frame: pending.append(got)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending:
        signal.raise_signal(pending[0])


class EncodingWorkers:
    """``count`` processes that encode units of work, each over a pipe of its own, one unit at a time.

    No lock is shared between processes (``multiprocessing.Pool``'s queues share two), so a worker that dies
    at any moment leaves nothing another process waits on: leaving the block on an exception (Ctrl-C, SIGTERM,
    a corpus error) kills the workers and reaps them, and a worker whose parent is gone exits quietly.
    """

    def __init__(self, count: int, options: dict[str, Any], vocab: list[str] | None):
        context = multiprocessing.get_context("fork")
        self.connections: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        with signals_deferred():  # an exception raised inside a fork's bookkeeping would be lost
            for _ in range(count):
                mine, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs, options, vocab), daemon=True)
                process.start()
                theirs.close()
                self.connections.append(mine)
                self.processes.append(process)

    def submit(self, worker: int, task: tuple[Payload, int, str, str]) -> None:
        """Hand ``worker`` its next unit: ``(payload, offset, hint, dtype)``."""
        self.connections[worker].send(task)

    def result(self, worker: int) -> np.ndarray:
        """The ids of ``worker``'s unit, or the error it raised."""
        try:
            kind, value = self.connections[worker].recv()
        except EOFError:
            raise CorpusError(
                f"a tokenize worker ended without its result (exit code {self.processes[worker].exitcode})"
            ) from None
        if kind == "error":
            raise value
        return value

    def __enter__(self) -> EncodingWorkers:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        for connection, process in zip(self.connections, self.processes):
            if kind is None:
                connection.send(None)  # no more work
            else:
                process.kill()
        for connection, process in zip(self.connections, self.processes):
            process.join()
            connection.close()


def _serve(connection: Connection, options: dict[str, Any], vocab: list[str] | None) -> None:
    """A worker: encode each unit received until ``None``; an error of the corpus goes back as the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    tokenizer = tokenizer_from_options(options, vocab)
    try:
        while (task := connection.recv()) is not None:
            payload, offset, hint, dtype = task
            try:
                connection.send(("ids", _encode(tokenizer, payload, offset, hint, np.dtype(dtype))))
            except UserError as exc:
                connection.send(("error", exc))
    except (EOFError, BrokenPipeError):  # the parent is gone: nothing to report to
        return


def _encoded(
    units: Iterable[tuple[str, int, Payload]],
    tokenizer: Tokenizer,
    *,
    options: TokenizerOptions,
    vocab: list[str] | None,
    corpus: Corpus,
    dtype: np.dtype,
) -> Iterator[tuple[str, Payload, np.ndarray | None]]:
    """``(split, payload, ids)`` of every unit in order; ids None at a file boundary (an empty payload). With
    several ``corpus.workers``, each worker encodes one unit ahead (``EncodingWorkers``)."""
    # Bytes need no encoding work (one frombuffer): a pool would only add pickling and memory.
    if corpus.workers == 1 or isinstance(tokenizer, ByteTokenizer):
        for split, offset, payload in units:
            yield split, payload, _encode(tokenizer, payload, offset, corpus.hint, dtype) if payload else None
        return
    with EncodingWorkers(corpus.workers, options.model_dump(), vocab) as workers:
        in_flight: deque[tuple[str, Payload, int | None]] = deque()  # (split, payload, its worker)
        busy = [False] * corpus.workers

        def oldest() -> tuple[str, Payload, np.ndarray | None]:
            split, payload, worker = in_flight.popleft()
            if worker is None:
                return split, payload, None
            busy[worker] = False
            return split, payload, workers.result(worker)

        for turn, (split, offset, payload) in enumerate(units):
            worker = turn % corpus.workers if payload else None
            while worker is not None and busy[worker]:  # one unit per worker: a pipe never fills both ways
                yield oldest()
            if worker is not None:
                workers.submit(worker, (payload, offset, corpus.hint, dtype.str))
                busy[worker] = True
            in_flight.append((split, payload, worker))
        while in_flight:
            yield oldest()
