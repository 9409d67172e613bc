"""``bench/checkpoint_stall.py --quick``: one process saves blocking and in the background, and both load back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_quick_run_measures_both_sides_and_its_checkpoints_load(tmp_path: Path) -> None:
    out, result_file = tmp_path / "checkpoints", tmp_path / "checkpoint_stall.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.checkpoint_stall", "--quick", "--out", str(out), "--json", str(result_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["mode"] == "single" and result["world_size"] == 1 and len(result["rounds"]) == 2
    for row in result["rounds"]:
        assert row["sync"]["stall_s"] > 0 and row["async"]["stall_s"] > 0 and row["async"]["write_s"] > 0
        assert row["async"]["steps"] >= 1  # training went on while the background write ran
    assert result["checkpoint_bytes"]["sync"] > 0 and result["checkpoint_bytes"]["async"] > 0
    assert [line.split(":")[0] for line in result["loaded_back"]] == ["sync", "async"]
    assert all("tensors equal" in line and "MISMATCH" not in line for line in result["loaded_back"])
    assert (out / "sync" / "last.pt").is_file() and (out / "async" / "last.pt").is_file()  # --out is kept
    assert "| goal | target | measured | result |" in run.stdout
