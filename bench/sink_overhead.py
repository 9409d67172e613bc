"""Metric sinks' overhead: train-step tokens/s with every sink on over every sink off, at ``log_every: 10``.

    python bench/sink_overhead.py [--shape small|gpt2] [--pairs 10] [--steps 100]

Each pair runs ``nanugpt.train.train`` twice on the same random token files
(``bench/train_throughput.py``'s shapes and data): once with the CSV files,
dvclive, TensorBoard and W&B (offline) on, once with all of them off
(the console line stays: it is not a sink one turns off), alternating which
goes first. The figure is the median over pairs of on / off of
``steady_tokens_per_s`` (after the first 3 steps); the goal is >= 0.99.

Prints one line per pair and the median, and writes JSON to ``bench/results/sink_overhead-<shape>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from train_throughput import SHAPES, make_data, our_params  # noqa: E402

from nanugpt.params import Params, validate_params  # noqa: E402
from nanugpt.train import train  # noqa: E402

ALL_ON = {"dvclive": True, "tensorboard": True, "wandb": True}
ALL_OFF = {"dvclive": False, "tensorboard": False, "wandb": False}


def with_sinks(params: Params, logging: dict[str, bool]) -> Params:
    """``params`` logging every 10 steps to the sinks of ``logging``."""
    tree: dict[str, Any] = params.to_dict()
    tree["training"]["log_every"] = 10
    tree["logging"] = logging
    return validate_params(tree, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
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
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"sink_overhead-{args.shape}.json").write_text(
        json.dumps({"shape": args.shape, "steps": args.steps, "ratios": ratios, "median": median}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
