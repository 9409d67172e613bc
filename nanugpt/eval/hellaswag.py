"""HellaSwag: which of four endings of a sentence the model finds most likely, scored by the endings' loss.

The benchmark is the official validation file, ``hellaswag_val.jsonl`` of
github.com/rowanz/hellaswag (10,042 examples): one JSON object per line with
``ctx`` (the context), ``endings`` (four strings) and ``label`` (the index of
the right ending). A file of the same format works too (``eval.hellaswag_path``).

An example is scored completion style, as build-nanogpt (Karpathy's GPT-2
reproduction) scores it: for each ending, the tokens of ``ctx`` followed by the
tokens of ``" " + ending`` (each encoded alone) are one row, and the model's
cross-entropy on the ending's tokens, given everything before them, gives the
ending a summed and a mean loss. The example counts as right

- for ``acc`` when the right ending has the lowest summed loss (the highest log-likelihood);
- for ``acc_norm`` when it has the lowest mean loss per token.

lm-evaluation-harness's ``hellaswag`` task differs: it builds the context from
``activity_label``, ``ctx_a`` and ``ctx_b``, removes WikiHow's bracketed
artefacts, encodes context and ending together, and for ``acc_norm`` divides
the log-likelihood by the ending's length in characters (its ``acc`` rule is
ours). For GPT-2 124M (OpenAI's weights) build-nanogpt reports acc 0.2859 /
acc_norm 0.2955 with this scoring and 0.2892 / 0.3114 from the harness.

A row longer than the model's context keeps its last ``context_length + 1``
tokens (the start of the context goes). An example with text the tokenizer
cannot encode (a ``char`` vocabulary fitted on a corpus without some character)
is skipped and counted.

Examples are scored in file order, ``examples_per_forward`` at a time (rows
right-padded to the longest); under ``torchrun`` rank ``r`` of ``W`` scores
forwards ``r, r + W, ...`` and the counts are summed over ranks. Each forward
holds the same rows whatever the world size, so 1 and N processes give the same
figures. During training (``eval.tasks_every``), ``nanugpt.eval.task_curve``
scores the file's first ``eval.tasks_examples`` examples the same way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nanugpt.distributed.device import autocast_context
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import UserError
from nanugpt.files.download import DownloadFailed, download_once, file_name
from nanugpt.files.hashing import check_sha256

HELLASWAG_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
IGNORE_INDEX = -100  # the target of a position whose loss does not count

Row = tuple[list[int], int]  # (token ids, how many of the last ids are scored)
Encoded = tuple[int, list[Row]]  # (the right ending's index, a row per ending)


class HellaSwagError(UserError):
    """A HellaSwag file that cannot be found, downloaded, verified or read."""


@dataclass(frozen=True)
class Example:
    """One multiple-choice example: the context, its candidate endings and the index of the right one."""

    context: str
    endings: tuple[str, ...]
    label: int


def hellaswag_file(local: str | None, sha256: str | None, data_root: Path, url: str = HELLASWAG_VAL_URL) -> Path:
    """The HellaSwag file to score: ``local`` when given, else ``url`` downloaded once into
    ``data_root/hellaswag/raw/``; its sha256 is checked against ``sha256`` (None: not checked)."""
    check = functools.partial(check_sha256, expected=sha256, key="eval.hellaswag_sha256", error=HellaSwagError)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise HellaSwagError(f"eval.hellaswag_path {local!r}: no such file")
        check(path, "eval.hellaswag_path")
        return path
    target = data_root / "hellaswag" / "raw" / file_name(url)
    try:
        return download_once(url, target, check, timeout_s=60)
    except DownloadFailed as exc:
        raise HellaSwagError(
            f"{exc}. Without network, copy the file to {target} or give its path in eval.hellaswag_path"
        ) from None


def read_examples(path: Path, limit: int | None = None) -> list[Example]:
    """The examples of a HellaSwag JSONL file (blank lines skipped), the first ``limit`` of them when given (the
    lines after them are not read); a malformed line is an error naming it."""
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if line.strip():
                examples.append(parse_example(line, f"{path}:{number}"))
    if not examples:
        raise HellaSwagError(f"{path}: no examples")
    return examples


def parse_example(line: str, where: str) -> Example:
    """One JSONL line as an ``Example``; ``where`` (file:line) starts the error message."""
    expected = 'expected {"ctx": "<non-empty text>", "endings": ["<text>", "<text>", ...], "label": <ending index>}'
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HellaSwagError(f"{where}: not JSON ({exc.msg}); {expected}") from None
    if not isinstance(record, dict):
        raise HellaSwagError(f"{where}: {expected}")
    context, endings, label = record.get("ctx"), record.get("endings"), record.get("label")
    if (
        not isinstance(context, str)
        or not context
        or not isinstance(endings, list)
        or len(endings) < 2
        or not all(isinstance(ending, str) for ending in endings)
        or not isinstance(label, int)
        or isinstance(label, bool)
        or not 0 <= label < len(endings)
    ):
        raise HellaSwagError(f"{where}: {expected}")
    return Example(context, tuple(endings), label)


def ending_row(context_ids: Sequence[int], ending_ids: Sequence[int], context_length: int) -> Row:
    """The row scoring ``ending_ids`` after ``context_ids``: at most ``context_length + 1`` ids (the oldest go),
    with the number of scored ids at its end (each needs the id before it)."""
    ids = [*context_ids, *ending_ids][-(context_length + 1) :]
    return ids, min(len(ending_ids), len(ids) - 1)


def example_rows(example: Example, encode: Callable[[str], list[int]], context_length: int) -> list[Row] | None:
    """One row per ending of ``example``; None when the tokenizer cannot encode its text."""
    try:
        context = encode(example.context)
        endings = [encode(" " + ending) for ending in example.endings]
    except ValueError:  # e.g. a character outside a char tokenizer's vocabulary
        return None
    return [ending_row(context, ending, context_length) for ending in endings]


def row_losses(
    model: torch.nn.Module, rows: Sequence[Row], device: torch.device, dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of each row's scored ids and their count, from one forward of the rows right-padded to
    the longest: two (len(rows),) tensors."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, scored) in enumerate(rows):
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, n - scored : n] = torch.tensor(ids[n + 1 - scored :])
    x, y = x.to(device), y.to(device)
    with autocast_context(device, dtype):
        logits = model(x)  # (B, T, padded vocab)
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return losses.view(len(rows), T).sum(dim=1), (y != IGNORE_INDEX).sum(dim=1)


def encode_examples(
    examples: Sequence[Example], encode: Callable[[str], list[int]], context_length: int
) -> list[Encoded]:
    """The label and rows of each example the tokenizer can encode (``example_rows``), in order."""
    return [(example.label, rows) for example in examples if (rows := example_rows(example, encode, context_length))]


def per_forward(examples: Sequence[Example], rows_per_forward: int) -> int:
    """How many examples make about ``rows_per_forward`` rows (at least one)."""
    return max(1, rows_per_forward // max(len(example.endings) for example in examples))


def score_encoded(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    *,
    examples_per_forward: int,
    info: DistInfo,
    dtype: str,
) -> dict[str, float | int]:
    """``acc``, ``acc_norm`` and ``examples`` (scored) over ``encoded`` (``encode_examples``), this rank scoring
    its share of the forwards and the counts summed over ranks (see the module docstring). ``model`` is put in
    eval mode and back in the mode it was in; no gradient is kept."""
    chunks = [encoded[i : i + examples_per_forward] for i in range(0, len(encoded), examples_per_forward)]
    right = right_norm = scored = 0
    rounds = -(-len(chunks) // info.world_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for index in range(info.rank, rounds * info.world_size, info.world_size):
            # Every rank runs the same number of forwards (a sharded model gathers its parameters from all ranks
            # in each); a rank past the last chunk runs chunk 0 again and leaves it out of the counts.
            chunk = chunks[index if index < len(chunks) else 0]
            sums, tokens = row_losses(model, [row for _, rows in chunk for row in rows], info.device, dtype)
            if index >= len(chunks):
                continue
            sums, tokens = sums.cpu(), tokens.cpu()  # one device sync a forward, not one an example
            start = 0
            for label, rows in chunk:
                total, count = sums[start : start + len(rows)], tokens[start : start + len(rows)]
                right += int(total.argmin()) == label
                right_norm += int((total / count).argmin()) == label
                scored += 1
                start += len(rows)
    model.train(was_training)
    counts = torch.tensor([right, right_norm, scored], dtype=torch.long, device=info.device)
    if info.world_size > 1:
        torch.distributed.all_reduce(counts)
    right, right_norm, scored = counts.tolist()
    return {"acc": right / max(scored, 1), "acc_norm": right_norm / max(scored, 1), "examples": scored}


def score_examples(
    model: torch.nn.Module,
    examples: Sequence[Example],
    *,
    encode: Callable[[str], list[int]],
    context_length: int,
    examples_per_forward: int,
    info: DistInfo,
    dtype: str,
) -> dict[str, float | int]:
    """``acc``, ``acc_norm``, ``examples`` (scored) and ``skipped`` (not encodable) over ``examples``
    (``score_encoded`` of ``encode_examples``)."""
    encoded = encode_examples(examples, encode, context_length)
    figures = score_encoded(model, encoded, examples_per_forward=examples_per_forward, info=info, dtype=dtype)
    return {**figures, "skipped": len(examples) - len(encoded)}


def evaluate_hellaswag(
    model: torch.nn.Module,
    *,
    encode: Callable[[str], list[int]],
    context_length: int,
    rows_per_forward: int,
    info: DistInfo,
    dtype: str,
    path: Path,
) -> dict[str, float | int]:
    """HellaSwag's figures (``score_examples``) on the file at ``path``, about ``rows_per_forward`` rows a forward."""
    examples = read_examples(path)
    return score_examples(
        model,
        examples,
        encode=encode,
        context_length=context_length,
        examples_per_forward=per_forward(examples, rows_per_forward),
        info=info,
        dtype=dtype,
    )
