"""Packing whole documents into windows (``data.packing: documents``): the windows, the batches, the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, tiny_params
from pydantic import ValidationError

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import DataError, TokenMeta
from nanugpt.data.packing import document_ends, pack_windows
from nanugpt.data.tokenized import PackedBatchSource, TokenFile, TokenizedDataOptions
from pipeline.schema import load

EOT = 256  # the byte tokenizer's end-of-text id with special_tokens: true
CONTEXT = 16
WINDOW = CONTEXT + 1


def documents(seed: int = 0, count: int = 400) -> list[np.ndarray]:
    """Documents of 1 to 40 tokens (some longer than a window), each ending with ``EOT``."""
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(0, 256, size=rng.integers(0, 40)), EOT) for _ in range(count)]


def write_split(folder: Path, docs: list[np.ndarray], tail: int = 5) -> tuple[TokenFile, TokenMeta, np.ndarray]:
    """A train.bin of ``docs`` then ``tail`` tokens of an unfinished document; its file, meta and tokens."""
    tokens = np.concatenate([*docs, np.arange(1, tail + 1)]).astype("<u2")
    tokens.tofile(folder / "train.bin")
    meta = TokenMeta(
        tokenizer={"module": "byte", "special_tokens": True},
        vocab_size=257,
        dtype="uint16",
        eot_id=EOT,
        train_tokens=len(tokens),
    )
    return TokenFile(folder / "train.bin", meta, "train"), meta, tokens


def source(file: TokenFile, share: BatchShare, **kwargs: object) -> PackedBatchSource:
    return PackedBatchSource(file, CONTEXT, share=share, seed=3, split="train", eot_id=EOT, **kwargs)


def test_document_ends_read_in_chunks_find_every_end() -> None:
    tokens = np.concatenate(documents()).astype("<u2")
    expected = np.flatnonzero(tokens == EOT) + 1
    for chunk in (7, 64, 1 << 20):
        assert np.array_equal(document_ends(tokens, EOT, chunk_tokens=chunk), expected)


def test_windows_tile_the_file_and_split_only_long_documents() -> None:
    docs = documents()
    tokens = np.concatenate([*docs, [1, 2, 3]])
    starts, stops = pack_windows(document_ends(tokens, EOT), len(tokens), WINDOW)
    assert starts[0] == 0 and stops[-1] == len(tokens) and np.array_equal(starts[1:], stops[:-1])  # no token lost
    assert (stops - starts <= WINDOW).all() and (stops > starts).all()
    window_of = np.searchsorted(stops, np.arange(len(tokens)), side="right")  # the window of each token
    begin = 0
    for doc in [*docs, [1, 2, 3]]:
        end = begin + len(doc)
        if len(doc) <= WINDOW:  # whole, in one window
            assert window_of[begin] == window_of[end - 1]
        else:  # window-sized pieces from its start, the rest in the next window
            pieces = np.unique(window_of[begin:end])
            assert starts[pieces[0]] == begin
            assert (stops[pieces[:-1]] - starts[pieces[:-1]] == WINDOW).all()
            assert len(pieces) == -(-len(doc) // WINDOW)
        begin = end
    packed = [(a, b) for a, b in zip(starts, stops) if b - a < WINDOW and b != len(tokens)]
    assert packed, "some windows end early: the next document did not fit"
    for a, b in packed:  # ... because the next document did not fit
        next_end = np.flatnonzero(tokens[b:] == EOT)
        assert next_end.size == 0 or b + next_end[0] + 1 - a > WINDOW


def test_one_epoch_gives_every_token_of_a_trained_window_once(tmp_path: Path) -> None:
    file, _, tokens = write_split(tmp_path, documents())
    batches = source(file, BatchShare(8, 8), sampling="epochs")
    n = batches.windows_per_epoch
    seen: list[np.ndarray] = []
    for step in range(-(-n // 8)):
        x, y = batches.micro_batch(step, 0)
        for row, start in enumerate(batches.offsets(step)):
            seen.append(np.concatenate([x[row, :1].numpy(), y[row][y[row] != -100].numpy()]))
            assert np.array_equal(seen[-1], tokens[start : start + len(seen[-1])])  # the file's own tokens
    seen = seen[:n]  # the last step runs into the next epoch
    starts, stops = pack_windows(document_ends(tokens, EOT), len(tokens), WINDOW)
    untrained = int((stops - starts == 1).sum())  # an empty document before a long one: no target, never picked
    assert n == len(starts) - untrained
    assert sum(len(window) for window in seen) == len(tokens) - untrained
    numbers = np.concatenate([batches.window_numbers(step) for step in range(-(-n // 8))])[:n]
    assert np.array_equal(np.sort(numbers), np.arange(n))  # each window once


def test_padding_is_eot_in_and_ignored_out(tmp_path: Path) -> None:
    file, _, _ = write_split(tmp_path, documents())
    batches = source(file, BatchShare(32, 32))
    x, y = batches.micro_batch(0, 0)
    lengths = batches.lengths[batches.window_numbers(0)]
    assert (lengths < WINDOW).any()
    for row, length in enumerate(lengths):
        assert (x[row, length - 1 :] == EOT).all()
        assert (y[row, length - 1 :] == -100).all() and (y[row, : length - 1] != -100).all()


def test_mask_first_target_ignores_the_target_after_each_end(tmp_path: Path) -> None:
    file, _, _ = write_split(tmp_path, documents())
    plain = source(file, BatchShare(32, 32))
    masked = source(file, BatchShare(32, 32), mask_first_target=True)
    (x, y), (mx, my) = plain.micro_batch(4, 0), masked.micro_batch(4, 0)
    assert (x == mx).all()
    after_end = x == EOT
    assert (my[after_end] == -100).all() and (y[after_end] != -100).any()
    assert (my[~after_end] == y[~after_end]).all()


def test_batches_are_a_function_of_seed_and_step(tmp_path: Path) -> None:
    file, _, _ = write_split(tmp_path, documents())
    for sampling in ("random", "epochs"):
        a = source(file, BatchShare(4, 4), sampling=sampling)
        b = source(file, BatchShare(4, 4), sampling=sampling)  # a resumed run: nothing but (seed, step)
        assert (a.micro_batch(7, 0)[0] == b.micro_batch(7, 0)[0]).all()
        assert not (a.micro_batch(7, 0)[0] == a.micro_batch(8, 0)[0]).all()
        other = PackedBatchSource(file, CONTEXT, share=BatchShare(4, 4), seed=4, split="train", eot_id=EOT)
        assert not (a.micro_batch(7, 0)[0] == other.micro_batch(7, 0)[0]).all()


@pytest.mark.parametrize("sampling", ["random", "epochs"])
def test_two_ranks_share_the_global_batch_of_one(tmp_path: Path, sampling: str) -> None:
    file, _, _ = write_split(tmp_path, documents())
    single = source(file, BatchShare(2, 8), sampling=sampling)
    ranks = [source(file, BatchShare(2, 8, rank, 2), sampling=sampling) for rank in range(2)]
    for step in (0, 5):
        one = [single.micro_batch(step, m) for m in range(4)]
        two = [ranks[r].micro_batch(step, m) for m in range(2) for r in range(2)]
        for (x1, y1), (x2, y2) in zip(one, two):
            assert (x1 == x2).all() and (y1 == y2).all()


def test_tokenized_options_build_packed_batches(tmp_path: Path) -> None:
    _, meta, _ = write_split(tmp_path, documents())
    options = TokenizedDataOptions(module="tokenized", dataset="d", packing="documents", mask_first_target=True)
    batches = options.batches(tmp_path, meta, "train", context_length=CONTEXT, share=BatchShare(2, 2), seed=0)
    assert isinstance(batches, PackedBatchSource) and batches.mask_first_target
    assert options.document_packing() is not None and options.document_packing().restart_positions
    assert TokenizedDataOptions(module="tokenized", dataset="d").document_packing() is None


def test_a_tokenizer_without_end_of_text_is_refused(tmp_path: Path) -> None:
    _, meta, _ = write_split(tmp_path, documents())
    char_meta = meta.model_copy(update={"eot_id": None, "tokenizer": {"module": "char"}, "tokenizer_name": "char"})
    options = TokenizedDataOptions(module="tokenized", dataset="d", packing="documents")
    with pytest.raises(DataError, match=r"^data.packing: documents needs an end-of-text id .* 'char' .* has none"):
        options.batches(tmp_path, char_meta, "train", context_length=CONTEXT, share=BatchShare(2, 2), seed=0)


def test_packing_keys_without_packing_are_refused() -> None:
    with pytest.raises(ValidationError, match="apply to data.packing: documents only"):
        TokenizedDataOptions(module="tokenized", dataset="d", mask_first_target=True)
    with pytest.raises(ValidationError, match="apply to data.packing: documents only"):
        TokenizedDataOptions(module="tokenized", dataset="d", restart_positions=False)


def test_packing_needs_the_default_ignore_index() -> None:
    tree = tiny_params(
        "corpus.txt", data={"packing": "documents"}, loss={"module": "autoregressive", "ignore_index": 5}
    )
    with pytest.raises(ParamsError, match=r"data.packing: .* targets of -100, but loss.ignore_index is 5"):
        validate_params(tree, "params.yaml")


def test_the_docs_example_is_valid_on_its_preset() -> None:
    text = (REPO / "docs" / "packing.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    overrides = [part for key, value in example["data"].items() for part in (f"--data.{key}", str(value).lower())]
    params = load(REPO / "params" / "tinystories_llama.yaml", overrides)
    assert params.data.document_packing() is not None and params.data.packing == "documents"
