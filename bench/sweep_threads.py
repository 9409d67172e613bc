"""Threads that fit: the example sweep under ``snakemake -j 2`` against ``-j 1``, same machine, same run.

    python -m bench.sweep_threads [--steps 100] [--rounds 1]

The example sweep (``sweeps/lr_width.yaml``: 9 points, one tokenize job) with its points shortened to
``--steps`` steps (300 in the file; the jobs' start-up then weighs as much as in the full sweep's first
third), run from scratch into a fresh ``OUT_DIR`` each time, rounds interleaved:

* ``-j 1``: one job at a time; each point's train job asks for one thread (the sweep's default);
* ``-j 2``: two jobs at a time, one thread each: the goal is a wall time <= 0.65x ``-j 1``'s;
* ``-j 2``, two threads per point (``launch.cpus_per_node: 2``): the other way to use two cores, one train
  job at a time with both, for reference (with ``-j 1`` Snakemake would give a job one thread whatever it
  asks).

It also reads each point's ``run_info.json``: the threads its train stage ran with
(``torch.get_num_threads()`` there) must be those its job was given. Prints a Markdown table and writes JSON
to ``bench/results/sweep_threads.json``. Run it with nothing else heavy running. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.65
TIMEOUT_S = 3600
RUNS = {  # name: (snakemake -j, threads of each point's train job)
    "-j 1": (1, 1),
    "-j 2": (2, 1),
    "-j 2, 2 threads": (2, 2),
}


def sweep_files(folder: Path, steps: int) -> dict[int, Path]:
    """The example sweep with ``steps`` steps per point, for one and two threads per train job."""
    files = {}
    for threads in sorted({threads for _, threads in RUNS.values()}):
        base = folder / f"base-{threads}.yaml"
        overrides = {
            "__include__": str(REPO / "sweeps" / "lr_width_base.yaml"),
            "training": {"max_steps": steps, "checkpoint_every": steps},
            "eval": {"eval_every": steps},
            "launch": {"cpus_per_node": threads if threads > 1 else None},
        }
        base.write_text(yaml.safe_dump(overrides, sort_keys=False))
        sweep = yaml.safe_load((REPO / "sweeps" / "lr_width.yaml").read_text())
        sweep["base"] = str(base)
        files[threads] = folder / f"sweep-{threads}.yaml"
        files[threads].write_text(yaml.safe_dump(sweep, sort_keys=False))
    return files


def run_sweep(sweep: Path, jobs: int, data_root: Path, out_dir: Path, *extra: str) -> float:
    """Seconds of one ``snakemake -j jobs`` of ``sweep`` from scratch (token files already made), with ``extra``
    arguments."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "DATA_ROOT", "OUT_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = ["snakemake", "-j", str(jobs), "--config", f"sweep={sweep}", f"data_root={data_root}"]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, f"out_dir={out_dir}", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def threads_used(out_dir: Path) -> set[int]:
    """The thread counts the points' train stages recorded."""
    infos = (out_dir / "sweeps").rglob("run_info.json")
    return {json.loads(path.read_text())["environment"]["threads"] for path in infos}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="train steps of each point")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the three runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep_threads_") as tmp:
        folder = Path(tmp)
        files = sweep_files(folder, args.steps)
        data_root = folder / "data"
        run_sweep(files[1], 2, data_root, folder / "warm", "--until", "sweep_tokenize")  # the token files, once
        seconds: dict[str, list[float]] = {name: [] for name in RUNS}
        threads: dict[str, set[int]] = {}
        for round_ in range(args.rounds):
            for name, (jobs, per_point) in RUNS.items():
                out = folder / f"{name.replace(' ', '').replace(',', '_')}-{round_}"
                seconds[name].append(run_sweep(files[per_point], jobs, data_root, out))
                threads[name] = threads_used(out)
                print(f"round {round_}: {name}: {seconds[name][-1]:.1f} s, threads {sorted(threads[name])}", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = medians["-j 2"] / medians["-j 1"]
    print(f"\nexample sweep, 9 points x {args.steps} steps, {args.rounds} round(s), load {os.getloadavg()[0]:.2f}\n")
    print("| run | wall (s) | threads per train job (run_info.json) | / -j 1 |")
    print("| --- | --- | --- | --- |")
    for name in RUNS:
        used = ", ".join(map(str, sorted(threads[name])))
        print(f"| {name} | {medians[name]:.1f} | {used} | {medians[name] / medians['-j 1']:.2f} |")
    print(f"\n-j 2 / -j 1 = {ratio:.2f} (goal <= {GOAL}): {'PASS' if ratio <= GOAL else 'MISS'}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    record = {"steps": args.steps, "rounds": args.rounds, "seconds": seconds, "ratio": ratio}
    (results / "sweep_threads.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
