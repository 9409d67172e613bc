"""Where a train step's time goes, for the two recipes of ``quality.py``.

    python -m bench.step_profile [--rounds 7] [--steps 10] [--top 12]

Times the model's forward + backward and the optimizer step separately for
``nanogpt`` + ``adamw_nanogpt`` at batch 12 (nanoGPT's CPU run) and
``nanogpt_modern`` (``short_conv: 4``) + ``muon`` at batch 24 (eager, and
compiled as ``quality.py`` runs it, and compiled without the short
convolutions, to show their cost) and 12, in interleaved rounds, per 768
tokens so the batch sizes compare (the first round's warm-up step compiles
the compiled ones); then prints the ``torch.profiler`` ops that take the most
self CPU time in each. Random token ids: the time of a step does not depend
on the data. Writes ``bench/results/step_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from nanugpt.config.params import validate_params

REPO = Path(__file__).resolve().parent.parent

VOCAB = 65
TOKENS = 12 * 64  # figures are per nanoGPT step
MUON = {"module": "muon", "lr": 0.015}
MODERN = {"module": "nanogpt_modern", "short_conv": 4}
RECIPES = {  # name: (model, optimizer, batch, torch.compile)
    "nanogpt + adamw_nanogpt, batch 12": ({"module": "nanogpt"}, {"module": "adamw_nanogpt", "lr": 1e-3}, 12, False),
    "nanogpt_modern + muon, batch 24": (MODERN, MUON, 24, False),
    "nanogpt_modern + muon, batch 24, compiled": (MODERN, MUON, 24, True),
    "nanogpt_modern + muon, batch 24, compiled, no short_conv": ({**MODERN, "short_conv": 0}, MUON, 24, True),
    "nanogpt_modern + muon, batch 12": (MODERN, MUON, 12, False),
}


def build(
    model: dict[str, Any], optimizer: dict[str, Any], batch: int, compiled: bool
) -> tuple[torch.nn.Module, Any, Any, torch.Tensor]:
    params = validate_params(
        {
            "general": {"seed": 0, "device_type": "cpu"},
            "data": {"module": "tokenized", "dataset": "bench", "source": "unused"},
            "tokenizer": {"module": "char"},
            "model": {**model, "n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": 64},
            "training": {"max_steps": 10, "device_batch_size": batch, "global_batch_size": batch},
            "optimizer": optimizer,
            "scheduler": {"module": "constant"},
            "logging": {"dvclive": False},
        },
        "bench",
    )
    torch.manual_seed(0)
    net = params.model.build(VOCAB)
    ids = torch.randint(0, VOCAB, (batch, 65), generator=torch.Generator().manual_seed(0))
    optimizer = params.optimizer.build(net, "cpu")
    return torch.compile(net) if compiled else net, optimizer, params.loss.build(), ids


def step(net: torch.nn.Module, optimizer: Any, loss_fn: Any, ids: torch.Tensor) -> tuple[float, float]:
    """One train step; returns (forward + backward seconds, optimizer seconds)."""
    start = time.perf_counter()
    loss_fn(net(ids[:, :-1]), ids[:, 1:]).backward()
    middle = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12, help="profiler ops listed per recipe")
    args = parser.parse_args()
    setups = {name: build(*recipe) for name, recipe in RECIPES.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"fwd_bwd": [], "optimizer": []} for name in setups}
    for _ in range(args.rounds):
        for name, (net, optimizer, loss_fn, ids) in setups.items():
            step(net, optimizer, loss_fn, ids)  # warm-up
            spent = [step(net, optimizer, loss_fn, ids) for _ in range(args.steps)]
            tokens = ids.size(0) * (ids.size(1) - 1)
            per_768 = 1000 * TOKENS / tokens / args.steps  # seconds of all steps -> ms per 768 tokens
            times[name]["fwd_bwd"].append(sum(f for f, _ in spent) * per_768)
            times[name]["optimizer"].append(sum(o for _, o in spent) * per_768)
    summary: dict[str, Any] = {}
    reference = None
    print("| step (per 768 tokens) | fwd+bwd ms | optimizer ms | total ms | / nanogpt |\n|---|---|---|---|---|")
    for name, figures in times.items():
        fwd_bwd, opt = statistics.median(figures["fwd_bwd"]), statistics.median(figures["optimizer"])
        reference = reference or fwd_bwd + opt
        summary[name] = {"fwd_bwd_ms": fwd_bwd, "optimizer_ms": opt, "rounds": figures}
        print(f"| {name} | {fwd_bwd:.1f} | {opt:.1f} | {fwd_bwd + opt:.1f} | {(fwd_bwd + opt) / reference:.2f} |")
    for name, (net, optimizer, loss_fn, ids) in setups.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step(net, optimizer, loss_fn, ids)
        print(f"\n{name}: top ops by self CPU time over {args.steps} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=48))
    out = REPO / "bench" / "results" / "step_profile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
