"""GPU check: GPT-2 124M train-step throughput and MFU on one NVIDIA GPU, peak memory, and the loss's kernel.

    bash bench/gpu_check.sh [--steps 30] [--batch 16] [--peak-flops F] [--budget-s 450] [--out PATH]
    bash bench/gpu_check.sh --dry-run      # on CPU: the same code with a tiny model and 5 steps

Runs on a single GPU with no network and nothing installed beyond ``make setup``. For each recipe
it trains ``--steps`` steps of batch ``--batch`` x 1024 with our own train stage, ``nanugpt.train.trainer.train``
(the loop, ``TrainStep`` and builders the train stage runs; bf16 autocast, ``torch.compile``,
fused AdamW / Muon as the presets say; a constant lr schedule, since theirs are longer than the run)
on random GPT-2 token ids (the time of a step does not depend on the data):

- ``gpt2_124m``: ``params/fineweb_gpt2_124m.yaml`` (``nanogpt`` 12 x 768, ``adamw_nanogpt``, fused);
- ``modern_muon``: ``params/fineweb_gpt2_124m_muon.yaml`` (``nanogpt_modern`` + ``muon``).

Tokens/s is the train summary's ``steady_tokens_per_s``: the first 3 steps (which pay for
compiling and the first allocations) are left out, and the clock starts after a CUDA synchronize
at the end of step 3 and stops after the last step's loss has reached the host. MFU is that
times the model's FLOPs per token (``flops_per_token``: 6N + 12 L C T) over the device's peak from
``nanugpt.distributed.device.GPU_PEAK_FLOPS`` for bfloat16 (``--peak-flops`` for a GPU not in the table).
Peak memory is ``torch.cuda.max_memory_allocated`` over the run (reset before it).

The dispatch check builds the first recipe's parts with the same builders, runs one compiled
``TrainStep`` to warm up and profiles the next with ``torch.profiler``: it passes when the
dispatch table (``nanugpt.ops.cross_entropy.choose_kernel``) picks the standard kernel, no
CPU-tuned cross-entropy (``ChunkedCrossEntropy``, ``LinearCrossEntropy``) ran, and the
``nll_loss`` of the loss ran on the GPU (device time > 0). On CPU (``--dry-run``) it passes when
what ran is what the table picked.

Beside ours it prints published GPT-2 124M figures: nanoGPT's and llm.c's (sources in
``REFERENCES``), with the MFU they imply by the same FLOPs count on an A100's 312 TFLOP/s. Goal:
``gpt2_124m``'s MFU >= 0.5, llm.c's for A100-class GPUs as issue 22 puts it; the modern recipe is
shown only.
Phases that would start past ``--budget-s`` are skipped and say so (``gpu_check.sh`` also stops
the whole run at 8 minutes). Writes ``bench/results/gpu_check.json`` (``gpu_check-dry-run.json``)
and prints a table. Exit status 1 when the dispatch check fails, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench.train_throughput import make_data
from nanugpt.config.params import validate_params
from nanugpt.config.schema import Params
from nanugpt.data.tokenized import to_device
from nanugpt.distributed.device import autocast_context, peak_flops
from nanugpt.distributed.process_group import DistInfo
from nanugpt.metrics.train_metrics import WARMUP_STEPS
from nanugpt.ops.cross_entropy import Kernel, choose_kernel
from nanugpt.train.build import build_run, wrap_model
from nanugpt.train.step import TrainStep
from nanugpt.train.trainer import train
from pipeline import schema

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

RECIPES = {"gpt2_124m": "fineweb_gpt2_124m.yaml", "modern_muon": "fineweb_gpt2_124m_muon.yaml"}
GOAL_RECIPE = "gpt2_124m"
DRY_RUN_SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64}
DRY_RUN_STEPS, DRY_RUN_BATCH = WARMUP_STEPS + 2, 2
GPT2_VOCAB = 50257
A100_BF16_PEAK = 312e12
GOAL_MFU = 0.5  # issue 22: llm.c's published figure for A100-class GPUs, "about 0.5"
# Names the profiler gives the CPU-tuned autograd functions of nanugpt.ops.cpu_cross_entropy.
CPU_TUNED_LOSSES = ("ChunkedCrossEntropy", "LinearCrossEntropy")
PHASE_RESERVE_S = {"dispatch": 90.0, "recipe": 120.0}  # a phase starts only with this much budget left (cold compile)
REFERENCES = (
    {
        "name": "nanoGPT, 1x A100, compiled",
        "tokens_per_s": 12 * 1024 / 0.135,
        "source": "karpathy/nanoGPT README, 'efficiency notes' (2022-12-29): bench.py's GPT-2 124M, batch 12 x 1024, "
        "135 ms/iter with torch.compile; tokens/s derived",
    },
    {
        "name": "llm.c, per A100 80GB SXM (8x node)",
        "tokens_per_s": 10e9 / (90 * 60) / 8,
        "source": "karpathy/llm.c discussion #481 (2024-05-28): GPT-2 124M on 10B tokens in about 90 minutes on "
        "8x A100 80GB SXM; tokens/s per GPU derived (its evaluation included: a lower bound)",
    },
)


class PeakMemorySink:
    """A metric sink that keeps the interval's ``train/mem_gb`` (on CUDA the most allocated since the last log)."""

    every_step = False

    def __init__(self) -> None:
        self.mem_gb: float | None = None

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if "train/mem_gb" in metrics:
            self.mem_gb = max(self.mem_gb or 0.0, metrics["train/mem_gb"])

    def close(self, failed: bool = False) -> None:
        pass


def recipe_params(preset: str, tokenizer: dict, *, device_type: str, steps: int, batch: int, args: Any) -> Params:
    """The preset's model, optimizer and precision, trained ``steps`` steps of ``batch`` rows on the bench data."""
    tree: dict[str, Any] = schema.load(REPO / "params" / preset).to_dict()
    del tree["launch"]  # one process on one device here
    tree["general"].update(seed=0, device_type=device_type)
    tree["data"] = {"module": "tokenized", "dataset": "bench", "source": "unused"}
    tree["tokenizer"] = tokenizer
    if args.dry_run:
        tree["model"].update(DRY_RUN_SHAPE)
    tree["training"].update(
        max_steps=steps,
        device_batch_size=batch,
        global_batch_size=batch,
        log_every=steps,  # one interval: its memory figure is the peak of the whole run
        checkpoint_every=0,
        resume="never",
        peak_flops=args.peak_flops,
    )
    tree["scheduler"] = {"module": "constant"}  # the presets' warm-up and cooldown are longer than the run
    tree["eval"] = {"eval_every": 0, "eval_iters": 1}
    tree["logging"] = {"dvclive": False, "tensorboard": False, "wandb": False}
    return validate_params(tree, f"gpu_check:{preset}")


def measure_recipe(params: Params, data_dir: Path, out_dir: Path, device: torch.device) -> dict[str, Any]:
    """Train ``params`` with the train stage's loop; its steady tokens/s, MFU and peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sink = PeakMemorySink()
    started = time.perf_counter()
    summary = train(params, data_dir, out_dir, sinks=[sink])
    flops = params.model.build(GPT2_VOCAB).flops_per_token()
    peak = peak_flops(device, params.training.peak_flops, params.general.dtype)
    tokens_per_s = summary["steady_tokens_per_s"]
    return {
        "steps": summary["step"],
        "timed_steps": summary["step"] - WARMUP_STEPS,
        "tokens_per_step": params.training.global_batch_size * params.model.context_length,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu": flops * tokens_per_s / peak if peak and tokens_per_s else None,
        "peak_memory_gb": sink.mem_gb,  # CPU: the process's resident memory at the log
        "train_loss": summary["train_loss"],
        "wall_s": time.perf_counter() - started,
    }


def dispatch_check(params: Params, data_dir: Path, device: torch.device) -> dict[str, Any]:
    """Run the train step as the train stage builds it and profile one step: which cross-entropy kernel ran."""
    info = DistInfo(0, 0, 1, device)
    parts = build_run(params, data_dir, info, lambda _: None)
    model = wrap_model(parts.model, params, info)
    model.train()
    step = TrainStep(
        parts, model, info, peak_lr=params.optimizer.lr, dtype=params.general.dtype, grad_clip=params.training.grad_clip
    )
    step(0)  # compiles
    x, y = (to_device(t, device) for t in parts.train_batches.micro_batch(1, 0))
    with torch.no_grad(), autocast_context(device, params.general.dtype):  # eager: no second compile for no_grad
        hidden = parts.model(x, hidden_only=True)
        weight, _ = parts.model.linear_head()
        n_logits = hidden[..., 0].numel() * weight.size(0)
        chosen = choose_kernel(device.type, hidden.dtype, n_logits, torch.is_autocast_enabled(device.type))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    cpu_tuned = sorted({e.key for e in events if e.key.startswith(CPU_TUNED_LOSSES)})
    on_device = sorted({e.key for e in events if "nll_loss" in e.key and e.device_time_total > 0})
    if device.type == "cuda":
        passed = chosen is Kernel.STANDARD and not cpu_tuned and bool(on_device)
    else:  # the dry run: what ran is what the table picked
        passed = (chosen is Kernel.CPU_CHUNKED) == bool(cpu_tuned)
    del step, model, parts
    return {
        "device": str(device),
        "logits": n_logits,
        "hidden_dtype": str(hidden.dtype),
        "table_picks": chosen.value,
        "cpu_tuned_functions_seen": cpu_tuned,
        "nll_loss_events_on_device": on_device,
        "passed": passed,
    }


def gpt2_flops_per_token() -> float:
    """Training FLOPs per token of GPT-2 124M as our ``nanogpt`` counts them (for the references' MFU)."""
    return schema.load(REPO / "params" / RECIPES[GOAL_RECIPE]).model.build(GPT2_VOCAB).flops_per_token()


def free_memory(device: torch.device) -> None:
    """Release what the previous phase left (compiled graphs, cached blocks) before the next one."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(result: dict[str, Any]) -> None:
    """Our figures, the references beside them, and the goals."""
    print(
        f"\n{result['device_name']} ({result['mode']}), torch {result['torch']}, CUDA {result['cuda']}, "
        f"{result['steps']} steps of {result['batch']} x {result['context_length']} tokens per recipe"
    )
    print("\n| recipe | tokens/s | MFU | peak memory GB | wall s |\n|---|---|---|---|---|")
    for name, row in result["recipes"].items():
        if "skipped" in row:
            print(f"| {name} | skipped: {row['skipped']} | | | |")
            continue
        print(
            f"| {name} | {fmt(row['tokens_per_s'], ',.0f')} | {fmt(row['mfu'], '.3f')} | "
            f"{fmt(row['peak_memory_gb'], '.2f')} | {row['wall_s']:.0f} |"
        )
    print("\n| reference (published, GPT-2 124M) | tokens/s | MFU on A100 bf16 | source |\n|---|---|---|---|")
    for ref in result["references"]:
        print(f"| {ref['name']} | {ref['tokens_per_s']:,.0f} | {ref['mfu_a100']:.3f} | {ref['source']} |")
    print("\n| goal | target | measured | result |\n|---|---|---|---|")
    for goal in result["goals"]:
        print(f"| {goal['goal']} | {goal['target']} | {goal['measured']} | {goal['result']} |")


def goals(result: dict[str, Any], budget_s: float) -> list[dict[str, str]]:
    """Each goal with its figure and PASS/MISS (n/a where the dry run cannot judge it)."""
    row = result["recipes"].get(GOAL_RECIPE, {})
    mfu = row.get("mfu")
    dispatch = result["dispatch"]
    return [
        {
            "goal": f"{GOAL_RECIPE} MFU at least llm.c's for A100-class GPUs",
            "target": f">= {GOAL_MFU}",
            "measured": fmt(mfu, ".3f"),
            "result": verdict(None if result["mode"] == "dry run" or mfu is None else mfu >= GOAL_MFU),
        },
        {
            "goal": "loss on CUDA takes no CPU-tuned kernel",
            "target": "standard kernel, nll_loss on the GPU",
            "measured": "skipped" if "skipped" in dispatch else dispatch["table_picks"],
            "result": verdict(None if "skipped" in dispatch else dispatch["passed"]),
        },
        {
            "goal": "whole check in the time budget",
            "target": f"<= {budget_s:.0f} s",
            "measured": f"{result['wall_s']:.0f} s",
            "result": verdict(result["wall_s"] <= budget_s),
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on CPU, a tiny model and 5 steps: walks the same code")
    parser.add_argument("--steps", type=int, default=30, help="steps per recipe; the first 3 are not timed")
    parser.add_argument("--batch", type=int, default=16, help="rows of 1024 tokens per step (fits a 40 GB A100)")
    parser.add_argument("--peak-flops", type=float, default=None, help="the GPU's bf16 peak, if not in our table")
    parser.add_argument("--budget-s", type=float, default=450.0, help="no phase starts that would end past this")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default: bench/results/...)")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps that are not timed")
    started = time.perf_counter()
    if args.dry_run:
        device, steps, batch = torch.device("cpu"), DRY_RUN_STEPS, DRY_RUN_BATCH
    elif torch.cuda.is_available():
        device, steps, batch = torch.device("cuda", 0), args.steps, args.batch
    else:
        print("gpu_check: torch sees no CUDA GPU; run `bash bench/gpu_check.sh --dry-run` to check the code on CPU")
        raise SystemExit(2)
    result: dict[str, Any] = {
        "mode": "dry run" if args.dry_run else "gpu",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "batch": batch,
        "steps": steps,
        "context_length": DRY_RUN_SHAPE["context_length"] if args.dry_run else 1024,
        "recipes": {},
    }

    def time_left(phase: str) -> bool:
        reserve = 0.0 if args.dry_run else PHASE_RESERVE_S[phase]
        return time.perf_counter() - started + reserve <= args.budget_s

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _ = make_data(Path(tmp), {"vocab": GPT2_VOCAB})
        tokenizer = json.loads((data_dir / "meta.json").read_text())["tokenizer"]
        params = {
            name: recipe_params(preset, tokenizer, device_type=device.type, steps=steps, batch=batch, args=args)
            for name, preset in RECIPES.items()
        }
        if time_left("dispatch"):
            result["dispatch"] = dispatch_check(params[GOAL_RECIPE], data_dir, device)
        else:
            result["dispatch"] = {"skipped": "time budget", "passed": False}
        free_memory(device)
        for name in RECIPES:
            if not time_left("recipe"):
                result["recipes"][name] = {"skipped": "time budget"}
                continue
            result["recipes"][name] = measure_recipe(params[name], data_dir, Path(tmp) / name, device)
            free_memory(device)
    flops = gpt2_flops_per_token()
    result["references"] = [
        {**ref, "mfu_a100": ref["tokens_per_s"] * flops / A100_BF16_PEAK, "flops_per_token": flops}
        for ref in REFERENCES
    ]
    result["wall_s"] = time.perf_counter() - started
    result["goals"] = goals(result, args.budget_s)
    print_tables(result)
    out = args.out or BENCH / "results" / ("gpu_check-dry-run.json" if args.dry_run else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not result["dispatch"]["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
