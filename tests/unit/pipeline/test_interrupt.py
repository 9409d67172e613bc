"""Ctrl-C in a command is one line and exit 130, wherever it lands (issue 30, case 10): a real process group
gets SIGINT, as from a terminal, so the process boundary (Python's own KeyboardInterrupt, a pool of tokenize
workers) is what is tested."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, tiny_params, write_params

from pipeline.interrupt import message


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_ROOT": str(cwd / "data"), "OUT_DIR": str(cwd / "out")}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # CI's background jobs ignore it
    )


def ctrl_c(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """SIGINT to the whole group; the exit code and the lines on stderr."""
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "evaluate", "generate", "export", "tokenize"])
def test_ctrl_c_while_a_stage_starts_is_one_line(tmp_path: Path, corpus: Path, stage: str) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    process = start([f"stages.{stage}", str(params)], tmp_path)
    time.sleep(0.5)  # importing the stage (torch)
    assert ctrl_c(process) == (130, [message(signal.SIGINT)])


@pytest.mark.slow
def test_ctrl_c_during_a_parallel_tokenize_leaves_no_file_and_no_worker_traceback(tmp_path: Path) -> None:
    corpus = tmp_path / "big.txt"
    corpus.write_text("".join(f"line {i} of a corpus that takes a while to encode\n" for i in range(600_000)))
    params = write_params(
        tmp_path / "params.yaml", tiny_params(corpus, data={"tokenize_workers": 2}, tokenizer={"module": "char"})
    )
    process = start(["stages.tokenize", str(params)], tmp_path)
    tokens = tmp_path / "data" / "tiny" / "char"
    deadline = time.monotonic() + 120
    while not any(tokens.glob(".train.bin.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ctrl_c(process) == (130, [message(signal.SIGINT)])
    assert list(tokens.iterdir()) == []
