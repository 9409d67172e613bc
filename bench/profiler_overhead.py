"""What ``training.profile`` costs: a train step with the profiler off against no profiler at all, and in a window.

    python -m bench.profiler_overhead [--rounds 14] [--steps 20] [--window 5]

A small model (``nanogpt`` 4 x 128, context 64, batch 12, ``adamw_nanogpt``: ``step_profile.py``'s first
recipe, random token ids) trains in interleaved rounds. Each round times ``--steps`` optimizer steps of the
same loop twice, a step of each in turn (the order flipping each step and round): with a ``StepProfiler``
whose ``training.profile.enabled`` is false, called after every step as the train loop calls it ("off"),
and with no profiler object at all ("none"). The figure is the median over rounds of off / none of each
round's median step time (a step that another process delayed moves a median little); the goal is 1.00
within the noise (<= 1.01). The pooled ratio of the rounds' total times is printed beside it, with a 95%
bootstrap interval over rounds (``bench/stats.py``): on a shared machine, a round whose steps another
process took shows there. Also
printed: the nanoseconds one ``step()`` call costs when off (a tight loop of 10^6 calls, so no noise of
the step), and, for information, the median step time inside a profiling window of ``--window`` steps
(CPU activities, ``record_shapes``, as the trainer profiles) over the same steps with no profiler, and
what closing the window (stopping the profiler and writing the trace) takes.

Prints a table and writes JSON to ``bench/results/profiler_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.stats import bootstrap_ratio
from nanugpt.config.params import validate_params
from nanugpt.config.schema import ProfileParams
from nanugpt.distributed.process_group import DistInfo
from nanugpt.train.profiler import StepProfiler

REPO = Path(__file__).resolve().parent.parent
VOCAB, BATCH, CONTEXT = 65, 12, 64
MAIN = DistInfo(0, 0, 1, torch.device("cpu"))


def build() -> Callable[[], None]:
    """One optimizer step of the small model, as a function."""
    params = validate_params(
        {
            "general": {"seed": 0, "device_type": "cpu"},
            "data": {"module": "tokenized", "dataset": "bench", "source": "unused"},
            "tokenizer": {"module": "char"},
            "model": {"module": "nanogpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": CONTEXT},
            "training": {"max_steps": 10, "device_batch_size": BATCH, "global_batch_size": BATCH},
            "optimizer": {"module": "adamw_nanogpt", "lr": 1e-3},
            "scheduler": {"module": "constant"},
            "logging": {"dvclive": False},
        },
        "bench",
    )
    torch.manual_seed(0)
    net = params.model.build(VOCAB)
    optimizer = params.optimizer.build(net, "cpu")
    loss_fn = params.loss.build()
    ids = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        loss_fn(net(ids[:, :-1]), ids[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed_steps(step: Callable[[], None], steps: int, profiler: StepProfiler | None) -> list[float]:
    """Seconds of each of ``steps`` optimizer steps numbered from 1, ``profiler.step`` after each."""
    times = []
    for n in range(1, steps + 1):
        start = time.perf_counter()
        step()
        if profiler is not None:
            profiler.step(n)
        times.append(time.perf_counter() - start)
    return times


def paired_round(step: Callable[[], None], steps: int, first: str) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` steps with the profiler off and of ``steps`` without one, taken in turns, a
    step of each at a time (``first`` goes first, then the order flips each step), so what slows the machine
    meanwhile slows both."""
    off = StepProfiler(ProfileParams(), Path(tempfile.gettempdir()), MAIN, print)
    seconds: dict[str, list[float]] = {"off": [], "none": []}
    second = "none" if first == "off" else "off"
    for n in range(1, steps + 1):
        for side in (first, second) if n % 2 else (second, first):
            start = time.perf_counter()
            step()
            if side == "off":
                off.step(n)
            seconds[side].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per side and round")
    parser.add_argument("--window", type=int, default=5, help="steps of the profiling window timed per round")
    args = parser.parse_args()
    step = build()
    for _ in range(3):  # warm-up: first allocations
        step()
    off = StepProfiler(ProfileParams(), Path(tempfile.gettempdir()), MAIN, print)
    call_ns = 1e9 * min(timeit.repeat(lambda: off.step(7), number=1_000_000, repeat=3)) / 1_000_000
    load = os.getloadavg()[0]
    sides: dict[str, list[float]] = {"off": [], "none": []}  # per round: seconds of its steps
    round_ratios: list[float] = []  # per round: median step off / median step none
    window: list[float] = []
    plain: list[float] = []
    closing: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            seconds = paired_round(step, args.steps, "off" if r % 2 == 0 else "none")
            for side in sides:
                sides[side].append(sum(seconds[side]))
            round_ratios.append(statistics.median(seconds["off"]) / statistics.median(seconds["none"]))
            # a window of --window steps after step 1 (start_step 1), its last step timed apart: it writes the trace
            on = StepProfiler(
                ProfileParams(enabled=True, start_step=1, steps=args.window), Path(tmp) / str(r), MAIN, lambda _: None
            )
            inside = timed_steps(step, args.window + 1, on)
            window += inside[1:-1]
            closing.append(inside[-1] - statistics.median(inside[1:-1]))
            plain += timed_steps(step, args.window - 1, None)
    point, low, high = bootstrap_ratio(sides["off"], sides["none"])
    median = statistics.median(round_ratios)
    step_ms = 1000 * statistics.median(sides["none"]) / args.steps
    window_ratio = statistics.median(window) / statistics.median(plain)
    load_after = os.getloadavg()[0]
    verdict = "PASS" if median <= 1.01 else "MISS"
    print(f"\nsmall nanogpt 4 x 128, batch {BATCH} x {CONTEXT}, CPU, {args.rounds} rounds of {args.steps} steps a side")
    print(f"load average 1 min: {load:.2f} before, {load_after:.2f} after\n")
    print("| figure | value |\n|---|---|")
    print(f"| step, no profiler object (median round) | {step_ms:.2f} ms |")
    print(f"| off / none, median over rounds of each round's median step | {median:.4f} |")
    print(f"| off / none, pooled over rounds [95% interval] | {point:.4f} [{low:.4f}, {high:.4f}] |")
    print(f"| `step()` when off | {call_ns:.0f} ns a call ({call_ns / 1e4 / step_ms:.5f}% of a step) |")
    print(f"| step inside a window / without (medians) | {window_ratio:.3f} |")
    close_ms = 1000 * statistics.median(closing)
    print(f"| closing a {args.window}-step window (stop + trace written, median) | {close_ms:.0f} ms |")
    print("\n| goal | target | measured | result |\n|---|---|---|---|")
    print(f"| off / none (median over rounds) | <= 1.01 | {median:.4f} | {verdict} |")
    result: dict[str, Any] = {
        "rounds": args.rounds,
        "steps": args.steps,
        "window": args.window,
        "step_ms": step_ms,
        "off_over_none": {"median": median, "rounds": round_ratios, "pooled": point, "low": low, "high": high},
        "seconds": sides,
        "off_call_ns": call_ns,
        "window_over_plain": window_ratio,
        "close_ms": close_ms,
        "load_avg": [load, load_after],
    }
    out = REPO / "bench" / "results" / "profiler_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
