"""Sharded (DCP) checkpoints: step folders that appear only complete, resuming on another number of ranks and
across strategies, damaged folders skipped, and the other stages reading them in one process."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import launch, launch_env, losses, one_process, run_params, write_params

from nanugpt.checkpoint import sharded
from nanugpt.checkpoint.store import CheckpointError, load_trained_model
from pipeline.schema import load
from stages import evaluate, export, generate, tokenize, train


def fsdp_params(corpus: Path, max_steps: int, **training: Any) -> dict[str, Any]:
    """Tiny nanoGPT params under fsdp, a checkpoint every 2 steps, the 5 newest kept."""
    params = run_params(corpus, "nanogpt", strategy="fsdp", checkpoint_every=2, keep_last=5, log_every=1, **training)
    params["training"]["max_steps"] = max_steps
    return params


def resume(tmp_path: Path, params: dict[str, Any], out: str, nproc: int) -> list[float]:
    """Continue the run in ``tmp_path/out`` with ``nproc`` processes (1: in this process); its losses."""
    if nproc > 1:
        return launch(tmp_path, params, out, nproc)
    loaded = load(write_params(tmp_path / f"{out}.yaml", params))
    train.run(loaded, data_root=tmp_path / "data", out_dir=tmp_path / out)
    return losses(tmp_path / out)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux ``/proc``), children first."""
    found: list[int] = []
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        found += [int(child), *descendants(int(child))]
    return found


@pytest.mark.slow
def test_sigkill_at_four_ranks_resumes_at_two_and_at_one(tmp_path: Path, corpus: Path) -> None:
    params = fsdp_params(corpus, 40)
    reference = one_process(tmp_path, {**params, "training": {**params["training"], "strategy": "ddp"}}, "reference")
    params_file = write_params(tmp_path / "four.yaml", {**params, "launch": {"nproc_per_node": 4}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.launch", str(params_file)],
        cwd=tmp_path,
        env=launch_env(tmp_path / "data", tmp_path / "four"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = tmp_path / "four" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "step-0000004").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [*reversed(descendants(proc.pid)), proc.pid]:  # the workers first, mid-step, like a lost node
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "four" / "train_summary.json").exists(), "the run ended before it was killed"
    saved = sharded.newest_complete(checkpoints)
    assert saved is not None and 4 <= saved[1]["step"] < 40
    assert len(list((checkpoints / "step-0000004").glob("*.distcp"))) == 4  # one shard file per rank

    for nproc in (2, 1):
        shutil.copytree(tmp_path / "four", tmp_path / f"to{nproc}", symlinks=True)
        curve = resume(tmp_path, params, f"to{nproc}", nproc)
        assert len(curve) == 40
        print(f"4 -> {nproc} ranks: max relative difference", max(abs(a - b) / a for a, b in zip(curve, reference)))
        assert curve == pytest.approx(reference, rel=1e-4)


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp_and_back(tmp_path: Path, corpus: Path) -> None:
    params = fsdp_params(corpus, 8)
    ddp = {**params, "training": {**params["training"], "strategy": "ddp"}}
    reference = one_process(tmp_path, ddp, "reference")
    launch(tmp_path, ddp, "run", 2)
    checkpoints = tmp_path / "run" / "checkpoints"
    for name in ("step-0000006.pt", "step-0000008.pt", "last.pt"):  # as if stopped after step 4
        (checkpoints / name).unlink()
    curve = launch(tmp_path, params, "run", 2)  # ddp .pt -> fsdp on 2 ranks
    assert curve == pytest.approx(reference, rel=1e-4)
    assert (checkpoints / "last").resolve().name == "step-0000008" and not (checkpoints / "last.pt").exists()
    shutil.rmtree(checkpoints / "step-0000008")  # as if stopped after step 6
    curve = resume(tmp_path, ddp, "run", 1)  # fsdp folder -> ddp, one process
    assert curve == pytest.approx(reference, rel=1e-4)
    assert (checkpoints / "last.pt").exists() and not (checkpoints / "last").exists()


@pytest.mark.slow
def test_a_damaged_folder_is_skipped_for_the_one_before(tmp_path: Path, corpus: Path) -> None:
    params = fsdp_params(corpus, 6)
    reference = one_process(tmp_path, params, "run")  # one process under fsdp: step folders, unsharded
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in sharded.step_folders(checkpoints)] == ["step-0000002", "step-0000004", "step-0000006"]
    shard = next((checkpoints / "step-0000006").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated after it was renamed into place
    (checkpoints / ".step-0000008.tmp").mkdir()  # and a killed run's unfinished folder
    assert "shard __0_0.distcp is missing or truncated" in str(sharded.problem(checkpoints / "step-0000006"))
    with pytest.raises(CheckpointError, match="incomplete or damaged sharded checkpoint"):
        load_trained_model(checkpoints / "step-0000006", torch.device("cpu"))
    loaded = load(write_params(tmp_path / "again.yaml", params))
    train.run(loaded, data_root=tmp_path / "data", out_dir=tmp_path / "run")
    assert losses(tmp_path / "run") == pytest.approx(reference, rel=1e-6)
    assert (checkpoints / "last").resolve().name == "step-0000006" and sharded.problem(checkpoints / "last") is None
    assert not (checkpoints / ".step-0000008.tmp").exists()


def test_a_folder_is_renamed_into_place_only_when_written(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    model_state, optimizer_state = sharded.model_optimizer_state(model, optimizer)
    run_state = {"step": 3, "params": {}, "vocab_size": 3}
    state = {"model": model_state, "optimizer": optimizer_state, **run_state}
    for step in (1, 2, 3):
        sharded.save_step(tmp_path, step, {**state, "step": step}, keep_last=2)
    assert [p.name for p in sharded.step_folders(tmp_path)] == ["step-0000002", "step-0000003"]
    assert os.readlink(tmp_path / "last") == "step-0000003"
    assert not list(tmp_path.glob(".*"))  # no temporary folder left
    assert sharded.read_run_state(tmp_path / "last") == run_state
    (tmp_path / "step-0000003" / ".metadata").unlink()
    assert sharded.newest_complete(tmp_path)[0].name == "step-0000002"  # type: ignore[index]

    fresh = torch.nn.Linear(3, 2)
    sharded.load_model(tmp_path / "step-0000002", fresh)
    assert torch.equal(fresh.weight, model.weight)


class RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def test_metadata_that_carries_code_is_refused_unread(tmp_path: Path) -> None:
    folder = tmp_path / "step-0000001"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(RunsCode()))
    torch.save({"step": 1}, folder / "run.pt")
    assert "refused: .metadata names posix.system" in str(sharded.problem(folder))
    with pytest.raises(CheckpointError, match="refused"):
        load_trained_model(folder, torch.device("cpu"))
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_evaluate_generate_export_read_a_sharded_checkpoint_like_a_whole_one(tmp_path: Path, corpus: Path) -> None:
    params = fsdp_params(corpus, 4)
    params["generate"] = {"prompt": "First", "num_samples": 1, "max_new_tokens": 20, "temperature": 0.0}
    loaded = load(write_params(tmp_path / "stages.yaml", params))
    tokenize.run(loaded, data_root=tmp_path / "data")
    launch(tmp_path, params, "sharded", 2)
    folder = tmp_path / "sharded" / "checkpoints" / "last"
    assert len(list(folder.glob("*.distcp"))) == 2
    # the same weights as a .pt checkpoint, as a DDP run would have written them
    model, _, run_state = load_trained_model(folder, torch.device("cpu"))
    whole = tmp_path / "whole" / "model"  # as the train stage publishes it
    whole.mkdir(parents=True)
    torch.save({**run_state, "model": model.state_dict()}, whole / "last.pt")

    outputs = {}
    for out in ("sharded", "whole"):
        kwargs = {"data_root": tmp_path / "data", "out_dir": tmp_path / out}
        metrics = evaluate.run(loaded, **kwargs)
        text = generate.run(loaded, **kwargs)
        hf = export.run(loaded, **kwargs)
        outputs[out] = (metrics, text, json.loads((hf / "config.json").read_text()), hf)
    assert outputs["sharded"][0] == outputs["whole"][0]  # val loss, ppl, step
    assert outputs["sharded"][1] == outputs["whole"][1]  # greedy text
    assert outputs["sharded"][2] == outputs["whole"][2]
    transformers = pytest.importorskip("transformers")
    ids = torch.tensor([[1, 2, 3, 4]])
    logits = [
        transformers.AutoModelForCausalLM.from_pretrained(outputs[out][3])(ids).logits for out in ("sharded", "whole")
    ]
    assert torch.equal(logits[0], logits[1])
    assert torch.allclose(logits[0][..., : model.vocab_size], model(ids)[..., : model.vocab_size], atol=1e-5)


def test_fuzz_100_damaged_step_folders_are_each_refused_in_one_line(tmp_path: Path) -> None:
    """Issue 30, case 6 for sharded checkpoints: a byte flipped in any file of a folder (a shard, ``.metadata``,
    ``run.pt``) is a CheckpointError naming the folder, never a traceback or a load; so is a torn
    ``checksums.json``."""
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 8)).sum().backward()
    optimizer.step()
    model_state, optimizer_state = sharded.model_optimizer_state(model, optimizer)
    original = sharded.save_folder(
        tmp_path / "step-0000001",
        {"model": model_state, "optimizer": optimizer_state, "step": 1, "params": {}, "vocab_size": 4},
    )
    files = sorted(p.name for p in original.iterdir() if p.name != sharded.CHECKSUMS)
    assert (original / sharded.CHECKSUMS).is_file() and ".metadata" in files and "run.pt" in files
    rng = random.Random(30)
    for trial in range(100):
        folder = tmp_path / f"damaged-{trial}"
        shutil.copytree(original, folder)
        victim = folder / rng.choice(files)
        data = bytearray(victim.read_bytes())
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        victim.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=f"{folder}"):
            sharded.read_run_state(folder)
    torn = tmp_path / "torn"
    shutil.copytree(original, torn)
    (torn / sharded.CHECKSUMS).write_text('{"run.pt": {"sha2')
    with pytest.raises(CheckpointError, match="checksums.json is damaged"):
        sharded.read_run_state(torn)
