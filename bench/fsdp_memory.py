"""Per-rank memory and step time of ``training.strategy: ddp`` against ``fsdp``, at 2 and 4 ranks, in one run.

    python -m bench.fsdp_memory [--world-sizes 2,4] [--n-layer 4] [--n-embd 128] [--steps 5] [--optimizer adamw]

For each world size, each strategy runs under ``torchrun`` (gloo on CPU) through the train loop's own parts
(``build_run``, ``TrainStep``): one warm-up step (it creates the optimizer state), then ``--steps`` timed steps.
Each rank reports the bytes it holds (the local shards of sharded tensors) of the parameters, of the gradients
right after a synchronised backward, and of the optimizer state, and its peak resident memory. Printed: one
row per (world size, strategy) with rank 0's figures, and the ratios fsdp / ddp of parameter + optimizer-state
bytes (ideal: 1 / world size) and of the median step time. JSON goes to ``bench/results/fsdp_memory.json``,
or to ``--json``. A tiny run (``--n-layer 2 --n-embd 32 --steps 1``) checks the script; tests use it so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 200


def run_params(args: argparse.Namespace, strategy: str, corpus: Path) -> dict[str, Any]:
    """The params of one measured run: a char nanoGPT on ``corpus``, 2 rows per rank per micro-step."""
    optimizer = {"module": args.optimizer, "lr": 3e-3}
    return {
        "general": {"seed": 1, "device_type": "cpu"},
        "data": {"module": "tokenized", "dataset": "bench", "source": str(corpus), "val_fraction": 0.1},
        "tokenizer": {"module": "char"},
        "model": {"module": "nanogpt", "n_layer": args.n_layer, "n_head": 2, "n_embd": args.n_embd,
                  "context_length": 32},
        "training": {"max_steps": args.steps + 1, "device_batch_size": 2, "global_batch_size": 8,
                     "strategy": strategy},
        "optimizer": optimizer,
        "scheduler": {"module": "constant"},
    }  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """One rank of one run: write this rank's figures as JSON into ``args.out``."""
    from nanugpt.config.params import validate_params
    from nanugpt.distributed.process_group import process_group

    params = validate_params(json.loads(Path(args.params).read_text()), args.params)
    with process_group("cpu") as info:
        figures = rank_figures(params, Path(args.data), info, args.steps)  # its model is gone before the group
        (Path(args.out) / f"rank{info.rank}.json").write_text(json.dumps(figures))


def rank_figures(params: Any, data_dir: Path, info: Any, steps: int) -> dict[str, Any]:
    """Train one warm-up and ``steps`` timed steps through the loop's parts; this rank's bytes and times."""
    import torch

    from nanugpt.data.tokenized import to_device
    from nanugpt.distributed.fsdp import local_bytes
    from nanugpt.train.build import build_run, wrap_model
    from nanugpt.train.step import TrainStep

    parts = build_run(params, data_dir, info, lambda _: None)
    step = TrainStep(
        parts, wrap_model(parts.model, params, info), info, peak_lr=params.optimizer.lr, dtype="float32", grad_clip=1.0
    )
    step(0)  # creates the optimizer state
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    x, y = parts.train_batches.micro_batch(0, 0)
    step.micro_loss(to_device(x, info.device), to_device(y, info.device)).backward()
    grads = local_bytes(p.grad for p in parts.model.parameters() if p.grad is not None)
    parts.optimizer.zero_grad(set_to_none=True)
    state = [t for s in parts.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {
        "params_bytes": local_bytes(parts.model.parameters()),
        "grads_bytes": grads,
        "optimizer_bytes": local_bytes(state),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_s": statistics.median(times),
    }


def measure(args: argparse.Namespace, world_size: int, strategy: str, tmp: Path) -> list[dict[str, Any]]:
    """Run one (world size, strategy) under torchrun; every rank's figures."""
    out = tmp / f"{strategy}-{world_size}"
    out.mkdir()
    params_file = tmp / f"{strategy}.json"
    params_file.write_text(json.dumps(run_params(args, strategy, tmp / "corpus.txt")))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
        "-m", "bench.fsdp_memory", "--worker", "--params", str(params_file), "--data", str(tmp / "data"),
        "--out", str(out), "--steps", str(args.steps),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True, text=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-sizes", default="2,4", help="comma-separated numbers of ranks")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw_nanogpt", "muon"])
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "fsdp_memory.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    from nanugpt.config.params import validate_params

    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "runs": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "corpus.txt").write_text(CORPUS)
        params = validate_params(run_params(args, "ddp", tmp / "corpus.txt"), "bench")
        params.data.tokenize(params.tokenizer, tmp / "data", tmp / "raw")
        print("| ranks | strategy | params MB | grads MB | optimizer MB | peak RSS MB | step ms |")
        print("|---|---|---|---|---|---|---|")
        for world_size in (int(w) for w in args.world_sizes.split(",")):
            runs = {strategy: measure(args, world_size, strategy, tmp) for strategy in ("ddp", "fsdp")}
            for strategy, ranks in runs.items():
                r0 = ranks[0]
                print(
                    f"| {world_size} | {strategy} | {r0['params_bytes'] / 1e6:.3f} | {r0['grads_bytes'] / 1e6:.3f} | "
                    f"{r0['optimizer_bytes'] / 1e6:.3f} | {max(r['peak_rss_bytes'] for r in ranks) / 1e6:.0f} | "
                    f"{r0['step_s'] * 1e3:.1f} |"
                )
            held = {s: max(r["params_bytes"] + r["optimizer_bytes"] for r in ranks) for s, ranks in runs.items()}
            row = {
                "world_size": world_size,
                "ranks": runs,
                "params_optimizer_ratio": held["fsdp"] / held["ddp"],
                "step_time_ratio": runs["fsdp"][0]["step_s"] / runs["ddp"][0]["step_s"],
            }
            results["runs"].append(row)
        for row in results["runs"]:
            print(
                f"{row['world_size']} ranks: fsdp / ddp parameter + optimizer bytes per rank "
                f"{row['params_optimizer_ratio']:.3f} (ideal {1 / row['world_size']:.3f}), "
                f"step time {row['step_time_ratio']:.2f}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
