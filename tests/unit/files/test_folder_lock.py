"""One writer per OUT_DIR (issue 30, case 2): a train holds the folder alone, the readers share it, a dead holder
never blocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, launch_env, tiny_params, write_params

from nanugpt.config.params import load_params
from nanugpt.files.folder_lock import FolderInUseError, hold_out_dir
from stages import tokenize


def test_a_train_holds_the_folder_alone_and_names_itself(tmp_path: Path) -> None:
    with hold_out_dir(tmp_path, "train"):
        for stage in ("train", "evaluate", "export"):
            with pytest.raises(FolderInUseError) as refused, hold_out_dir(tmp_path, stage):
                pass
            message = str(refused.value)
            assert f"is in use by train (pid {os.getpid()} on {socket.gethostname()}, since " in message
            assert f"{stage} cannot run beside it" in message and "set OUT_DIR to another folder" in message
    with hold_out_dir(tmp_path, "train"):  # released at the end of the block
        pass


def test_readers_share_the_folder_but_not_with_a_train_or_their_own_stage(tmp_path: Path) -> None:
    with hold_out_dir(tmp_path, "evaluate"), hold_out_dir(tmp_path, "generate"):  # as snakemake -j 2 runs them
        with pytest.raises(FolderInUseError, match=r"in use by evaluate \(pid .*\), generate \(pid .*\): train cannot"):
            with hold_out_dir(tmp_path, "train"):
                pass
        with pytest.raises(FolderInUseError, match=r"in use by evaluate \(pid \d+ .*evaluate cannot run"):
            with hold_out_dir(tmp_path, "evaluate"):
                pass


HOLD = (
    "import sys, time; from pathlib import Path; from nanugpt.files.folder_lock import hold_out_dir\n"
    "with hold_out_dir(Path(sys.argv[1]), 'train'):\n    print('held', flush=True); time.sleep(600)"
)


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    with pytest.raises(FolderInUseError, match=f"in use by train \\(pid {holder.pid} "):
        with hold_out_dir(tmp_path, "train"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with hold_out_dir(tmp_path, "train"):  # the kernel released the dead holder's lock
        pass


@pytest.mark.slow
def test_a_second_train_into_a_running_ones_folder_exits_at_once(tmp_path: Path, corpus: Path) -> None:
    """Two real trains, the second with another lr: it stops in one line and the first's outputs are its own."""
    params_file = write_params(
        tmp_path / "params.yaml", tiny_params(corpus, training={"max_steps": 100_000, "log_every": 10})
    )
    tokenize.run(load_params(params_file), data_root=tmp_path / "data")
    env = launch_env(tmp_path / "data", tmp_path / "out")
    command = [sys.executable, "-m", "stages.train", str(params_file)]
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        csv_path = tmp_path / "out" / "plots" / "train.csv"
        deadline = time.monotonic() + 120
        while not csv_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [*command, "--optimizer.lr", "1e-3"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=120)
    lines = second.stderr.splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert f"is in use by train (pid {first.pid} " in lines[0]
    assert json.loads((tmp_path / "out" / "run_info.json").read_text())["params"]["optimizer"]["lr"] == 3e-3
    assert first.returncode == 128 + signal.SIGTERM, output
