"""Evaluation throughput over train-step throughput, same model, same shape, same run.

    python -m bench.eval_ratio [--shape small|gpt2] [--rounds 10] [--steps 20] [--compile]

Builds one run's parts with the train stage's builders (``nanugpt.train.build.build_run``, on
``bench/train_throughput.py``'s random token files and shapes) and, in each round, times
``--steps`` optimizer steps of ``nanugpt.train.step.TrainStep`` and ``nanugpt.eval.evaluate.evaluate_split``
(the evaluate stage's and the validator's path) over ``--steps`` batches of the same rows x context,
alternating which goes first. A forward alone does about a third of a train step's work, so the
ratio eval tokens/s / train tokens/s can approach 3; the goal (issue 22) is >= 2.5. A first,
untimed round warms both up (and compiles with ``--compile``). The figure is the median over rounds
of the per-round ratio. Prints a table and writes ``bench/results/eval_ratio-<shape>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.train_throughput import SHAPES, make_data, our_params
from nanugpt.config.protocols import Batches
from nanugpt.distributed.process_group import DistInfo
from nanugpt.eval.evaluate import evaluate_split
from nanugpt.optim.losses import Loss
from nanugpt.train.build import build_run, wrap_model
from nanugpt.train.step import TrainStep

BENCH = Path(__file__).resolve().parent

GOAL = 2.5


def time_train(step: TrainStep, first_step: int, steps: int) -> float:
    """Seconds for optimizer steps ``first_step`` .. ``first_step + steps - 1``, their last loss on the host."""
    start = time.perf_counter()
    for i in range(first_step, first_step + steps):
        result = step(i)
    result.loss.item()
    return time.perf_counter() - start


def time_eval(
    model: torch.nn.Module, batches: Batches, *, iters: int, info: DistInfo, dtype: str, loss_fn: Loss
) -> float:
    """Seconds for ``evaluate_split`` over ``iters`` batches (it returns floats: the work is done)."""
    start = time.perf_counter()
    evaluate_split(model, batches, iters=iters, info=info, dtype=dtype, loss_fn=loss_fn)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="train steps and eval batches per round")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, as general.torch_compile")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    rows_tokens = shape["batch"] * shape["context_length"]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _ = make_data(Path(tmp), shape)
        tokenizer = json.loads((data_dir / "meta.json").read_text())["tokenizer"]
        params = our_params(shape, (args.rounds + 1) * args.steps, args.compile, tokenizer)
        info = DistInfo(0, 0, 1, torch.device("cpu"))
        parts = build_run(params, data_dir, info, lambda _: None)
        assert parts.val_batches is not None, "make_data writes a val split"
        model = wrap_model(parts.model, params, info)
        model.train()
        step = TrainStep(
            parts,
            model,
            info,
            peak_lr=params.optimizer.lr,
            dtype=params.general.dtype,
            grad_clip=params.training.grad_clip,
        )
        dtype = params.general.dtype

        def run(who: str, round_: int) -> float:
            if who == "train":
                return rows_tokens * args.steps / time_train(step, round_ * args.steps, args.steps)
            return (
                rows_tokens
                * args.steps
                / time_eval(model, parts.val_batches, iters=args.steps, info=info, dtype=dtype, loss_fn=parts.loss_fn)
            )

        run("train", 0), run("eval", 0)  # warm-up (and compile) round, not timed
        rows = []
        for round_ in range(1, args.rounds + 1):
            order = ("train", "eval") if round_ % 2 else ("eval", "train")
            figures = {who: run(who, round_) for who in order}
            figures["ratio"] = figures["eval"] / figures["train"]
            rows.append(figures)
            print(
                f"round {round_:2d}: train {figures['train']:9,.0f} tok/s | eval {figures['eval']:9,.0f} tok/s | "
                f"ratio {figures['ratio']:.3f}",
                flush=True,
            )
    summary = {
        "shape": args.shape,
        "compile": args.compile,
        "rounds": args.rounds,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "median_train_tokens_per_s": statistics.median(r["train"] for r in rows),
        "median_eval_tokens_per_s": statistics.median(r["eval"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "rows": rows,
    }
    ratio = summary["median_ratio"]
    print(
        "\n| shape | compile | rounds | train tok/s | eval tok/s | eval / train |\n|---|---|---|---|---|---|\n"
        f"| {args.shape} | {args.compile} | {args.rounds} | {summary['median_train_tokens_per_s']:,.0f} | "
        f"{summary['median_eval_tokens_per_s']:,.0f} | {ratio:.3f} ({'PASS' if ratio >= GOAL else 'MISS'} >= {GOAL}) |"
    )
    out = BENCH / "results" / f"eval_ratio-{args.shape}{'-compiled' if args.compile else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
