"""Packing whole documents into windows (``data.packing: documents``), and the model's side of it.

The tokenize stage ends every document with the tokenizer's end-of-text id (tiktoken, ``byte`` with
``special_tokens``, ``hf``; not ``char``), so the document boundaries of a split are read back from its token
file: ``document_ends`` finds them once, in chunks, and ``pack_windows`` cuts the file into windows of at most
``context_length + 1`` tokens, in document order: consecutive documents share a window while they fit, and a
document longer than a window is cut into window-sized pieces (its last, shorter piece shares a window with the
documents after it). Each window is a span ``[start, stop)`` of the file, every token in exactly one of them; the
batches (``nanugpt.data.tokenized.PackedBatchSource``) pad a short window with the end-of-text id as input and
the loss's ignore index as target.

``mask_model_documents`` turns on the model's ``DocumentMasking`` capability with the end-of-text id, or refuses a
model that has none: its attention then stops at each end-of-text id (``nanugpt.models.layers.DocumentMask``).

Cost, once per split and process: a read of the whole token file (``np.flatnonzero`` on each chunk of the memory
map: 0.16 s per 100M tokens in the page cache) and a Python loop over the windows (0.7 us each: some 7 s for 9B
tokens in windows of 1,025), on a 2-vCPU machine.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

import numpy as np
import torch

from nanugpt.config.protocols import DocumentMasking, PacksDocuments
from nanugpt.config.token_meta import DataError, TokenMeta
from nanugpt.errors import UserError

CHUNK_TOKENS = 1 << 24  # tokens read at a time when looking for end-of-text ids (32 MB of uint16)


def eot_of(meta: TokenMeta, data_dir: object) -> int:
    """The end-of-text id of the token files, or a ``DataError`` naming ``data.packing``: without one, the
    documents' boundaries are not in the files."""
    if meta.eot_id is None:
        raise DataError(
            f"data.packing: documents needs an end-of-text id between documents, but tokenizer "
            f"{meta.tokenizer_name or meta.tokenizer.get('module')!r} of {data_dir} has none; use a tokenizer that "
            "has one (tiktoken, or byte with special_tokens: true) or data.packing: none"
        )
    return meta.eot_id


def document_ends(
    tokens: np.ndarray,
    eot_id: int,
    *,
    chunk_tokens: int = CHUNK_TOKENS,
    prefetch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The position after each ``eot_id`` of ``tokens`` (where each document ends, exclusive), int64, ascending.

    Read ``chunk_tokens`` at a time, so a memory-mapped file of any size needs no more memory than a chunk;
    ``prefetch(start, count)`` is called before each chunk is read (``TokenFile.prefetch``)."""
    found = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(tokens), chunk_tokens):
        if prefetch is not None:
            prefetch(start, min(chunk_tokens, len(tokens) - start))
        chunk = tokens[start : start + chunk_tokens]
        found.append(np.flatnonzero(chunk == eot_id).astype(np.int64) + (start + 1))
    return np.concatenate(found)


def pack_windows(ends: np.ndarray, n_tokens: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy packing of the documents that end at ``ends`` (``document_ends``; the tokens after the last end form
    one more document) into windows of at most ``window`` tokens: the (starts, stops) of each window, int64.

    In file order: a window takes whole documents while they fit; a document that starts a window and is longer
    than it fills it, and the rest of that document starts the next window. The windows tile ``[0, n_tokens)``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    bounds = ends.tolist()
    if not bounds or bounds[-1] != n_tokens:
        bounds.append(n_tokens)
    starts: list[int] = []
    stops: list[int] = []
    start, first = 0, 0  # first: the index of the first document end after start
    while start < n_tokens:
        last = bisect_right(bounds, start + window, lo=first) - 1  # the last document end that fits
        if last >= first:  # whole documents
            stop, first = bounds[last], last + 1
        else:  # a document longer than what is left of it fits: a window-sized piece of it
            stop = start + window
        starts.append(start)
        stops.append(stop)
        start = stop
    return np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)


def mask_model_documents(model: torch.nn.Module, data: object, *, eot_id: int | None, module: str) -> None:
    """Mask ``model``'s attention at the document boundaries where the ``data`` options pack documents
    (``PacksDocuments``; nothing to do where they do not), or refuse a model without the capability (``module``:
    its ``model.module``, for the message)."""
    packing = data.document_packing() if isinstance(data, PacksDocuments) else None
    if packing is None:
        return
    if eot_id is None:
        raise DataError("data.packing: documents needs token files with an end-of-text id; re-run the tokenize stage")
    if not isinstance(model, DocumentMasking):
        raise UserError(
            f"model.module {module} cannot mask attention at document boundaries, which data.packing: documents "
            "needs; use data.packing: none, or a model that can (nanogpt, nanogpt_modern, tinyllama, "
            "tiny_transformer, hf_gpt2, hf_llama)"
        )
    model.mask_documents(eot_id, restart_positions=packing.restart_positions)
