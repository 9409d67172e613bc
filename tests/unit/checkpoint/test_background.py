"""Asynchronous checkpoints (``training.async_checkpoint``): the writer's order and errors, copies that training
cannot change, the same losses and files as blocking saves, FSDP's ``async_save`` on 2 ranks, and a process
killed at several moments of a background write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, launch, one_process, run_params, tiny_params, write_params

from nanugpt.checkpoint import sharded, store
from nanugpt.checkpoint.background import BackgroundWriter, staged
from pipeline.schema import load
from stages import tokenize


def test_writes_run_in_order_and_a_save_waits_only_for_earlier_steps() -> None:
    writer, done, release = BackgroundWriter(), [], threading.Event()

    def slow(name: str) -> None:
        release.wait(10)
        done.append(name)

    writer.submit(10, lambda: lambda: slow("best-10"))
    started = time.perf_counter()
    writer.submit(10, lambda: lambda: done.append("step-10"))  # the same step: queued, no wait
    assert time.perf_counter() - started < 1 and done == []
    threading.Timer(0.3, release.set).start()
    writer.submit(20, lambda: lambda: done.append("step-20"))  # a later step: waits for step 10's writes
    assert done[:2] == ["best-10", "step-10"]
    writer.wait()
    assert done == ["best-10", "step-10", "step-20"] and not writer.busy


def test_a_failed_write_is_raised_by_the_next_save_and_drops_the_queue() -> None:
    writer, done, queued = BackgroundWriter(), [], threading.Event()

    def fail() -> None:
        queued.wait()  # fails once the next write is queued behind it (else the queueing itself would raise)
        raise OSError("disk gone")

    writer.submit(1, lambda: fail)
    writer.submit(1, lambda: lambda: done.append("after"))  # queued behind the failure: never written
    queued.set()
    with pytest.raises(OSError, match="disk gone"):
        writer.submit(2, lambda: lambda: done.append("next"))
    assert done == []
    writer.submit(3, lambda: lambda: done.append("later"))  # the error was raised once; the writer goes on
    writer.wait()
    assert done == ["later"]


def test_staged_state_is_a_copy_training_cannot_change() -> None:
    weight = torch.ones(3)
    state = {"model": {"w": weight}, "opt": [(weight * 2, 5)], "step": 7}
    copy = staged(state)
    weight.add_(1)
    assert torch.equal(copy["model"]["w"], torch.ones(3)) and torch.equal(copy["opt"][0][0], torch.full((3,), 2.0))
    assert copy["opt"][0][1] == 5 and copy["step"] == 7 and isinstance(copy["opt"][0], tuple)


def async_params(corpus: Path, **training: object) -> dict:
    params = tiny_params(corpus, training={"log_every": 1, "checkpoint_every": 5, **training})
    params["eval"] = {"eval_every": 5, "eval_iters": 2}
    return params


def test_async_saves_give_the_same_losses_and_checkpoints_and_resume_exactly(tmp_path: Path, corpus: Path) -> None:
    blocking = one_process(tmp_path, async_params(corpus), "blocking")
    background = one_process(tmp_path, async_params(corpus, async_checkpoint=True), "background")
    assert background == blocking and len(blocking) == 20  # bitwise, step by step
    for name in ("step-0000010.pt", "step-0000020.pt", "best.pt"):
        ours, theirs = (
            store.load_checkpoint(tmp_path / run / "checkpoints" / name) for run in ("background", "blocking")
        )
        assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items()), name
        assert ours["step"] == theirs["step"] and ours["val_loss"] == theirs["val_loss"]
    log = (tmp_path / "background" / "logs" / "checkpoints.jsonl").read_text().splitlines()
    assert sorted((r["kind"], r["step"]) for r in map(json.loads, log) if r["kind"] == "step") == [
        ("step", s) for s in (5, 10, 15, 20)
    ]
    # killed after step 10's checkpoint: the resumed run continues bitwise
    folder = tmp_path / "background" / "checkpoints"
    for name in ("step-0000015.pt", "step-0000020.pt"):
        (folder / name).unlink()
    store.point_last_at(folder, folder / "step-0000010.pt")
    resumed = one_process(tmp_path, async_params(corpus, async_checkpoint=True), "background")
    assert resumed[10:] == blocking[10:]


@pytest.mark.slow
def test_fsdp_async_save_on_two_ranks_matches_blocking_saves_and_resumes(tmp_path: Path, corpus: Path) -> None:
    params = run_params(corpus, "nanogpt", strategy="fsdp", log_every=1, checkpoint_every=2, keep_last=4)
    tokenize.run(load(write_params(tmp_path / "tokenize.yaml", params)), data_root=tmp_path / "data")
    blocking = launch(tmp_path, params, "blocking", 2)
    async_params_ = {**params, "training": {**params["training"], "async_checkpoint": True}}
    background = launch(tmp_path, async_params_, "background", 2)
    assert background == blocking and len(blocking) == 8
    folder = tmp_path / "background" / "checkpoints"
    assert [p.name for p in sharded.step_folders(folder)] == [f"step-{s:07d}" for s in (2, 4, 6, 8)]
    for path in sharded.step_folders(folder):
        assert sharded.read_run_state(path, "full")["step"] == int(path.name[5:])  # complete, checksums match
    assert not list(folder.glob(".*.tmp"))
    for name in ("step-0000006", "step-0000008"):
        shutil.rmtree(folder / name)
    sharded.point_last_at(folder, folder / "step-0000004")
    resumed = one_process(tmp_path, async_params_, "background")  # one process continues the 2 ranks' folder
    assert resumed[4:] == pytest.approx(blocking[4:], rel=1e-4)


WRITER_SCRIPT = """
import sys, time
from pathlib import Path
import torch
from nanugpt.checkpoint import store
from nanugpt.checkpoint.background import BackgroundWriter, staged
from pipeline.schema import load
from stages import tokenize

folder = Path(sys.argv[1])
def state(step):
    torch.manual_seed(step)
    return {"model": {"w": torch.randn(12_000_000)}, "params": {}, "step": step, "vocab_size": 5}
store.save_checkpoint(folder, 1, state(1), 5)
writer = BackgroundWriter()
copy = staged(state(2))
writer.submit(2, lambda: lambda: store.save_checkpoint(folder, 2, copy, 5))
print("writing", flush=True)
writer.wait()
print("written", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("moment", [0.0, 0.05, 0.15, 0.3])
def test_a_process_killed_during_a_background_write_keeps_the_last_complete_checkpoint(
    tmp_path: Path, moment: float
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        time.sleep(moment)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    path, state = store.newest_loadable(folder, verify="full")  # type: ignore[misc]
    assert path.name == "last.pt" and state["step"] in (1, 2)
    for candidate in folder.glob("step-*.pt"):  # a file under its own name is complete and intact
        assert store.load_checkpoint(candidate, verify="full")["step"] == int(candidate.stem[5:])
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert all(".tmp-" in name for name in leftovers), leftovers  # only temporaries, which a run removes


def test_tied_weights_stay_one_tensor_in_the_copy() -> None:
    embedding = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight
    state = {"wte": embedding.state_dict()["weight"], "head": head.state_dict()["weight"], "other": torch.ones(2)}
    copy = staged(state)
    assert copy["wte"] is copy["head"] and copy["wte"].data_ptr() != embedding.weight.data_ptr()
    assert copy["other"] is not copy["wte"]
