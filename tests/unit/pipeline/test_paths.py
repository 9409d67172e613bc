"""Every stage checks its output folder before any work: one line naming the path and the fix, exit 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import lock_folder, tiny_params, unlock_folder, write_params

from pipeline import paths
from stages import evaluate, export, generate, source, tokenize, train

# stage -> (its main, the variable placing its output folder)
STAGES: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "source": (source.main, "DATA_ROOT"),
    "tokenize": (tokenize.main, "DATA_ROOT"),
    "train": (train.main, "OUT_DIR"),
    "evaluate": (evaluate.main, "OUT_DIR"),
    "generate": (generate.main, "OUT_DIR"),
    "export": (export.main, "OUT_DIR"),
}


def run_stage(
    name: str, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys, **env: Path
) -> tuple[int, str]:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    monkeypatch.setenv("DATA_ROOT", str(env.get("DATA_ROOT", tmp_path / "data")))
    monkeypatch.setenv("OUT_DIR", str(env.get("OUT_DIR", tmp_path / "out")))
    code = STAGES[name][0]([str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", STAGES)
def test_a_file_in_place_of_the_output_folder(name: str, tmp_path: Path, corpus: Path, monkeypatch, capsys) -> None:
    variable = STAGES[name][1]
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    code, err = run_stage(name, tmp_path, corpus, monkeypatch, capsys, **{variable: blocker})
    folder = {"source": blocker / "tiny", "tokenize": blocker / "tiny" / "char"}.get(name, blocker)
    # evaluate and generate would otherwise first fail on the missing checkpoint: the folder is checked before work
    expected = f"error: {folder}: a file stands where the output folder should be; remove it or set {variable} to a "
    expected += "folder\n"
    assert (code, err) == (1, expected)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("name", STAGES)
def test_a_read_only_output_folder(name: str, tmp_path: Path, corpus: Path, monkeypatch, capsys) -> None:
    variable = STAGES[name][1]
    locked = tmp_path / "locked"
    locked.mkdir()
    lock_folder(locked)
    try:
        code, err = run_stage(name, tmp_path, corpus, monkeypatch, capsys, **{variable: locked})
    finally:
        unlock_folder(locked)
    assert code == 1 and err.count("\n") == 1 and "cannot write there (" in err
    assert f"set {variable} to a writable folder" in err


def test_the_folder_is_created_when_missing(tmp_path: Path) -> None:
    assert paths.writable(tmp_path / "a" / "b", "OUT_DIR").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone


def test_a_link_that_a_stage_would_write_through_to_outside_is_refused(tmp_path: Path) -> None:
    """Issue 30, paths: a stage writes into OUT_DIR/plots, appends to logs/*.log; a link there leads outside."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "plots").symlink_to(elsewhere)
    with pytest.raises(paths.OutputFolderError, match=r"plots is a symbolic link to .*elsewhere, outside OUT_DIR"):
        paths.writable(out, "OUT_DIR")
    (out / "plots").unlink()
    (out / "logs").mkdir()
    (out / "logs" / "train.log").symlink_to(elsewhere / "victim.log")
    with pytest.raises(paths.OutputFolderError, match="train.log is a symbolic link"):
        paths.writable(out, "OUT_DIR")
    (out / "logs" / "train.log").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step-0000010").mkdir()
    (out / "checkpoints" / "last").symlink_to("step-0000010")  # inside: a sharded run's own link
    (out / "checkpoints" / "last.pt").symlink_to(elsewhere / "cached.pt")  # replaced whole, never written through
    assert paths.writable(out, "OUT_DIR") == out


def test_under_dvc_an_output_folder_outside_the_workspace_is_refused(tmp_path: Path, monkeypatch) -> None:
    workspace = tmp_path / "ws"
    (workspace / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DVC_STAGE", "train")
    with pytest.raises(paths.OutputFolderError, match=f"OUT_DIR is {tmp_path / 'scratch'}, outside the DVC workspace"):
        paths.writable(tmp_path / "scratch", "OUT_DIR")
    assert paths.writable(Path("out"), "OUT_DIR") == Path("out")
    monkeypatch.delenv("DVC_STAGE")
    assert paths.writable(tmp_path / "scratch", "OUT_DIR") == tmp_path / "scratch"  # by hand: anywhere
