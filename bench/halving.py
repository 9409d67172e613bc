"""Search that spends less: the example halving sweep against the same points as a full grid, same machine, same run.

    python -m bench.halving [--rounds 1] [--jobs 2]

``sweeps/lr_halving.yaml`` (9 points; rungs of 50, 100 and 300 steps, a third kept) and the same file without its
``search`` section (every point to 300 steps), each run by ``snakemake -j <jobs>`` from scratch into a fresh
``OUT_DIR`` (token files made once before), rounds interleaved. For each it counts the train steps actually run
(from every run folder's ``train_summary.json`` and the step it resumed from) and the wall time, and names the best
point: halving's winner of the last promotion, the grid's lowest val loss (``metrics.json``, the evaluate stage's).
Goal: <= 0.35x the grid's train steps, and the same best point. Prints a Markdown table and writes JSON to
``bench/results/halving.json`` (and the halving run's report page to ``bench/results/lr_halving_report.html``). Run
it with nothing else heavy running. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import yaml

from bench.sweep_threads import run_sweep

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SWEEP = REPO / "sweeps" / "lr_halving.yaml"
GOAL = 0.35


def sweep_files(folder: Path) -> dict[str, Path]:
    """The example halving sweep, and the same points as a grid, in ``folder``."""
    spec = yaml.safe_load(SWEEP.read_text())
    spec["base"] = str(SWEEP.parent / spec["base"])
    files = {"halving": folder / "halving.yaml", "grid": folder / "grid.yaml"}
    files["halving"].write_text(yaml.safe_dump(spec, sort_keys=False))
    files["grid"].write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "search"}, sort_keys=False))
    return files


def train_steps(sweep_folder: Path) -> int:
    """The optimizer steps every train run under ``sweep_folder`` took: its last step less the one it resumed at."""
    total = 0
    for summary in sweep_folder.rglob("train_summary.json"):
        info = json.loads((summary.parent / "run_info.json").read_text())
        total += json.loads(summary.read_text())["step"] - (info.get("resumed_from") or {}).get("step", 0)
    return total


def best_point(sweep_folder: Path, kind: str) -> tuple[str, float]:
    """The best point and its val loss: the last promotion's winner (halving), or the lowest evaluated (grid)."""
    if kind == "halving":
        last = max((sweep_folder / "halving").glob("rung-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        name = json.loads(last.read_text())["promoted"][0]
    else:
        losses = {p.parent.name: json.loads(p.read_text())["val_loss"] for p in sweep_folder.glob("*/metrics.json")}
        name = min(losses, key=lambda point: (losses[point], point))
    return name, json.loads((sweep_folder / name / "metrics.json").read_text())["val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the two runs")
    parser.add_argument("--jobs", type=int, default=2, help="snakemake -j")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"halving": [], "grid": []}
    steps: dict[str, int] = {}
    best: dict[str, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="halving_") as tmp:
        folder = Path(tmp)
        files = sweep_files(folder)
        data_root = folder / "data"
        run_sweep(files["grid"], args.jobs, data_root, folder / "warm", "--until", "sweep_tokenize")
        for round_ in range(args.rounds):
            for kind, sweep in files.items():
                out = folder / f"{kind}-{round_}"
                seconds[kind].append(run_sweep(sweep, args.jobs, data_root, out))
                sweep_folder = out / "sweeps" / sweep.stem
                steps[kind], best[kind] = train_steps(sweep_folder), best_point(sweep_folder, kind)
                if kind == "halving":  # the example's report, kept: bench/results/lr_halving_report.html
                    RESULTS.mkdir(exist_ok=True)
                    shutil.copyfile(sweep_folder / "report.html", RESULTS / "lr_halving_report.html")
                print(f"round {round_}: {kind}: {seconds[kind][-1]:.1f} s, {steps[kind]} train steps", flush=True)
    walls = {kind: statistics.median(values) for kind, values in seconds.items()}
    step_ratio, wall_ratio = steps["halving"] / steps["grid"], walls["halving"] / walls["grid"]
    same = best["halving"][0] == best["grid"][0]
    load = os.getloadavg()[0]
    print(f"\n{SWEEP.relative_to(REPO)}, snakemake -j {args.jobs}, {args.rounds} round(s), load {load:.2f}\n")
    print("| search | train steps | wall (s) | best point | its val loss |")
    print("| --- | --- | --- | --- | --- |")
    for kind in files:
        print(f"| {kind} | {steps[kind]:,} | {walls[kind]:.1f} | {best[kind][0]} | {best[kind][1]:.4f} |")
    verdict = "PASS" if step_ratio <= GOAL else "MISS"
    print(f"\nhalving / grid: {step_ratio:.2f}x the train steps (goal <= {GOAL}: {verdict})")
    print(f"halving / grid: {wall_ratio:.2f}x the wall time; same best point: {'yes' if same else 'NO'}")
    record = {"jobs": args.jobs, "seconds": seconds, "steps": steps, "best": best, "step_ratio": step_ratio}
    (RESULTS / "halving.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
