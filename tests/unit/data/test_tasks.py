"""The algorithmic tasks: grokking and arithmetic data, their tokenizers and losses, and their presets."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO

from nanugpt.config.params import ParamsError
from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import read_meta
from nanugpt.data.arithmetic import ArithmeticDataOptions
from nanugpt.data.grokking import DIVISIONS, OPERATIONS, GrokkingDataOptions, Operation
from nanugpt.data.tasks import IGNORE_INDEX, TaskError
from nanugpt.data.tokenized import DataError
from nanugpt.data.tokenizers.arithmetic import EOT, PAD, ArithmeticTokenizerOptions
from nanugpt.data.tokenizers.grokking import GrokkingTokenizerOptions
from nanugpt.optim.losses import ArithmeticLossOptions, GrokkingLossOptions
from pipeline.schema import load
from stages import evaluate, generate, tokenize, train

# c = a op b mod p, written independently of nanugpt.data.grokking (division: the c with c * b = a)
REFERENCE = {
    "x+y": lambda a, b, p: (a + b) % p,
    "x-y": lambda a, b, p: (a - b) % p,
    "x*y": lambda a, b, p: a * b % p,
    "x/y": lambda a, b, p: next(c for c in range(p) if c * b % p == a),
    "x^2+y^2": lambda a, b, p: (a * a + b * b) % p,
    "x^2+xy+y^2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x^2+xy+y^2+x": lambda a, b, p: (a * a + a * b + b * b + a) % p,
    "x^3+xy": lambda a, b, p: (a**3 + a * b) % p,
    "x^3+xy^2+x": lambda a, b, p: (a**3 + a * b * b + a) % p,
    "(x//y)if(y%2==1)else(x-y)": lambda a, b, p: (a // b if b % 2 else a - b) % p,
}


def grokking(prime: int = 11, operation: str = "x+y", **options) -> GrokkingDataOptions:
    return GrokkingDataOptions(module="grokking", dataset="g", prime=prime, operation=operation, **options)


def arithmetic(**options) -> ArithmeticDataOptions:
    values = {"digits": 2, "train_problems": 300, "val_problems": 40} | options
    return ArithmeticDataOptions(module="arithmetic", dataset="a", **values)


def written(data, tokenizer, folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Tokenize ``data`` into ``folder``; return meta.json and each split's rows."""
    meta = data.tokenize(tokenizer, folder, folder / "raw")
    assert read_meta(folder) == meta
    rows = {
        s: np.fromfile(folder / f"{s}.bin", dtype=meta.dtype).reshape(-1, meta.row_length) for s in ("train", "val")
    }
    return meta, rows


def test_every_operation_is_listed_and_every_grokking_example_is_right(tmp_path: Path) -> None:
    assert set(OPERATIONS) == set(Operation.__args__) == set(REFERENCE)
    p = 11
    codec = GrokkingTokenizerOptions(module="grokking", prime=p).build()
    for number, (operation, reference) in enumerate(REFERENCE.items()):
        meta, rows = written(
            grokking(p, operation),
            GrokkingTokenizerOptions(module="grokking", prime=p),
            tmp_path / f"operation{number}",
        )
        seen = set()
        for row in np.concatenate([rows["train"], rows["val"]]).tolist():
            a, symbol, b, equals, c = codec.decode(row).split()
            assert symbol == OPERATIONS[operation][0] and equals == "="
            a, b, c = int(a), int(b), int(c)
            assert c == reference(a, b, p), (operation, a, b, c)
            seen.add((a, b))
        first_b = 1 if operation in DIVISIONS else 0
        assert seen == {(a, b) for a in range(p) for b in range(first_b, p)}  # every pair exactly once:
        assert meta.train_rows + meta.val_rows == len(seen)  # no train/val overlap


def test_grokking_split_is_seeded_by_split_seed_alone(tmp_path: Path) -> None:
    tokenizer = GrokkingTokenizerOptions(module="grokking", prime=97)
    meta, rows = written(grokking(97, "x/y", train_fraction=0.3), tokenizer, tmp_path / "a")
    again, _ = written(grokking(97, "x/y", train_fraction=0.3), tokenizer, tmp_path / "b")
    other, _ = written(grokking(97, "x/y", train_fraction=0.3, split_seed=1), tokenizer, tmp_path / "c")
    assert (meta.train_rows, meta.val_rows) == (int(0.3 * 97 * 96), 97 * 96 - int(0.3 * 97 * 96))
    assert meta.train_sha256 == again.train_sha256 and meta.val_sha256 == again.val_sha256
    assert meta.train_sha256 != other.train_sha256
    train_pairs = {tuple(r) for r in rows["train"][:, [0, 2]].tolist()}
    val_pairs = {tuple(r) for r in rows["val"][:, [0, 2]].tolist()}
    assert train_pairs.isdisjoint(val_pairs) and len(val_pairs) == meta.val_rows > 0


@pytest.mark.parametrize("operation", ["x/y", "x^3+xy^2+x"])
def test_large_primes_draw_distinct_pairs_without_the_table(tmp_path: Path, operation: str) -> None:
    p = 50021  # nanuGPT's prime50k: 2.5e9 pairs, never built
    tokenizer = GrokkingTokenizerOptions(module="grokking", prime=p)
    meta, rows = written(grokking(p, operation, sampled_examples=3000, train_fraction=0.6), tokenizer, tmp_path / "a")
    again, _ = written(grokking(p, operation, sampled_examples=3000, train_fraction=0.6), tokenizer, tmp_path / "b")
    other, _ = written(grokking(p, operation, sampled_examples=3000, split_seed=1), tokenizer, tmp_path / "c")
    assert (meta.train_rows, meta.val_rows, meta.vocab_size, meta.dtype) == (1800, 1200, p + 11, "uint16")
    assert (meta.train_sha256, meta.val_sha256) == (again.train_sha256, again.val_sha256)  # the seed decides
    assert other.train_sha256 != meta.train_sha256
    codec = tokenizer.build()
    train_pairs = {tuple(r) for r in rows["train"][:, [0, 2]].tolist()}
    val_pairs = {tuple(r) for r in rows["val"][:, [0, 2]].tolist()}
    assert len(train_pairs) == 1800 and len(val_pairs) == 1200 and train_pairs.isdisjoint(val_pairs)
    for a, op, b, equals, c in np.concatenate([rows["train"], rows["val"]]).tolist():
        assert (op, equals) == (codec.operator_id(OPERATIONS[operation][0]), codec.equals_id)
        assert c == (a * pow(b, p - 2, p) % p if operation == "x/y" else REFERENCE[operation](a, b, p))
    assert max(a for a, _ in train_pairs | val_pairs) > p // 2  # drawn over the whole range, not a corner


def test_large_primes_need_a_sample_of_at_most_half_the_pairs() -> None:
    with pytest.raises(ValueError, match="prime 50021 has 2,502,050,420 pairs, too many .* set data.sampled_examples"):
        grokking(50021, "x/y")
    with pytest.raises(ValueError, match=r"sampled_examples \(61\) is more than half of the 121 pairs mod 11"):
        grokking(11, sampled_examples=61)
    assert grokking(11, sampled_examples=60).n_examples() == 60
    with pytest.raises(ParamsError, match="data.prime: input should be less than or equal to 1000003"):
        load(REPO / "params" / "grokking_prime97.yaml", ["--data.prime", "1000033", "--tokenizer.prime", "1000033"])


def test_train_batches_are_pure_and_ranks_slice_the_global_batch(tmp_path: Path) -> None:
    data = grokking(97, "x-y")
    meta, rows = written(data, GrokkingTokenizerOptions(module="grokking", prime=97), tmp_path)

    def source(rank: int = 0, world: int = 1, seed: int = 3):
        return data.batches(tmp_path, meta, "train", context_length=4, share=BatchShare(8, 32, rank, world), seed=seed)

    whole = [source().micro_batch(5, m)[0] for m in range(4)]  # one process: 4 micro-steps of 8 rows
    ranks = [source(r, 2).micro_batch(5, m)[0] for m in range(2) for r in range(2)]  # 2 processes x 2 micro-steps
    assert torch.equal(torch.cat(whole), torch.cat(ranks))
    assert torch.equal(source().micro_batch(5, 1)[0], whole[1])  # a fresh source: the same batch (pure)
    assert not torch.equal(source().micro_batch(6, 0)[0], whole[0])
    assert not torch.equal(source(seed=4).micro_batch(5, 0)[0], whole[0])
    train_rows = {tuple(r) for r in rows["train"][:, :4].tolist()}
    assert {tuple(r) for r in torch.cat(whole).tolist()} <= train_rows  # whole examples of the train split


def test_val_batches_walk_the_split_once(tmp_path: Path) -> None:
    data = grokking(13, "x*y", train_fraction=0.4)
    meta, rows = written(data, GrokkingTokenizerOptions(module="grokking", prime=13), tmp_path)
    val = data.batches(tmp_path, meta, "val", context_length=4, share=BatchShare(16, 16), seed=0)
    batches = [val.micro_batch(i, 0)[0] for i in range(math.ceil(meta.val_rows / 16))]
    assert [len(b) for b in batches[:-1]] == [16] * (len(batches) - 1) and 0 < len(batches[-1]) <= 16
    assert torch.equal(torch.cat(batches), torch.from_numpy(rows["val"][:, :-1].astype(np.int64)))
    assert torch.equal(val.micro_batch(len(batches), 0)[0], batches[0])  # wraps around
    assert val.whole_split == len(batches)  # eval.eval_iters: null evaluates these, every example once


def test_eval_iters_null_is_the_whole_val_split_and_refused_for_sampled_val_batches(tmp_path: Path) -> None:
    from nanugpt.distributed.process_group import DistInfo
    from nanugpt.eval.evaluate import evaluate_split

    data = grokking(13, "x*y", train_fraction=0.4)
    meta, _ = written(data, GrokkingTokenizerOptions(module="grokking", prime=13), tmp_path)
    val = data.batches(tmp_path, meta, "val", context_length=4, share=BatchShare(16, 16), seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(meta.vocab_size, 8), torch.nn.Linear(8, meta.vocab_size))
    one = DistInfo(0, 0, 1, torch.device("cpu"))
    figures = {
        iters: evaluate_split(
            model, val, iters=iters, info=one, dtype="float32", loss_fn=GrokkingLossOptions(module="grokking").build()
        )
        for iters in (None, val.whole_split, 1)
    }
    assert figures[None] == figures[val.whole_split] != figures[1]
    with pytest.raises(ParamsError, match="eval.eval_iters: null .* not 'tokenized': set a count"):
        load(REPO / "params.yaml", ["--eval.eval_iters", "null"])


def test_grokking_targets_are_the_answer_only(tmp_path: Path) -> None:
    data = grokking(97, "x/y")
    meta, _ = written(data, GrokkingTokenizerOptions(module="grokking", prime=97), tmp_path)
    x, y = data.batches(tmp_path, meta, "train", context_length=4, share=BatchShare(64, 64), seed=0).micro_batch(0, 0)
    assert x.shape == y.shape == (64, 4) and x.dtype == y.dtype == torch.int64
    assert (y[:, :-1] == IGNORE_INDEX).all()
    assert all(c * b % 97 == a for a, b, c in zip(x[:, 0].tolist(), x[:, 2].tolist(), y[:, -1].tolist()))
    assert (x[:, 3] == meta.equals_id).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_arithmetic_examples_masks_and_split(tmp_path: Path, reverse: bool) -> None:
    data = arithmetic(digits=2, train_problems=500, val_problems=60, reverse_answer=reverse)
    meta, rows = written(data, ArithmeticTokenizerOptions(module="arithmetic"), tmp_path)
    codec = ArithmeticTokenizerOptions(module="arithmetic").build()
    assert meta.row_length == 11 and (meta.train_rows, meta.val_rows) == (500, 60)
    pairs = {}
    for split in ("train", "val"):
        pairs[split] = set()
        for row in rows[split].tolist():
            text = codec.decode(row)
            problem, _, rest = text.partition("=")
            a, b = map(int, problem.split("*"))
            answer = rest[: rest.index(EOT)]
            assert (answer[::-1] if reverse else answer) == str(a * b), text
            pads = 11 - len(problem) - 1 - len(answer) - 1  # a row: problem, '=', answer, EOT, pads
            assert rest[rest.index(EOT) + len(EOT) :] == PAD * pads
            pairs[split].add((a, b))
    assert len(pairs["train"]) == 500 and len(pairs["val"]) == 60 and pairs["train"].isdisjoint(pairs["val"])

    val = data.batches(tmp_path, meta, "val", context_length=10, share=BatchShare(60, 60), seed=0)
    x, y = val.micro_batch(0, 0)  # the whole val split, in order
    assert torch.equal(x, torch.from_numpy(rows["val"][:, :-1].astype(np.int64)))
    for row, targets in zip(rows["val"].tolist(), y.tolist()):
        answer_at = [j for j, t in enumerate(targets) if t != IGNORE_INDEX]  # target j is row token j + 1
        after_equals = row.index(codec.equals_id)
        assert answer_at == list(range(after_equals, after_equals + len(answer_at)))
        assert codec.decode([targets[j] for j in answer_at]) == codec.decode(row).split("=")[1].split(EOT)[0] + EOT


def test_bad_task_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="data.prime: must be a prime .*, got 91$"):
        load(REPO / "params" / "grokking_prime97.yaml", ["--data.prime", "91"])
    with pytest.raises(ValueError, match="both need at least one"):
        grokking(2, "x/y", train_fraction=0.4)  # 2 examples: 0 for train
    with pytest.raises(ValueError, match="validation split must not be empty"):
        arithmetic(val_problems=0)
    with pytest.raises(ValueError, match="exceeds the 100 distinct problems"):
        arithmetic(digits=1, train_problems=90, val_problems=11)
    with pytest.raises(TaskError, match="tokenizer.prime \\(13\\) differs from data.prime \\(11\\)"):
        grokking(11).tokenize(GrokkingTokenizerOptions(module="grokking", prime=13), tmp_path, tmp_path)
    with pytest.raises(TaskError, match="needs tokenizer.module arithmetic"):
        arithmetic().tokenize(GrokkingTokenizerOptions(module="grokking"), tmp_path, tmp_path)


def test_token_files_of_other_options_or_a_short_context_are_refused(tmp_path: Path) -> None:
    meta, _ = written(grokking(11), GrokkingTokenizerOptions(module="grokking", prime=11), tmp_path)
    with pytest.raises(DataError, match="re-run the tokenize stage"):
        grokking(11, train_fraction=0.3).batches(
            tmp_path, meta, "train", context_length=4, share=BatchShare(8, 8), seed=0
        )
    with pytest.raises(DataError, match="set model.context_length to 4"):
        grokking(11).batches(tmp_path, meta, "train", context_length=3, share=BatchShare(8, 8), seed=0)


def test_tokenizers_round_trip() -> None:
    grok = GrokkingTokenizerOptions(module="grokking", prime=97).build()
    assert grok.vocab_size == 97 + 1 + len(OPERATIONS) and grok.encode("3 + 5 = 8")[::2] == [3, 5, 8]
    for text in ("96 / 3 = 32", "0 x^3+xy^2+x 1 ="):
        assert grok.decode(grok.encode(text)) == text
    assert grok.encode(grok.decode(list(range(grok.vocab_size)))) == list(range(grok.vocab_size))
    with pytest.raises(ValueError, match="'97' is not a grokking token"):
        grok.encode("97 + 1 = 1")

    arith = ArithmeticTokenizerOptions(module="arithmetic").build()
    assert arith.vocab_size == 14 and arith.encode("09") == [0, 9]
    text = f"123*45=5535{EOT}{PAD}{PAD}"
    assert arith.decode(arith.encode(text)) == text and len(arith.encode(text)) == 14
    assert arith.encode(arith.decode(list(range(14)))) == list(range(14))
    with pytest.raises(ValueError, match="'\\+' is not an arithmetic token"):
        arith.encode("1+2=3")


def test_grokking_loss_and_accuracy_use_the_last_position_only() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 6)
    targets = torch.full((4, 3), IGNORE_INDEX)
    targets[:, -1] = torch.tensor([1, 2, 3, 4])
    logits[:, -1, :] = 0.0
    logits[[0, 1, 2, 3], -1, [1, 2, 3, 0]] = 5.0  # rows 0-2 right, row 3 wrong
    loss_fn = GrokkingLossOptions(module="grokking").build()
    assert loss_fn.metric_names == ("accuracy",)
    correct, count = loss_fn.metrics(logits, targets)["accuracy"]
    assert (correct.item(), count.item()) == (3, 4)
    assert torch.isclose(loss_fn(logits, targets), F.cross_entropy(logits[:, -1], targets[:, -1]))
    other = logits.clone()
    other[:, :-1] = torch.randn(4, 2, 6)  # earlier positions count for nothing
    assert torch.equal(loss_fn(other, targets), loss_fn(logits, targets))


def test_arithmetic_loss_counts_answer_tokens_and_whole_problems() -> None:
    targets = torch.tensor(
        [
            [IGNORE_INDEX, 3, 4, 12],  # 3 answer tokens, all right -> solved
            [IGNORE_INDEX, IGNORE_INDEX, 5, 12],  # 2 answer tokens, one wrong -> not solved
            [IGNORE_INDEX, 7, 8, 12],  # 3 answer tokens, one wrong -> not solved
            [IGNORE_INDEX] * 4,  # no answer: not a problem, counts for nothing
        ]
    )
    predicted = torch.tensor([[0, 3, 4, 12], [9, 9, 5, 11], [1, 7, 0, 12], [1, 2, 3, 4]])
    logits = F.one_hot(predicted, 14).float() * 4.0  # (B, T, V)
    loss_fn = ArithmeticLossOptions(module="arithmetic").build()
    figures = {name: (s.item(), c.item()) for name, (s, c) in loss_fn.metrics(logits, targets).items()}
    assert figures == {"token_accuracy": (6, 8), "exact_match": (1, 3)}
    answer = targets != IGNORE_INDEX
    assert torch.isclose(loss_fn(logits, targets), F.cross_entropy(logits[answer], targets[answer]))


SHRINK = {
    "grokking_prime97": ["--data.prime", "13", "--tokenizer.prime", "13", "--generate.prompt", "5 / 3 ="],
    "arithmetic": [
        "--data.digits",
        "2",
        "--data.train_problems",
        "400",
        "--data.val_problems",
        "50",
        "--model.context_length",
        "10",
        "--generate.prompt",
        "12*34=",
        "--generate.max_new_tokens",
        "5",
        "--scheduler.cooldown_steps",
        "1",
    ],
}
METRICS = {"grokking_prime97": ["val_accuracy"], "arithmetic": ["val_token_accuracy", "val_exact_match"]}


@pytest.mark.parametrize("preset", sorted(SHRINK))
def test_preset_tokenizes_trains_evaluates_and_generates(tmp_path: Path, preset: str) -> None:
    small = [
        "--general.device_type",
        "cpu",
        "--training.max_steps",
        "3",
        "--training.device_batch_size",
        "16",
        "--training.global_batch_size",
        "32",
        "--training.checkpoint_every",
        "0",
        "--eval.eval_every",
        "2",
        "--eval.eval_iters",
        "2",
        "--model.n_layer",
        "1",
        "--model.n_embd",
        "32",
        "--scheduler.warmup_steps",
        "1",
    ]
    params = load(REPO / "params" / f"{preset}.yaml", SHRINK[preset] + small)
    meta = tokenize.run(params, data_root=tmp_path / "data")
    assert meta.val_rows > 0
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert summary["step"] == 3 and math.isfinite(summary["train_loss"])
    with open(tmp_path / "out" / "plots" / "val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 3]
    assert all(0 <= float(r[name]) <= 1 for r in rows for name in METRICS[preset])
    metrics = evaluate.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    assert all(0 <= metrics[name] <= 1 for name in METRICS[preset])
    assert generate.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")[0].startswith(
        params.generate.prompt
    )


def test_presets_as_written_validate() -> None:
    for preset in SHRINK:
        params = load(REPO / "params" / f"{preset}.yaml")
        assert params.model.module == "tiny_transformer" and params.optimizer.module == "adamw"
    grok = load(REPO / "params" / "grokking_prime97.yaml")
    val_rows = grok.data.n_examples() - grok.data.n_train()
    assert grok.eval.eval_iters == math.ceil(val_rows / grok.training.device_batch_size)  # every val example once
    empty = "data.val_problems: the validation split must not be empty: set it to 1 or more, got 0$"
    with pytest.raises(ParamsError, match=empty):
        load(REPO / "params" / "arithmetic.yaml", ["--data.val_problems", "0"])


def test_tokenizer_prime_must_match_data_prime(tmp_path: Path) -> None:
    from nanugpt.config.loader import load_yaml_tree
    from nanugpt.config.params import ParamsError, validate_params

    tree = load_yaml_tree(REPO / "params" / "grokking_prime97.yaml")
    tree["tokenizer"]["prime"] = 89
    del tree["launch"]  # the pipeline's section, not the library's
    with pytest.raises(ParamsError, match=r"tokenizer.prime: must equal data.prime \(97\), got 89"):
        validate_params(tree, "test")


def test_multi_length_arithmetic_has_every_length_in_one_dataset(tmp_path: Path) -> None:
    data = arithmetic(min_digits=1, digits=3, train_problems=100, val_problems=20)
    assert data.shares() == [(33, 6), (33, 7), (34, 7)]  # the remainder goes to the longest lengths
    meta, rows = written(data, ArithmeticTokenizerOptions(module="arithmetic"), tmp_path)
    codec = ArithmeticTokenizerOptions(module="arithmetic").build()
    lengths: dict[str, list[int]] = {"train": [], "val": []}
    problems: dict[str, set[tuple[int, int]]] = {"train": set(), "val": set()}
    for split in ("train", "val"):
        for row in rows[split].tolist():
            text = codec.decode(row).replace(PAD, "")
            a, rest = text.split("*")
            b, c = rest.split("=")
            assert len(a) == len(b) and int(c.removesuffix(EOT)) == int(a) * int(b)  # both operands n digits
            lengths[split].append(len(a))
            problems[split].add((int(a), int(b)))
    assert [lengths["train"].count(n) for n in (1, 2, 3)] == [33, 33, 34]
    assert [lengths["val"].count(n) for n in (1, 2, 3)] == [6, 7, 7]
    assert not problems["train"] & problems["val"] and len(problems["train"]) == 100  # distinct, no overlap
    assert meta.row_length == 4 * 3 + 3 and "1- to 3-digit" in meta.source


def test_multi_length_arithmetic_refuses_a_length_too_short_for_its_share() -> None:
    with pytest.raises(ValueError, match="give 90 problems with 1-digit operands, more than the 81 distinct"):
        arithmetic(min_digits=1, digits=2, train_problems=170, val_problems=10)
    with pytest.raises(ValueError, match=r"min_digits \(3\) must be <= digits \(2\)"):
        arithmetic(min_digits=3, digits=2)
