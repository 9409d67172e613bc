"""``bench/gpu_check.sh --dry-run``: the GPU check walks its whole code on CPU with a tiny model and passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.slow  # three CPU compiles: about 1 to 2 minutes
def test_gpu_check_dry_run_passes_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}  # the script runs `python -m bench.gpu_check` at the repo root
    run = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "dry run"
    assert result["dispatch"]["passed"] and result["dispatch"]["table_picks"] == "standard"
    assert result["dispatch"]["cpu_tuned_functions_seen"] == []
    for name in ("gpt2_124m", "modern_muon"):
        row = result["recipes"][name]
        assert row["timed_steps"] == 2 and row["tokens_per_s"] > 0 and row["mfu"] > 0
    assert [ref["tokens_per_s"] > 0 for ref in result["references"]] == [True, True]
    assert "| goal | target | measured | result |" in run.stdout
