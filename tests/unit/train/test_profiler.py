"""``training.profile``: a ``torch.profiler`` window over real optimizer steps of a tiny model, its Chrome trace
(and memory events) under ``OUT_DIR/profile/``, nothing when off, and the params keys' validation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import tiny_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import ProfileParams
from nanugpt.distributed.process_group import DistInfo
from nanugpt.train.checkpointer import RESUME_KEYS
from nanugpt.train.profiler import StepProfiler

CPU = torch.device("cpu")
MAIN = DistInfo(0, 0, 1, CPU)


def train(profiler: StepProfiler, steps: range, close: bool = True) -> None:
    """Optimizer steps ``steps`` of a few Linear layers with AdamW, ``profiler.step`` after each, as the loop does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 16), torch.randn(8, 4)
    try:
        for step in steps:
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            profiler.step(step)
    finally:
        if close:
            profiler.close()


def profiler_at(out: Path, info: DistInfo = MAIN, **options: Any) -> tuple[StepProfiler, list[str]]:
    lines: list[str] = []
    return StepProfiler(ProfileParams(enabled=True, **options), out, info, lines.append), lines


def events(trace: Path) -> list[dict[str, Any]]:
    with trace.open() as f:
        return json.load(f)["traceEvents"]


def profiler_steps(trace: Path) -> list[int]:
    """The optimizer steps of the trace's ``ProfilerStep#<step>`` ranges."""
    return sorted(int(m[1]) for e in events(trace) if (m := re.fullmatch(r"ProfilerStep#(\d+)", e.get("name", ""))))


def test_the_window_records_steps_start_plus_one_to_start_plus_steps(tmp_path: Path) -> None:
    profiler, lines = profiler_at(tmp_path, start_step=2, steps=3)
    train(profiler, range(1, 9))
    assert sorted(p.name for p in (tmp_path / "profile").iterdir()) == ["trace-rank0-step5.json"]
    trace = tmp_path / "profile" / "trace-rank0-step5.json"
    assert profiler_steps(trace) == [3, 4, 5]
    names = {e.get("name") for e in events(trace)}
    assert {"aten::addmm", "aten::mse_loss"} <= names and any(n.startswith("Optimizer.step#AdamW") for n in names)
    assert "[memory]" not in names
    assert lines == [f"profile: steps 3-5 of rank 0 written to {trace} (chrome://tracing or ui.perfetto.dev)"]


def test_off_costs_a_bool_and_creates_nothing(tmp_path: Path) -> None:
    profiler = StepProfiler(ProfileParams(), tmp_path, MAIN, print)
    assert not profiler.on
    train(profiler, range(1, 4))
    assert not (tmp_path / "profile").exists()


def test_memory_on_cpu_adds_allocation_events(tmp_path: Path) -> None:
    profiler, _ = profiler_at(tmp_path, start_step=1, steps=1, memory=True)
    train(profiler, range(1, 3))
    memory = [e for e in events(tmp_path / "profile" / "trace-rank0-step2.json") if e.get("name") == "[memory]"]
    assert memory and {"Bytes", "Total Allocated"} <= set(memory[0]["args"])
    assert not list((tmp_path / "profile").glob("*.pickle"))  # the allocator snapshot is CUDA's


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # this CPU build drops the CUDA activity
def test_memory_on_cuda_dumps_the_allocator_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path on a CPU machine: the allocator's history calls stood in for, the files as on a GPU."""
    calls: list[Any] = []
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", lambda **kw: calls.append(kw))
    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", lambda path: Path(path).write_bytes(b"snapshot"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append(device))
    profiler, lines = profiler_at(tmp_path, DistInfo(0, 0, 1, torch.device("cuda")), start_step=1, steps=2, memory=True)
    train(profiler, range(1, 5))
    folder = tmp_path / "profile"
    assert sorted(p.name for p in folder.iterdir()) == ["memory-rank0-step3.pickle", "trace-rank0-step3.json"]
    assert (folder / "memory-rank0-step3.pickle").read_bytes() == b"snapshot"
    assert calls == [{"max_entries": 100_000}, torch.device("cuda"), {"enabled": None}]  # sync, then stop recording
    assert "memory-rank0-step3.pickle (chrome://tracing or ui.perfetto.dev, pytorch.org/memory_viz)" in lines[0]


def test_close_mid_window_writes_the_steps_recorded(tmp_path: Path) -> None:
    profiler, lines = profiler_at(tmp_path, start_step=1, steps=10)
    train(profiler, range(1, 4))  # max_steps 3: the loop ends inside the window
    trace = tmp_path / "profile" / "trace-rank0-step3.json"
    assert profiler_steps(trace) == [2, 3, 4]  # 4: the part of step 4 up to close() (here: none of its work)
    assert lines[0].startswith("profile: steps 2-3 of rank 0")
    profiler.close()  # twice is harmless
    assert [p.name for p in (tmp_path / "profile").iterdir()] == [trace.name]


def test_a_run_resumed_at_or_past_start_step_does_not_profile(tmp_path: Path) -> None:
    profiler, _ = profiler_at(tmp_path, start_step=2, steps=2)
    train(profiler, range(3, 7))  # resumed from step 2: the first step it completes is 3
    assert not (tmp_path / "profile").exists() and not profiler.on


def test_ranks_main_profiles_rank_0_only_all_every_rank(tmp_path: Path) -> None:
    second = DistInfo(1, 1, 2, CPU)
    assert not profiler_at(tmp_path, second, start_step=1, steps=1)[0].on
    profiler, _ = profiler_at(tmp_path, second, start_step=1, steps=1, ranks="all")
    train(profiler, range(1, 3))
    assert profiler_steps(tmp_path / "profile" / "trace-rank1-step2.json") == [2]


def test_profile_keys_validate_and_leave_the_resume_digest_alone(tmp_path: Path) -> None:
    on = {"enabled": True, "start_step": 3, "steps": 2, "memory": True, "ranks": "all"}
    params = validate_params(tiny_params(tmp_path, training={"profile": on}), "p.yaml")
    assert params.training.profile == ProfileParams(**on)
    off = validate_params(tiny_params(tmp_path), "p.yaml")
    assert off.training.profile == ProfileParams() and not off.training.profile.enabled
    assert params.digest(RESUME_KEYS) == off.digest(RESUME_KEYS)
    bad = {"steps": 0, "start_step": 0, "ranks": "some", "memroy": True}
    with pytest.raises(ParamsError) as error:
        validate_params(tiny_params(tmp_path, training={"profile": bad}), "p.yaml")
    message = str(error.value)
    for key in ("steps", "start_step", "ranks", "memroy"):
        assert f"training.profile.{key}" in message, message
    assert "did you mean 'memory'" in message
    with pytest.raises(ParamsError, match=r"training.profile.start_step: must be below training.max_steps \(20\)"):
        validate_params(tiny_params(tmp_path, training={"profile": {"enabled": True, "start_step": 20}}), "p.yaml")
