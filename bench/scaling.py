"""How train cost grows: tokens/s and CPU MFU of our train loop across model sizes, contexts, eager and compiled.

    python -m bench.scaling [--sizes 1M,10M,50M,120M] [--contexts 256,1024] [--modes eager,compiled]
                            [--tokens-per-step 2048] [--steps N]

For each model size (``nanogpt``: about 1M and 10M parameters on a 65-token vocabulary, about 50M and
GPT-2's 124M on GPT-2's), context and mode, runs ``nanugpt.train.trainer.train`` on random token files
(``train_throughput.py``'s) for the size's number of steps at ``--tokens-per-step`` tokens per step
(batch = tokens / context), and reads ``steady_tokens_per_s`` (after the first ``WARMUP_STEPS`` steps,
which pay for torch.compile). CPU MFU is model FLOP/s (6N + attention, the model's own
``flops_per_token``) over the FLOP/s of a 2048^2 fp32 matmul timed right before and right after the run,
as in ``train_throughput.py``: the machine's speed as it was during the run. The attention term is the
PaLM / nanoGPT count (12 L T C per token, the full T x T), which a causal kernel does about half of: at
context 1024 a small model's MFU can read above 1.

Goal (issue 22): eager CPU MFU >= 0.6 from 10M parameters up. Prints one table and writes
``bench/results/scaling.json``. Size ``120M`` at context 1024 takes several seconds a step on 2 vCPUs;
``--steps`` overrides every size's steps (at least ``WARMUP_STEPS`` + 1) for a quick run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.train_throughput import make_data, matmul_flops, our_params
from nanugpt.metrics.train_metrics import WARMUP_STEPS
from nanugpt.train.trainer import train

BENCH = Path(__file__).resolve().parent

CHAR_VOCAB, GPT2_VOCAB = 65, 50304
SIZES: dict[str, dict[str, int]] = {  # name: shape and steps (about 10 s of timed steps each, eager, 2 vCPUs)
    "1M": dict(n_layer=4, n_head=4, n_embd=128, vocab=CHAR_VOCAB, steps=60),
    "10M": dict(n_layer=6, n_head=6, n_embd=384, vocab=CHAR_VOCAB, steps=25),
    "50M": dict(n_layer=8, n_head=8, n_embd=512, vocab=GPT2_VOCAB, steps=8),
    "120M": dict(n_layer=12, n_head=12, n_embd=768, vocab=GPT2_VOCAB, steps=6),
}
GOAL_MFU, GOAL_FROM = 0.6, "10M"


def measure(size: str, context: int, *, compiled: bool, tokens_per_step: int, steps: int, tmp: Path) -> dict[str, Any]:
    """One configuration: its parameters, steady tokens/s and CPU MFU."""
    spec = SIZES[size]
    if tokens_per_step % context:
        sys.exit(f"--tokens-per-step {tokens_per_step} is not a whole number of {context}-token rows")
    shape = {k: spec[k] for k in ("n_layer", "n_head", "n_embd", "vocab")}
    shape |= {"context_length": context, "batch": tokens_per_step // context}
    folder = tmp / f"{size}-{context}-{'compiled' if compiled else 'eager'}"
    data_dir, _ = make_data(folder, shape)
    params = our_params(shape, steps, compiled, json.loads((data_dir / "meta.json").read_text())["tokenizer"])
    model = params.model.build(shape["vocab"])
    n_params, flops_per_token = sum(p.numel() for p in model.parameters()), model.flops_per_token()
    del model
    torch._dynamo.reset()  # each run compiles afresh: one process's runs would pile up to dynamo's recompile limit
    before = matmul_flops()
    started = time.perf_counter()
    summary = train(params, data_dir, folder / "out")
    wall = time.perf_counter() - started
    after = matmul_flops()
    tokens_per_s = summary["steady_tokens_per_s"]
    return {
        "size": size,
        "params": n_params,
        "context": context,
        "batch": shape["batch"],
        "compiled": compiled,
        "steps": steps,
        "tokens_per_s": tokens_per_s,
        "matmul_flops": (before + after) / 2,
        "cpu_mfu": flops_per_token * tokens_per_s / ((before + after) / 2),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--contexts", default="256,1024")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--tokens-per-step", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=None, help="steps of every size (default: the size's own)")
    args = parser.parse_args()
    sizes, contexts = args.sizes.split(","), [int(c) for c in args.contexts.split(",")]
    modes = args.modes.split(",")
    unknown = [s for s in sizes if s not in SIZES] + [m for m in modes if m not in ("eager", "compiled")]
    if unknown:
        parser.error(f"unknown size or mode: {', '.join(unknown)} (sizes: {', '.join(SIZES)}; modes: eager, compiled)")
    if args.steps is not None and args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps that are not timed")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for context in contexts:
                for mode in modes:
                    steps = args.steps or SIZES[size]["steps"]
                    row = measure(
                        size,
                        context,
                        compiled=mode == "compiled",
                        tokens_per_step=args.tokens_per_step,
                        steps=steps,
                        tmp=Path(tmp),
                    )
                    rows.append(row)
                    print(
                        f"{size} ({row['params'] / 1e6:.1f}M), context {context}, {mode}: "
                        f"{row['tokens_per_s']:,.0f} tok/s, CPU MFU {row['cpu_mfu']:.3f} ({row['wall_s']:.0f} s)",
                        flush=True,
                    )
    goal_sizes = list(SIZES)[list(SIZES).index(GOAL_FROM) :]
    judged = [r for r in rows if r["size"] in goal_sizes and not r["compiled"]]
    print("\n| size | parameters | context | batch | mode | tokens/s | CPU MFU | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        goal = ""
        if r in judged:
            goal = f"{'PASS' if r['cpu_mfu'] >= GOAL_MFU else 'MISS'} >= {GOAL_MFU}"
        mode = "compiled" if r["compiled"] else "eager"
        print(
            f"| {r['size']} | {r['params']:,} | {r['context']} | {r['batch']} | {mode} | {r['tokens_per_s']:,.0f} | "
            f"{r['cpu_mfu']:.3f} | {goal} |"
        )
    verdict = "PASS" if judged and all(r["cpu_mfu"] >= GOAL_MFU for r in judged) else "MISS"
    print(f"\neager CPU MFU >= {GOAL_MFU} from {GOAL_FROM} parameters up: {verdict}")
    out = BENCH / "results" / "scaling.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"goal_mfu": GOAL_MFU, "verdict": verdict, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
