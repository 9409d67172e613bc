"""Time to a loss: the ``tinyshakespeare_speedrun`` preset against nanoGPT's settings, to val loss 1.88.

    python -m bench.speedrun [--corpus PATH] [--rounds 2] [--check-every 10] [--reference-check-every 50]

nanoGPT's "shakespeare_char on CPU" run (``nanogpt`` + ``adamw_nanogpt`` at nanoGPT's settings,
``quality.py``'s reference recipe: 2000 steps of 12 x 64 tokens) reaches a val loss of about 1.88
at its last step. This script trains, in each round (the order alternates between rounds):

1. that reference run, with a checkpoint every ``--reference-check-every`` steps;
2. the ``params/tinyshakespeare_speedrun.yaml`` preset as written (its data source swapped for the
   local corpus), with a checkpoint every ``--check-every`` steps;

then evaluates every checkpoint on the same 200 fixed validation batches of 12 x 64 tokens (the
reference's, as the evaluate stage draws them). A run's time to the loss is its training time (the
train stage's clock: checkpoints and start-up are outside it) at the first checkpoint whose val loss
is at most ``TARGET``: a checkpoint late, so a crossing between checks counts against the run. A
reference run that never reaches ``TARGET`` counts with its whole training time, less than its time
to the loss would be: the ratio is then an upper bound.

Goal (issue 22): speedrun time / reference time <= ``GOAL`` in every round. Prints each round's
figures and both loss curves (step, tokens, training seconds, val loss) and writes
``bench/results/speedrun.json``. The corpus is Tiny Shakespeare: ``--corpus`` or ``$NANUGPT_TINYSHAKESPEARE``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.quality import BATCH, SHAPE, VAL_BATCHES, recipe
from nanugpt.config.schema import Params
from nanugpt.eval.evaluate import evaluate_checkpoint
from nanugpt.train.trainer import train
from pipeline.schema import load
from stages import tokenize

BENCH = Path(__file__).resolve().parent

TARGET = 1.88
GOAL = 0.25
REFERENCE_STEPS = 2000
PRESET = BENCH.parent / "params" / "tinyshakespeare_speedrun.yaml"


class TrainingClock:
    """A metric sink that keeps the training seconds at each logged step: the sum of each interval's step time
    times its steps, which is the train stage's clock (evaluation and checkpoints paused out)."""

    every_step = False

    def __init__(self) -> None:
        self.seconds_at: dict[int, float] = {}
        self._seconds, self._step = 0.0, 0

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self._seconds += metrics["train/step_time_s"] * (step - self._step)
        self._step = step
        self.seconds_at[step] = self._seconds

    def close(self, failed: bool = False) -> None:
        pass


def speedrun_params(corpus: Path, check_every: int) -> Params:
    """The preset as written, reading ``corpus``, on the CPU, with a checkpoint every ``check_every`` steps."""
    overrides = {
        "data.source": str(corpus),
        "general.device_type": "cpu",
        "training.log_every": check_every,
        "training.checkpoint_every": check_every,
        "training.keep_last": 10_000,
        "training.resume": "never",
        "logging.dvclive": "false",
    }
    return load(PRESET, [item for key, value in overrides.items() for item in (f"--{key}", str(value))])


def reference_params(corpus: Path, check_every: int) -> Params:
    """``quality.py``'s nanoGPT-settings recipe for 2000 steps, with a checkpoint every ``check_every`` steps."""
    base = recipe("nanogpt", corpus, REFERENCE_STEPS * BATCH * SHAPE["context_length"])
    training = base.training.model_copy(
        update={"log_every": check_every, "checkpoint_every": check_every, "keep_last": 10_000}
    )
    return base.model_copy(update={"training": training})


def check_comparable(speedrun: Params, reference: Params) -> None:
    """Stop unless both runs read the same split of the same tokens and fit the reference's val batches."""
    same = {
        "data.dataset": (speedrun.data.dataset, reference.data.dataset),
        "data.val_fraction": (speedrun.data.val_fraction, reference.data.val_fraction),
        "tokenizer.module": (speedrun.tokenizer.module, reference.tokenizer.module),
        "model.context_length": (speedrun.model.context_length, reference.model.context_length),
    }
    differ = [f"{key}: {ours!r} vs {theirs!r}" for key, (ours, theirs) in same.items() if ours != theirs]
    if differ:
        sys.exit(f"{PRESET.name} does not run on the reference's data and val batches: {'; '.join(differ)}")


def time_to_target(params: Params, data_root: Path, out_dir: Path, judge: Params) -> dict[str, Any]:
    """Train ``params``, evaluate each step checkpoint with ``judge``'s val batches; the curve and the crossing."""
    clock = TrainingClock()
    summary = train(params, data_root / params.data.dataset / params.tokenizer.module, out_dir, sinks=[clock])
    data_dir = data_root / judge.data.dataset / judge.tokenizer.module
    tokens_per_step = summary["tokens_seen"] // summary["step"]
    curve = []
    for step in sorted(clock.seconds_at):
        checkpoint = out_dir / "checkpoints" / f"step-{step:07d}.pt"
        val = evaluate_checkpoint(judge, checkpoint, data_dir)["val_loss"]
        curve.append({"step": step, "tokens": step * tokens_per_step, "train_s": clock.seconds_at[step], "val": val})
    crossing = next((point for point in curve if point["val"] <= TARGET), None)
    return {
        "reached": crossing is not None,
        "at": crossing or curve[-1],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": summary["seconds"],
        "curve": curve,
    }


def describe(name: str, run: Mapping[str, Any]) -> str:
    """One table row of a run's time to the target."""
    at = run["at"]
    reached = "" if run["reached"] else f" (not reached: {at['val']:.4f} at its last step)"
    return (
        f"| {name} | {at['step']} | {at['tokens']:,} | {at['train_s']:.1f} | {run['wall_seconds']:.1f} | "
        f"{at['val']:.4f}{reached} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.environ.get("NANUGPT_TINYSHAKESPEARE"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--check-every", type=int, default=10, help="steps between the speedrun's checks")
    parser.add_argument("--reference-check-every", type=int, default=50, help="steps between the reference's checks")
    args = parser.parse_args()
    if not args.corpus:
        sys.exit("give --corpus PATH or set NANUGPT_TINYSHAKESPEARE to a copy of Tiny Shakespeare")
    corpus = Path(args.corpus)
    speedrun = speedrun_params(corpus, args.check_every)
    reference = reference_params(corpus, args.reference_check_every)
    check_comparable(speedrun, reference)
    assert reference.eval.eval_iters == VAL_BATCHES
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenize.run(reference, data_root=root / "data")
        for i in range(args.rounds):
            order = ["reference", "speedrun"] if i % 2 == 0 else ["speedrun", "reference"]
            runs = {}
            for name in order:
                params = reference if name == "reference" else speedrun
                runs[name] = time_to_target(params, root / "data", root / f"{name}-{i}", reference)
            ratio = runs["speedrun"]["at"]["train_s"] / runs["reference"]["at"]["train_s"]
            rounds.append({"order": order, "ratio": ratio, **runs})
    worst = max(r["ratio"] for r in rounds)
    verdict = "PASS" if worst <= GOAL and all(r["speedrun"]["reached"] for r in rounds) else "MISS"
    print("\n| round | run | steps | tokens | train s to the loss | wall s (whole run) | val loss |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds):
        for name in r["order"]:
            print(f"| {i + 1} " + describe(name, r[name]))
    print("\nval loss curves (first round): step, tokens, training seconds, val loss")
    for name in ("reference", "speedrun"):
        points = ", ".join(
            f"({p['step']}, {p['tokens']:,}, {p['train_s']:.1f}, {p['val']:.4f})" for p in rounds[0][name]["curve"]
        )
        print(f"  {name}: {points}")
    ratios = ", ".join(f"{r['ratio']:.3f}" for r in rounds)
    print(f"\nspeedrun / nanoGPT settings, time to val {TARGET}: {ratios} (goal <= {GOAL} in every round): {verdict}")
    out = BENCH / "results" / "speedrun.json"
    out.parent.mkdir(exist_ok=True)
    result = {"target": TARGET, "goal": GOAL, "worst_ratio": worst, "verdict": verdict, "rounds": rounds}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
