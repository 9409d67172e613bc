"""End-to-end: a sweep's points as named DVC experiments, queued and run by the README's command as written
(``python -m pipeline.sweep queue sweeps/lr_width.yaml && dvc queue start -j 4``, on a three-point sweep of a
tiny model) and listed by ``dvc exp show --json`` with their params and val loss; and a two-point halving sweep
queued beside it, a rung at a time, whose winner continues from its first rung's checkpoint and ends with the val
loss of the same point trained straight (the grid sweep's experiment of it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import README_SWEEP_ON_DVC_QUEUE, dvc_env, make_workspace, run, tiny_params

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 900
SWEEP = {
    "base": "../params.yaml",
    "grid": {"optimizer.lr": [0.001, 0.002]},
    "points": [{"name": "wide", "model.n_embd": 64}],
}
HALVING = {
    "base": "../params.yaml",
    "grid": {"optimizer.lr": [0.001, 0.002]},
    "search": {"method": "halving", "rungs": [10, 20], "keep": 0.5},
}
EXPECTED = {
    "lr=0.001": (0.001, 32),
    "lr=0.002": (0.002, 32),
    "wide": (0.003, 64),
}  # lr, n_embd (tiny_params: 0.003, 32)


def wait_for_queue(ws: Path, env: dict[str, str], every_s: float) -> str:
    """Poll ``dvc queue status`` every ``every_s`` seconds until nothing is queued or running; return its last output.
    Each ``dvc queue status`` is a whole dvc start: polled often while several experiments run, it slows them."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], ws, env).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(every_s)
    pytest.fail(f"the DVC queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}")


def experiments(shown: list[dict]) -> dict[str, dict]:
    """``{experiment name: its data}`` from ``dvc exp show --json``."""
    return {
        exp["name"]: rev["data"]
        for row in shown
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
        if exp.get("name")
    }


def test_sweep_points_run_as_named_dvc_experiments(tmp_path: Path) -> None:
    env = dvc_env(tmp_path)
    ws = make_workspace(tmp_path, tiny_params("corpus.txt"), env)
    (ws / "sweeps").mkdir(exist_ok=True)
    (ws / "sweeps" / "lr_width.yaml").write_text(yaml.safe_dump(SWEEP))  # the README's sweep, made tiny
    (ws / "sweeps" / "halving.yaml").write_text(yaml.safe_dump(HALVING))
    run(["git", "add", "sweeps/lr_width.yaml", "sweeps/halving.yaml"], ws, env)
    run(["git", "commit", "-q", "-m", "a sweep"], ws, env)
    halving = [sys.executable, "-m", "pipeline.sweep", "queue", "sweeps/halving.yaml"]
    first_rung = run(halving, ws, env).stdout  # queued beside the grid's points: one `dvc queue start` runs all
    assert first_rung.count("dvc exp run --queue -n lr=0.00") == 2 and "-S training.stop_at=10 train" in first_rung

    # The workers dvc starts outlive it and keep its output open: a pipe would hold this test until they end.
    log = tmp_path / "queue.log"
    started = subprocess.run(
        ["bash", "-c", f"( {README_SWEEP_ON_DVC_QUEUE} ) > {log} 2>&1"], cwd=ws, env=env, timeout=120, check=False
    )
    queued = log.read_text()
    assert started.returncode == 0, queued
    assert "dvc exp run --queue -n lr=0.001 -S optimizer.lr=0.001" in queued, queued
    assert "dvc exp run --queue -n wide -S model.n_embd=64" in queued, queued
    status = wait_for_queue(ws, env, every_s=15)  # five experiments
    if status.count("Success") != 3 + 2:
        logs = [run(["dvc", "queue", "logs", name], ws, env, expect_ok=False).stdout[-3000:] for name in EXPECTED]
        pytest.fail(status + "\n".join(logs))

    second_rung = run(halving, ws, env).stdout
    (winner,) = json.loads((ws / "out" / "sweeps" / "halving" / "halving" / "rung-10.json").read_text())["promoted"]
    assert f"rung 10: promoted {winner}" in second_rung and f"-n {winner}-rung20" in second_rung, second_rung
    assert f"training.resume='{ws / 'out' / 'sweeps' / 'halving' / winner / 'rungs' / '10'}" in second_rung
    subprocess.run(["bash", "-c", f"dvc queue start -j 1 >> {log} 2>&1"], cwd=ws, env=env, timeout=120, check=True)
    assert wait_for_queue(ws, env, every_s=3).count("Success") == 3 + 3  # one experiment
    assert f"halving done: {winner} wins" in run(halving, ws, env).stdout

    shown = experiments(json.loads(run(["dvc", "exp", "show", "--json"], ws, env).stdout))
    rungs = {f"lr={lr}-rung10" for lr in HALVING["grid"]["optimizer.lr"]} | {f"{winner}-rung20"}
    assert sorted(shown) == sorted({*EXPECTED, *rungs}), shown.keys()
    straight, continued = shown[winner]["metrics"], shown[f"{winner}-rung20"]["metrics"]
    assert continued["out/metrics.json"]["data"]["val_loss"] == straight["out/metrics.json"]["data"]["val_loss"]
    shown = {name: shown[name] for name in EXPECTED}
    for name, (lr, n_embd) in EXPECTED.items():
        params = shown[name]["params"]["params.yaml"]["data"]
        assert (params["optimizer"]["lr"], params["model"]["n_embd"]) == (lr, n_embd), name
        assert shown[name]["metrics"]["out/metrics.json"]["data"]["val_loss"] > 0, name

    again = run([sys.executable, "-m", "pipeline.sweep", "queue", "sweeps/lr_width.yaml"], ws, env).stdout
    assert again.count("already an experiment; skipped") == 3, again
