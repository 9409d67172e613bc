"""HellaSwag during training (``TaskCurve``): the evaluate stage's figures on the file's first examples, the
schedule, the random state left as it was, the params rules, and 2 ranks giving the figures of one."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import Params
from nanugpt.distributed.process_group import DistInfo
from nanugpt.eval.hellaswag import HellaSwagError, evaluate_hellaswag
from nanugpt.eval.task_curve import TaskCurve
from nanugpt.files.hashing import sha256_file
from nanugpt.train.checkpointer import RESUME_KEYS

ONE_CPU = DistInfo(0, 0, 1, torch.device("cpu"))
ALPHABET = " abcdefghijklmnopqrstuvwxyz."
CONTEXT_LENGTH = 32
ROWS_PER_FORWARD = 8  # training.device_batch_size: 2 examples of 4 endings a forward


def encode(text: str) -> list[int]:
    """Character ids in ALPHABET; ValueError for any other character (as the char tokenizer)."""
    return [ALPHABET.index(c) for c in text]


def example(i: int) -> dict[str, Any]:
    """The i-th example: a context of a few words and four endings, the right one at ``i % 4``."""
    words = ["the cat", "a dog", "sat on", "the mat", "ran to", "a tree", "in the", "park."]
    return {
        "ctx": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 3)),
        "endings": [words[(3 * i + k) % len(words)] for k in range(4)],
        "label": i % 4,
    }


EXAMPLES = [example(i) for i in range(9)]
EXAMPLES[4] = {**EXAMPLES[4], "ctx": "Zebra"}  # Z is not in ALPHABET: skipped


def write_jsonl(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


def params_for(path: Path | None, **eval_keys: Any) -> Params:
    keys = {"tasks": ["hellaswag"], "tasks_every": 3, "tasks_examples": 7, "hellaswag_sha256": None, **eval_keys}
    if path is not None:
        keys["hellaswag_path"] = str(path)
    tree = tiny_params(
        "unused.txt",
        model={"context_length": CONTEXT_LENGTH, "dropout": 0.1},
        training={"device_batch_size": ROWS_PER_FORWARD, "global_batch_size": ROWS_PER_FORWARD},
        eval=keys,
    )
    return validate_params(tree, "test params")


def tiny_model(params: Params) -> torch.nn.Module:
    """A randomly initialised 2-layer nanogpt model (with dropout: a forward in train mode draws random numbers),
    from a seed where it is right on some examples and wrong on others."""
    torch.manual_seed(3)
    return params.model.build(len(ALPHABET))


def curve(params: Params, info: DistInfo = ONE_CPU, data_root: Path = Path("unused")) -> TaskCurve:
    return TaskCurve(params, data_root=data_root, encode=encode, info=info, dtype="float32", log=lambda line: None)


def test_the_figures_are_evaluate_hellaswags_on_the_first_examples(tmp_path: Path) -> None:
    # lines past tasks_examples are never read: a malformed one there is no error
    path = write_jsonl(tmp_path / "val.jsonl", EXAMPLES, tail="not json\n")
    params = params_for(path)
    lines: list[str] = []
    task_curve = TaskCurve(params, data_root=tmp_path, encode=encode, info=ONE_CPU, dtype="float32", log=lines.append)
    model = tiny_model(params)
    figures = task_curve.run(model, step=3)

    subset = write_jsonl(tmp_path / "first7.jsonl", EXAMPLES[:7])
    direct = evaluate_hellaswag(
        model,
        encode=encode,
        context_length=CONTEXT_LENGTH,
        rows_per_forward=ROWS_PER_FORWARD,
        info=ONE_CPU,
        dtype="float32",
        path=subset,
    )
    assert direct["examples"] == 6 and direct["skipped"] == 1
    assert 0 < direct["acc"] < 1 and 0 < direct["acc_norm"] < 1  # figures with something to compare
    assert figures == {"tasks/hellaswag_acc": direct["acc"], "tasks/hellaswag_acc_norm": direct["acc_norm"]}
    assert (
        lines[0]
        == f"HellaSwag every 3 steps: the first 7 examples of {path}, 1 skipped (text the tokenizer cannot encode)"
    )
    assert lines[1].startswith(
        f"step 3: hellaswag acc {direct['acc']:.4f} acc_norm {direct['acc_norm']:.4f} (6 examples"
    )


def test_a_run_leaves_the_model_in_train_mode_and_the_random_state_as_it_was(tmp_path: Path) -> None:
    params = params_for(write_jsonl(tmp_path / "val.jsonl", EXAMPLES))
    inner = tiny_model(params)

    class Noisy(torch.nn.Module):
        """The model, and a random draw at each forward: what scoring must not leave behind."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.rand(1)
            return self.inner(x)

    model = Noisy().train()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    figures = curve(params).run(model, step=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and inner.training
    assert all(p.grad is None for p in model.parameters())
    # the figures are those of the model in eval mode (no dropout): the same again
    assert curve(params).run(model, step=6) == figures


def test_the_schedule_is_every_tasks_every_steps_and_the_last() -> None:
    task_curve = curve(params_for(None, tasks_every=0))  # off: the file is not looked for
    assert not any(task_curve.should_run(step, final=step == 10) for step in range(1, 11))


def test_the_schedule_when_on(tmp_path: Path) -> None:
    task_curve = curve(params_for(write_jsonl(tmp_path / "val.jsonl", EXAMPLES)))
    assert [step for step in range(1, 11) if task_curve.should_run(step, final=step == 10)] == [3, 6, 9, 10]


def test_the_pinned_file_is_found_in_data_root(tmp_path: Path) -> None:
    """Without eval.hellaswag_path, the file evaluate downloads into DATA_ROOT/hellaswag/raw/ (here: already there)."""
    kept = write_jsonl(tmp_path / "hellaswag_val.jsonl", EXAMPLES)
    raw = tmp_path / "data" / "hellaswag" / "raw"
    raw.mkdir(parents=True)
    kept.rename(raw / kept.name)
    params = params_for(None, hellaswag_sha256=sha256_file(raw / kept.name))
    lines: list[str] = []
    TaskCurve(params, data_root=tmp_path / "data", encode=encode, info=ONE_CPU, dtype="float32", log=lines.append)
    assert str(raw / kept.name) in lines[0]
    with pytest.raises(HellaSwagError, match="eval.hellaswag_sha256"):
        curve(params_for(None, hellaswag_sha256="0" * 64), data_root=tmp_path / "data")


def test_a_tokenizer_that_encodes_no_example_stops_the_run(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "val.jsonl", [{**e, "ctx": "Zebra"} for e in EXAMPLES])
    with pytest.raises(HellaSwagError, match="cannot encode any of the first 7 examples .* set eval.tasks_every: 0"):
        curve(params_for(path))


def test_tasks_every_without_tasks_is_a_params_error() -> None:
    tree = tiny_params("unused.txt", eval={"tasks_every": 100})
    with pytest.raises(ParamsError) as raised:
        validate_params(tree, "params.yaml")
    assert raised.value.problems == [
        "params.yaml: eval.tasks_every: is 100 but eval.tasks is empty: name the benchmarks to score during "
        "training (eval.tasks: [hellaswag]) or set eval.tasks_every: 0"
    ]
    for key, value in (("tasks_every", -1), ("tasks_examples", 0)):
        with pytest.raises(ParamsError) as raised:
            validate_params(tiny_params("unused.txt", eval={"tasks": ["hellaswag"], key: value}), "params.yaml")
        assert [p.split(": ")[1] for p in raised.value.problems] == [f"eval.{key}"]


def test_the_curve_keys_leave_a_checkpoint_resumable() -> None:
    """A run resumes across a change of eval.tasks_every or eval.tasks_examples (the resume digest leaves them out)."""
    assert not any(key == "eval" or key.startswith("eval.") for key in RESUME_KEYS)
    off = params_for(None, tasks_every=0)
    on = params_for(None, tasks_every=50, tasks_examples=1000)
    assert off.digest(RESUME_KEYS) == on.digest(RESUME_KEYS)


def score_on_rank(rank: int, world_size: int, store: str, path: str, results: str) -> None:
    """One of ``world_size`` gloo processes: this rank's figures of the same model into ``results``-rank.json."""
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=60)  # a rank that dies fails the other's collectives soon, not in 30 min
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size, timeout=timeout)
    try:
        params = params_for(Path(path))
        info = DistInfo(rank, rank, world_size, torch.device("cpu"))
        figures = curve(params, info).run(tiny_model(params), step=3)
        Path(f"{results}-{rank}.json").write_text(json.dumps(figures))
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_figures_of_one(tmp_path: Path) -> None:
    """6 encodable examples, 2 a forward: rank 0 scores forwards 0 and 2, rank 1 forward 1 (and 0 again, not
    counted); the counts summed over the ranks give both the figures of one process."""
    path = write_jsonl(tmp_path / "val.jsonl", EXAMPLES)
    params = params_for(path)
    one = curve(params).run(tiny_model(params), step=3)
    mp.spawn(score_on_rank, args=(2, str(tmp_path / "store"), str(path), str(tmp_path / "figures")), nprocs=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"figures-{rank}.json").read_text()) == one
