"""Metric sinks' overhead: train-step tokens/s with every sink on over every sink off, at ``log_every: 10``.

    python -m bench.sink_overhead [--shape small|gpt2] [--pairs 10] [--steps 100]
    python -m bench.sink_overhead --row-costs [--rows 50]

Each pair runs ``nanugpt.train.trainer.train`` twice on the same random token files
(``bench/train_throughput.py``'s shapes and data): once with the CSV files,
dvclive, TensorBoard and W&B (offline) on, once with all of them off
(the console line stays: it is not a sink one turns off), alternating which
goes first. The figure is the median over pairs of on / off of
``steady_tokens_per_s`` (after the first 3 steps); the goal is >= 0.99. Like every
training time, it leaves out the sinks' closing (W&B's ``finish``, dvclive's ``end``): a
run's steady speed is the goal, and closing is once per run, not per step.

Prints one line per pair and the median, and writes JSON to ``bench/results/sink_overhead-<shape>.json``.

``--row-costs`` times each sink alone, outside training, as the train loop builds it: the
milliseconds one interval's row costs the training thread (wall and CPU, medians over
``--rows`` rows, 20 ms apart so that a sink's own thread is done), its first row, and its
close. CPU time of the calling thread does not depend on what else runs on the machine, so
this figure holds on a busy one too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.train_throughput import SHAPES, make_data, our_params
from nanugpt.config.params import validate_params
from nanugpt.config.protocols import MetricSink
from nanugpt.config.schema import Params
from nanugpt.metrics.sinks import DvcLiveSink, TensorBoardSink, ThreadedSink, WandbSink, csv_sinks
from nanugpt.train.trainer import train

BENCH = Path(__file__).resolve().parent

ALL_ON = {"dvclive": True, "tensorboard": True, "wandb": True}
ALL_OFF = {"dvclive": False, "tensorboard": False, "wandb": False}


def with_sinks(params: Params, logging: dict[str, bool]) -> Params:
    """``params`` logging every 10 steps to the sinks of ``logging``."""
    tree: dict[str, Any] = params.to_dict()
    tree["training"]["log_every"] = 10
    tree["logging"] = logging
    return validate_params(tree, "bench")


# The row of an interval's last step at log_every 10, as the train loop sends it (no evaluation).
INTERVAL_ROW = [
    "train/loss",
    "train/lr",
    "train/tokens",
    "train/grad_norm",
    "train/weight_norm",
    "train/tokens_per_s",
    "train/step_time_s",
    "train/mem_gb",
    "time/elapsed_s",
    "time/eta_s",
    "train/mfu",
]


def sinks_alone(folder: Path) -> dict[str, list[MetricSink]]:
    """Each sink that ``logging`` turns on, built as ``Trainer.start_metrics`` builds it, writing under ``folder``
    (the console line is left out: it is there with the sinks off too)."""
    return {
        "csv": list(csv_sinks(folder / "plots", (), 0)),
        "dvclive": [ThreadedSink(DvcLiveSink(folder / "dvclive", {"training": {"log_every": 10}}, 0))],
        "tensorboard": [TensorBoardSink(folder / "tensorboard", 0)],
        "wandb": [WandbSink("bench", "sink-row-costs", {}, folder, stage="train", new_run=True)],
    }


def row_costs(rows: int) -> dict[str, dict[str, float]]:
    """Per sink: ms of the training thread per interval row (median wall and CPU), the CPU of all this
    process's threads per row (a sink's own thread included: on a machine whose cores train, it takes
    them from training), its first row, and its close. The CSV files get a row per step: their figure is
    per step."""
    costs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sinks in sinks_alone(Path(tmp)).items():
            walls, cpus = [], []
            process_cpu = time.process_time()
            for i in range(rows):
                metrics = {metric: 1.0 + i for metric in INTERVAL_ROW}
                wall, cpu = time.perf_counter(), time.thread_time()
                for sink in sinks:
                    sink.write(10 * (i + 1), metrics)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.thread_time() - cpu)
                time.sleep(0.02)
            process_cpu = time.process_time() - process_cpu
            wall = time.perf_counter()
            for sink in sinks:
                sink.close()
            costs[name] = {
                "row_ms": 1000 * statistics.median(walls[1:]),
                "row_cpu_ms": 1000 * statistics.median(cpus[1:]),
                "process_cpu_ms": 1000 * process_cpu / rows,
                "first_row_ms": 1000 * walls[0],
                "close_ms": 1000 * (time.perf_counter() - wall),
            }
            print(
                f"{name}: {costs[name]['row_ms']:.2f} ms per row (CPU {costs[name]['row_cpu_ms']:.2f} ms; all its "
                f"threads {costs[name]['process_cpu_ms']:.2f} ms), first row "
                f"{costs[name]['first_row_ms']:.2f} ms, close {costs[name]['close_ms']:.1f} ms",
                flush=True,
            )
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--row-costs", action="store_true", help="time each sink's row alone instead")
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    if args.row_costs:
        costs = row_costs(args.rows)
        (results / "sink_row_costs.json").write_text(json.dumps(costs, indent=1) + "\n")
        return
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _ = make_data(Path(tmp), shape)
        base = our_params(shape, args.steps, False, json.loads((data_dir / "meta.json").read_text())["tokenizer"])
        runs = {"on": with_sinks(base, ALL_ON), "off": with_sinks(base, ALL_OFF)}
        ratios = []
        for pair in range(args.pairs):
            order = ("on", "off") if pair % 2 == 0 else ("off", "on")
            tokens_per_s = {
                who: train(runs[who], data_dir, Path(tmp) / f"{who}{pair}")["steady_tokens_per_s"] for who in order
            }
            ratios.append(tokens_per_s["on"] / tokens_per_s["off"])
            print(
                f"pair {pair}: on {tokens_per_s['on']:,.0f} tok/s, off {tokens_per_s['off']:,.0f} tok/s, "
                f"ratio {ratios[-1]:.4f}",
                flush=True,
            )
    median = statistics.median(ratios)
    print(f"median ratio on / off over {len(ratios)} pairs: {median:.4f} (goal >= 0.99)")
    (results / f"sink_overhead-{args.shape}.json").write_text(
        json.dumps({"shape": args.shape, "steps": args.steps, "ratios": ratios, "median": median}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
