"""HellaSwag in the evaluate stage: scores of a model whose answers are known, batching that changes no loss, the
file's download and checks, and 2 processes under torchrun giving the figures of one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, tiny_params, write_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.distributed.process_group import DistInfo
from nanugpt.eval.hellaswag import (
    Example,
    HellaSwagError,
    ending_row,
    example_rows,
    hellaswag_file,
    read_examples,
    row_losses,
    score_examples,
)
from nanugpt.files.hashing import sha256_file
from pipeline.schema import load
from stages import evaluate, tokenize, train

ONE_CPU = DistInfo(0, 0, 1, torch.device("cpu"))

# A bigram model over the characters of ALPHABET: after a character, the next one in ALPHABET (cyclically: "f" is
# followed by " ") has probability 0.7, the one after that 0.2, each of the other five 0.02.
ALPHABET = " abcdef"
NEXT, SECOND, OTHER = -math.log(0.7), -math.log(0.2), -math.log(0.02)  # the losses of those three steps


def encode(text: str) -> list[int]:
    """Character ids in ALPHABET; ValueError for any other character (as the char tokenizer)."""
    return [ALPHABET.index(c) for c in text]


class Bigram(torch.nn.Module):
    """Logits (B, T, V) of ids (B, T): the log-probabilities of the next character given the current one."""

    def __init__(self) -> None:
        super().__init__()
        V = len(ALPHABET)
        step = torch.tensor([(j - i) % V for j in range(V) for i in range(V)]).view(V, V).t()  # step[i][j] = j - i
        self.log_probs = torch.full((V, V), -OTHER).masked_fill(step == 1, -NEXT).masked_fill(step == 2, -SECOND)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs[x]


def hand_loss(context: str, ending: str) -> float:
    """The bigram's summed loss of ``" " + ending`` after ``context``, step by step."""
    text = context[-1] + " " + ending
    loss = {1: NEXT, 2: SECOND}
    return sum(loss.get((ALPHABET.index(b) - ALPHABET.index(a)) % len(ALPHABET), OTHER) for a, b in zip(text, text[1:]))


ENDINGS_1 = ("b", "abcdf", "d", "ae")  # after "f": sums 1.97 / 3.39 / 4.27 / 4.63, means 0.98 / 0.57 / 2.13 / 1.54
ENDINGS_2 = ("d", "ab", "ae", "b")  # after "f": sums 4.27 / 1.07 / 4.63 / 1.97, means 2.13 / 0.36 / 1.54 / 0.98
# after "e" (e -> " " is a second step): sums 3.22 / 5.52 / 4.65 / 5.88, means 1.61 / 2.76 / 0.77 / 1.96
ENDINGS_3 = ("b", "d", "abcdf", "ae")
EXAMPLES = [
    Example("cdef", ENDINGS_1, 0),  # right by sum, wrong by mean
    Example("abcdef", ENDINGS_1, 1),  # wrong by sum, right by mean
    Example("f", ENDINGS_2, 1),  # right by both
    Example("bdf", ENDINGS_2, 3),  # wrong by both
    Example("abcde", ENDINGS_3, 2),  # wrong by sum, right by mean
    Example("xyz", ENDINGS_2, 1),  # not encodable: skipped
]
KNOWN = {"acc": 2 / 5, "acc_norm": 3 / 5, "examples": 5, "skipped": 1}


def test_hand_losses_give_the_known_answers() -> None:
    """The premise of the next test: the hand losses rank the endings as the comments say."""
    right_by_sum = right_by_mean = 0
    for example in EXAMPLES[:5]:
        sums = [hand_loss(example.context, ending) for ending in example.endings]
        means = [total / (len(ending) + 1) for total, ending in zip(sums, example.endings)]
        right_by_sum += sums.index(min(sums)) == example.label
        right_by_mean += means.index(min(means)) == example.label
    assert (right_by_sum, right_by_mean) == (2, 3)


@pytest.mark.parametrize("examples_per_forward", [1, 2, 5])
@pytest.mark.parametrize(
    "context_length", [6, 64]
)  # 6: rows lose context ids but keep the last, so a bigram loses nothing
def test_a_bigram_model_scores_as_computed_by_hand(examples_per_forward: int, context_length: int) -> None:
    model = Bigram()
    figures = score_examples(
        model,
        EXAMPLES,
        encode=encode,
        context_length=context_length,
        examples_per_forward=examples_per_forward,
        info=ONE_CPU,
        dtype="float32",
    )
    assert figures == pytest.approx(KNOWN)
    for example in EXAMPLES[:5]:
        rows = example_rows(example, encode, 64)
        assert rows is not None
        sums, counts = row_losses(model, rows, torch.device("cpu"), "float32")
        assert sums.tolist() == pytest.approx([hand_loss(example.context, e) for e in example.endings], abs=1e-5)
        assert counts.tolist() == [len(e) + 1 for e in example.endings]


def test_rows_keep_the_last_context_length_plus_one_ids() -> None:
    assert ending_row([1, 2, 3], [4, 5], 8) == ([1, 2, 3, 4, 5], 2)
    assert ending_row([1, 2, 3], [4, 5], 3) == ([2, 3, 4, 5], 2)
    assert ending_row([1, 2], [3, 4, 5, 6], 3) == ([3, 4, 5, 6], 3)  # the first kept id has nothing before it


def tiny_gpt(vocab_size: int, context_length: int = 32) -> torch.nn.Module:
    """A randomly initialised 2-layer nanogpt model."""
    tree = tiny_params("unused.txt", model={"context_length": context_length})
    torch.manual_seed(0)
    return validate_params(tree, "test params").model.build(vocab_size).eval()


def test_batched_rows_have_the_losses_of_one_row_at_a_time() -> None:
    """Right-padding rows of different lengths into one forward changes no row's loss (a causal model)."""
    model = tiny_gpt(len(ALPHABET))
    rows = [r for example in EXAMPLES[:5] for r in example_rows(example, encode, 32) or []]
    sums, counts = row_losses(model, rows, torch.device("cpu"), "float32")
    for (ids, scored), total, count in zip(rows, sums.tolist(), counts.tolist()):
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]))[0]
        reference = F.cross_entropy(logits[-scored:], torch.tensor(ids[-scored:]), reduction="sum").item()
        assert total == pytest.approx(reference, rel=1e-5)
        assert count == scored


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_examples_are_read_as_the_official_file_has_them(tmp_path: Path) -> None:
    official_line = {
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "split": "val",
        "split_type": "indomain",
        "label": 3,
        "endings": ["is using wrap.", "is ripping tiles off.", "is holding a cube.", "starts pulling up roofing."],
        "source_id": "activitynet~v_-JhWjGDPHMY",
    }
    path = write_jsonl(tmp_path / "val.jsonl", [official_line])
    assert read_examples(path) == [Example("A man is sitting on a roof. he", tuple(official_line["endings"]), 3)]


@pytest.mark.parametrize(
    "record",
    [{"ctx": "a", "endings": ["b", "c"], "label": 2}, {"ctx": "", "endings": ["b", "c"], "label": 0}, {"ctx": "a"}],
)
def test_a_malformed_line_is_an_error_naming_it(tmp_path: Path, record: dict[str, Any]) -> None:
    path = write_jsonl(tmp_path / "val.jsonl", [{"ctx": "a", "endings": ["b", "c"], "label": 1}, record])
    with pytest.raises(HellaSwagError, match=rf"{tmp_path / 'val.jsonl'}:2: expected"):
        read_examples(path)


def test_the_file_is_downloaded_once_and_checked(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "hellaswag_val.jsonl", [{"ctx": "a", "endings": ["b", "c"], "label": 1}])
    sha = sha256_file(source)
    url = source.as_uri()  # urllib reads file:// URLs: the download path without a network
    root = tmp_path / "data"
    path = hellaswag_file(None, sha, root, url)
    assert path == root / "hellaswag" / "raw" / "hellaswag_val.jsonl"
    assert path.read_bytes() == source.read_bytes()
    source.unlink()
    assert hellaswag_file(None, sha, root, url) == path  # the copy in DATA_ROOT: no second download
    with pytest.raises(HellaSwagError, match=f"sha256 is {sha}, expected {'0' * 64}"):
        hellaswag_file(None, "0" * 64, root, url)
    with pytest.raises(HellaSwagError, match="cannot download .* or give its path in eval.hellaswag_path"):
        hellaswag_file(None, sha, tmp_path / "elsewhere", url)


def test_a_local_file_is_checked_too(tmp_path: Path) -> None:
    local = write_jsonl(tmp_path / "mine.jsonl", [{"ctx": "a", "endings": ["b", "c"], "label": 1}])
    assert hellaswag_file(str(local), None, tmp_path / "data") == local
    assert not (tmp_path / "data").exists()
    with pytest.raises(HellaSwagError, match=r"eval.hellaswag_path .*: sha256 is"):
        hellaswag_file(str(local), "0" * 64, tmp_path / "data")
    with pytest.raises(HellaSwagError, match="no such file"):
        hellaswag_file(str(tmp_path / "missing.jsonl"), None, tmp_path / "data")


def test_an_unknown_task_stops_at_load_time() -> None:
    tree = tiny_params("unused.txt", eval={"tasks": ["hellaswagg"]})
    with pytest.raises(ParamsError) as raised:
        validate_params(tree, "params.yaml")
    assert any("eval.tasks" in problem and "hellaswag" in problem for problem in raised.value.problems)


# Examples in the tiny corpus's characters (the char tokenizer knows no others), the right ending a line of it.
CORPUS_EXAMPLES = [
    {"ctx": "First Citizen:\nBefore we proceed", "endings": ["any further", "hear", "All:", "rather"], "label": 0},
    {"ctx": "All:\nSpeak,", "endings": ["speak.", "resolved", "famish", "Citizen"], "label": 0},
    {"ctx": "You are all resolved rather to", "endings": ["die", "hear", "me", "we"], "label": 0},
    {"ctx": "Resolved.", "endings": ["resolved.", "proceed", "speak", "further"], "label": 0},
    {"ctx": "hear me", "endings": ["speak.", "Speak", "die", "First"], "label": 0},
    {"ctx": "First", "endings": ["Citizen:", "All:", "famish?", "any"], "label": 0},
    {"ctx": "Zebra (7)", "endings": ["one", "two", "three", "four"], "label": 0},  # Z, (, 7 and ) are unknown
]


def trained_run(tmp_path: Path, corpus: Path) -> Path:
    """A tiny char model trained a few steps; its params file asks for HellaSwag on CORPUS_EXAMPLES."""
    examples = write_jsonl(tmp_path / "examples.jsonl", CORPUS_EXAMPLES)
    tree = tiny_params(
        corpus,
        training={"max_steps": 6, "checkpoint_every": 0, "peak_flops": 1e12},
        eval={"eval_every": 0, "tasks": ["hellaswag"], "hellaswag_path": str(examples), "hellaswag_sha256": None},
        model={"context_length": 32},
    )
    params_file = write_params(tmp_path / "params.yaml", tree)
    params = load(params_file)
    tokenize.run(params, data_root=tmp_path / "data")
    train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    return params_file


def test_the_evaluate_stage_writes_hellaswag_figures(tmp_path: Path, corpus: Path) -> None:
    params_file = trained_run(tmp_path, corpus)
    metrics = evaluate.run(load(params_file), data_root=tmp_path / "data", out_dir=tmp_path / "out")
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == metrics
    assert {k: v for k, v in written.items() if k.startswith("hellaswag_")}.keys() == {
        "hellaswag_acc",
        "hellaswag_acc_norm",
        "hellaswag_examples",
        "hellaswag_skipped",
    }
    assert (written["hellaswag_examples"], written["hellaswag_skipped"]) == (6, 1)
    # the figures are the scorer's on the same model, tokenizer and examples
    from nanugpt.checkpoint.store import load_trained_model
    from nanugpt.config.token_meta import read_meta
    from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta

    model, _, _ = load_trained_model(tmp_path / "out" / "checkpoints" / "last.pt", torch.device("cpu"))
    tokenizer = tokenizer_from_meta(read_meta(tmp_path / "data" / "tiny" / "char"))
    examples = read_examples(tmp_path / "examples.jsonl")
    direct = score_examples(
        model,
        examples,
        encode=tokenizer.encode,
        context_length=32,
        examples_per_forward=1,
        info=ONE_CPU,
        dtype="float32",
    )
    assert written["hellaswag_acc"] == direct["acc"] and written["hellaswag_acc_norm"] == direct["acc_norm"]


def test_no_task_no_figures(tmp_path: Path, corpus: Path) -> None:
    params_file = trained_run(tmp_path, corpus)
    metrics = evaluate.run(load(params_file, ["--eval.tasks", "[]"]), tmp_path / "data", tmp_path / "out")
    assert "val_loss" in metrics and not any(k.startswith("hellaswag") for k in metrics)


@pytest.mark.slow
def test_two_processes_give_the_figures_of_one(tmp_path: Path, corpus: Path) -> None:
    params_file = trained_run(tmp_path, corpus)
    one = evaluate.run(load(params_file, ["--training.device_batch_size", "4"]), tmp_path / "data", tmp_path / "out")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATA_ROOT": str(tmp_path / "data"),
        "OUT_DIR": str(tmp_path / "out"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    # 4 rows a forward: one example each, 6 forwards, 3 a rank
    command += ["-m", "stages.evaluate", str(params_file), "--training.device_batch_size", "4"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    two = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {k: v for k, v in two.items() if k.startswith("hellaswag_")} == {
        k: v for k, v in one.items() if k.startswith("hellaswag_")
    }
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-6)
    assert result.stdout.count("hellaswag_acc ") == 1  # only rank 0 prints the figures
