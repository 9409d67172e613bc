"""Temporaries of killed processes are recognised and cleaned up by the next run (issue 30, case 8)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers import REPO

from nanugpt.files.atomic import atomic_dir, remove_stale_temporaries, temporary, write_text


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_are_named_after_their_host_and_process(tmp_path: Path) -> None:
    assert temporary(tmp_path / "best.pt").name == f".best.pt.tmp-{socket.gethostname()}-{os.getpid()}"
    assert temporary(tmp_path / "hf", "old").name == f".hf.old-{socket.gethostname()}-{os.getpid()}"


def test_a_dead_processs_temporaries_go_and_a_set_aside_folder_comes_back(tmp_path: Path) -> None:
    host, dead = socket.gethostname(), dead_pid()
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    stale_file = checkpoints / f".best.pt.tmp-{host}-{dead}"
    stale_file.write_bytes(b"half a checkpoint")
    stale_dir = tmp_path / f".hf.tmp-{host}-{dead}"
    (stale_dir / "sub").mkdir(parents=True)
    aside = tmp_path / f".hf.old-{host}-{dead}"  # killed after moving hf/ aside, before the new one took its place
    aside.mkdir()
    (aside / "model.safetensors").write_text("the previous export")
    live = tmp_path / f".samples.txt.tmp-{host}-{os.getpid()}"  # a running process's
    other_host = tmp_path / f".val.bin.tmp-another-host-{dead}"  # maybe running, on a shared file system
    unrelated = tmp_path / ".previous-run.tmp-notes"
    for path in (live, other_host, unrelated):
        path.write_text("keep")

    handled = remove_stale_temporaries(tmp_path)

    assert sorted(handled) == sorted([stale_file, stale_dir, aside])
    assert (tmp_path / "hf" / "model.safetensors").read_text() == "the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["checkpoints", "hf", live.name, other_host.name, unrelated.name]
    )
    assert list(checkpoints.iterdir()) == []


def test_a_write_killed_midway_leaves_only_a_temporary_that_the_next_run_removes(tmp_path: Path) -> None:
    target = tmp_path / "train.bin"
    script = (
        "import os, sys; from pathlib import Path; from nanugpt.files.atomic import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000); os.kill(os.getpid(), 9)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", script, str(target)], env=env).returncode == -9
    [left] = tmp_path.iterdir()
    assert left.name.startswith(".train.bin.tmp-") and not target.exists()
    assert remove_stale_temporaries(tmp_path) == [left] and list(tmp_path.iterdir()) == []
    write_text(target, "whole")
    with atomic_dir(tmp_path / "hf") as folder:
        (folder / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "train.bin"]
