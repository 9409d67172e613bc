"""``generate.checkpoint`` and ``export.checkpoint``: ``last`` (default), ``best``, or a path (nanuGPT's
``checkpoint_name``)."""

from __future__ import annotations

import json
import random
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import call_main, killed_at_random, time_in_child, tiny_params, write_params

from nanugpt.checkpoint.store import CheckpointError, load_checkpoint, newest_loadable, save_checkpoint, save_state
from nanugpt.config.params import load_params
from nanugpt.config.schema import Params
from nanugpt.files.atomic import remove_stale_temporaries
from nanugpt.files.checksum import checksum_path
from nanugpt.files.hashing import sha256_file
from pipeline import paths
from stages import evaluate, export, generate, tokenize, train


@pytest.fixture
def trained(tmp_path: Path, corpus: Path) -> tuple[Params, Path, Path]:
    """A tiny run of 20 steps with step checkpoints at 10 and 20 and a best.pt."""
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params(corpus)))
    data, out = tmp_path / "data", tmp_path / "out"
    tokenize.run(params, data_root=data)
    train.run(params, data_root=data, out_dir=out)
    return params, data, out


def with_choice(params: Params, section: str, choice: str) -> Params:
    """``params`` with ``<section>.checkpoint`` set to ``choice``."""
    return params.model_copy(update={section: getattr(params, section).model_copy(update={"checkpoint": choice})})


def test_last_and_best_name_the_files_of_the_model_folder(tmp_path: Path) -> None:
    assert paths.chosen_checkpoint("last", tmp_path) == tmp_path / "model" / "last.pt"
    assert paths.chosen_checkpoint("best", tmp_path) == tmp_path / "model" / "best.pt"
    assert paths.chosen_checkpoint("runs/a/step-0000010.pt", tmp_path) == Path("runs/a/step-0000010.pt")


def test_the_default_is_last_for_both_stages(params_file: Path) -> None:
    params = load_params(params_file)
    assert params.generate.checkpoint == "last" and params.export.checkpoint == "last"


def test_generate_samples_from_the_checkpoint_it_names(trained: tuple[Params, Path, Path]) -> None:
    params, data, out = trained
    step_10 = out / "checkpoints" / "step-0000010.pt"
    by_default = generate.run(params, data_root=data, out_dir=out)
    assert generate.run(with_choice(params, "generate", "last"), data_root=data, out_dir=out) == by_default
    early = generate.run(with_choice(params, "generate", str(step_10)), data_root=data, out_dir=out)
    assert early != by_default  # ten steps less training: other weights, other text
    best_step = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["step"]
    best = generate.run(with_choice(params, "generate", "best"), data_root=data, out_dir=out)
    assert best == (by_default if best_step == 20 else early)


def test_a_missing_checkpoint_is_named(trained: tuple[Params, Path, Path], tmp_path: Path) -> None:
    params, data, out = trained
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint"):
        generate.run(with_choice(params, "generate", str(tmp_path / "nope.pt")), data_root=data, out_dir=out)


def test_export_writes_the_checkpoint_it_names(trained: tuple[Params, Path, Path]) -> None:
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    params, data, out = trained
    step_10 = out / "checkpoints" / "step-0000010.pt"
    folder = export.run(with_choice(params, "export", str(step_10)), data_root=data, out_dir=out)
    exported = load_file(folder / "model.safetensors")
    state = torch.load(step_10, weights_only=True)["model"]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    name = "transformer.wte.weight"
    assert torch.equal(exported[name], state[name]) and not torch.equal(exported[name], last[name])


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one_saying_so(
    trained: tuple[Params, Path, Path], capsys
) -> None:
    """Issue 30, case 6: a flipped byte in last.pt's tensors went unnoticed (evaluate printed a null val loss, a
    resume advised a lower lr); one in its pickle was a KeyError traceback with no fallback (the fuzz below)."""
    params, data, out = trained
    checkpoints = out / "checkpoints"
    assert json.loads((checkpoints / "step-0000020.pt.sha256").read_text())["sha256"] == sha256_file(
        checkpoints / "last.pt"
    )
    flip_byte(checkpoints / "last.pt", (checkpoints / "last.pt").stat().st_size // 2)  # tensor data; step-20 too
    with pytest.raises(CheckpointError, match=r"last.pt: damaged: its sha256 differs from the one in last.pt.sha256"):
        evaluate.run(params, data_root=data, out_dir=out)
    assert train.run(params, data_root=data, out_dir=out)["step"] == 20
    printed = capsys.readouterr().out
    assert "last.pt: damaged" in printed and "step-0000020.pt: damaged" in printed
    assert "resumed from step 10" in printed and "last.pt now points at step-0000010.pt" in printed


@pytest.mark.parametrize("content", [b"", b"plain text\n", Path("/etc/passwd").read_bytes(), b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path: Path, content: bytes) -> None:
    """Issue 30, case 6: ``last.pt`` replaced by text and ``--generate.checkpoint /etc/passwd`` were tracebacks."""
    path = tmp_path / "given.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: unreadable, truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file \\(it is a folder\\)"):
        load_checkpoint(tmp_path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not a nanuGPT checkpoint \\(it has no params, step, vocab_size\\)"):
        load_checkpoint(path)


def test_generate_given_a_file_that_is_not_a_checkpoint_exits_in_one_line(
    trained: tuple[Params, Path, Path], monkeypatch
) -> None:
    _, data, out = trained
    monkeypatch.chdir(out.parent)  # where the fixture wrote params.yaml
    monkeypatch.setenv("OUT_DIR", str(out))
    monkeypatch.setenv("DATA_ROOT", str(data))
    code, _, err = call_main(generate.main, ["--generate.checkpoint", "/etc/passwd"])
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: /etc/passwd: unreadable"), err


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    """XOR the byte at ``offset`` of ``path`` with ``mask``, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def fuzz_state() -> dict[str, Any]:
    """A checkpoint's shape at a small size: a model's and an optimizer's tensors, params and counters."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(65, 16), torch.nn.Linear(16, 65))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "params": {"model": {"n": 1}},
        "step": 7,
        "vocab_size": 65,
    }


def test_fuzz_200_damaged_checkpoints_give_no_traceback_and_no_silent_success(tmp_path: Path) -> None:
    """Issue 30, acceptance: random byte flips at random offsets, each caught as a one-line CheckpointError. Without
    the checksum file, a flip still never escapes as another exception (a flip in tensor data then loads: the
    checksum is what catches it)."""
    rng = random.Random(30)
    original = tmp_path / "original.pt"
    save_state(original, fuzz_state())
    size = original.stat().st_size
    outcomes: dict[str, int] = {"caught": 0, "silent without checksum": 0}
    for trial in range(200):
        damaged = tmp_path / f"damaged-{trial}.pt"
        shutil.copy(original, damaged)
        shutil.copy(checksum_path(original), checksum_path(damaged))
        flip_byte(damaged, rng.randrange(size), rng.randrange(1, 256))
        with pytest.raises(CheckpointError):
            load_checkpoint(damaged)
        outcomes["caught"] += 1
        checksum_path(damaged).unlink()
        try:
            load_checkpoint(damaged)
            outcomes["silent without checksum"] += 1
        except CheckpointError:
            pass
    assert outcomes["caught"] == 200
    print(outcomes)


@pytest.mark.slow
def test_saves_killed_at_20_moments_leave_the_newest_whole_checkpoint_and_no_temporary(tmp_path: Path) -> None:
    """Issue 30, the save kill family: SIGKILL at a random moment of a run of saves (step file, its checksum,
    ``last.pt``, pruning), then the next run's clean-up and resume: no temporary is left, ``last.pt`` and every
    step file with a checksum load intact, and the resume takes the newest of them."""
    folder = tmp_path / "checkpoints"
    state = fuzz_state()

    def saves(first: int) -> None:
        for step in range(first, first + 5):
            save_checkpoint(folder, step, {**state, "step": step}, keep_last=3)

    saves(1)
    within = time_in_child(lambda: saves(6))
    rng, killed = random.Random(30), 0
    for _ in range(20):
        newest_before = newest_loadable(folder)[1]["step"]  # type: ignore[index]
        killed += killed_at_random(partial(saves, newest_before + 1), within_s=within, rng=rng)
        remove_stale_temporaries(folder)
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
        for step_file in folder.glob("step-*.pt"):
            if checksum_path(step_file).exists():
                assert load_checkpoint(step_file)["step"] == int(step_file.stem[5:])
        path, resumed = newest_loadable(folder)  # type: ignore[misc]
        assert resumed["step"] >= newest_before and path.name == "last.pt"
    print(f"{killed} of 20 saves killed before they ended")
