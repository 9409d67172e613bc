"""Throughput finder (nanuGPT's ``throughput.py``): the largest micro-batch that fits, and its tokens/s.

    python -m pipeline.fit_batch params.yaml                 # CUDA: the device's memory decides
    python -m pipeline.fit_batch params.yaml --memory-gb 4   # CPU (or any device): a budget you choose

Runs real train steps of the params' model, optimizer and loss on the token files (run the tokenize stage
first). It doubles ``training.device_batch_size`` until a step no longer fits, then bisects; then it times
``--steps`` optimizer steps at the params' ``global_batch_size`` (rounded to a multiple of the found
micro-batch) and prints the suggestion. A step fits on CUDA when it raises no out-of-memory error; with
``--memory-gb`` when its memory, counted as parameters, gradients and optimizer state plus every tensor
autograd saves for the backward pass, stays within the budget. Nothing is written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nanugpt.config.schema import Params
from nanugpt.distributed.device import pick_device
from nanugpt.distributed.process_group import DistInfo
from nanugpt.train.build import RunParts, build_run
from nanugpt.train.step import TrainStep
from pipeline import paths
from pipeline.cli import parse_argv, run_command
from pipeline.schema import load

LARGEST = 4096  # micro-batches beyond this are not tried


@dataclass(frozen=True)
class Probe:
    """One micro-batch size tried: whether it fit, and its memory in bytes (counted or measured)."""

    batch: int
    fits: bool
    memory: int


def with_batch(params: Params, device_batch: int, global_batch: int) -> Params:
    """``params`` with the training batch sizes replaced."""
    training = params.training.model_copy(
        update={"device_batch_size": device_batch, "global_batch_size": global_batch, "max_steps": 10**9}
    )
    return params.model_copy(update={"training": training})


def counted_memory(run: Callable[[], None], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of one step counted by hand: parameters, gradients, optimizer state, and saved activations."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    weights = sum(2 * p.numel() * p.element_size() for p in model.parameters())  # the tensor and its gradient
    state = sum(
        v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    )
    return weights + state + saved


def built_step(params: Params, info: DistInfo) -> tuple[RunParts, TrainStep]:
    """The parts of a run of ``params`` on its token files, and its optimizer step."""
    parts = build_run(params, paths.tokenized_dir(params), info, lambda line: None)
    step = TrainStep(
        parts,
        parts.model,
        info,
        peak_lr=params.optimizer.lr,
        dtype=params.general.dtype,
        grad_clip=params.training.grad_clip,
    )
    return parts, step


def probe(params: Params, batch: int, info: DistInfo, budget: int | None) -> Probe:
    """Run one optimizer step with micro-batch ``batch``; say whether it fits."""
    parts, step = built_step(with_batch(params, batch, batch), info)
    if budget is not None:
        memory = counted_memory(lambda: step(0), parts.model, parts.optimizer)
        return Probe(batch, memory <= budget, memory)
    torch.cuda.reset_peak_memory_stats(info.device)
    try:
        step(0)
        torch.cuda.synchronize(info.device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return Probe(batch, False, -1)
    return Probe(batch, True, torch.cuda.max_memory_allocated(info.device))


def largest_fit(fits: Callable[[int], Probe], largest: int = LARGEST) -> tuple[int, list[Probe]]:
    """The largest micro-batch for which ``fits`` holds (0 if none): doubling, then bisection."""
    probes: list[Probe] = []

    def tried(batch: int) -> bool:
        probes.append(fits(batch))
        return probes[-1].fits

    low, high = 0, 1
    while high <= largest and tried(high):
        low, high = high, 2 * high
    high = min(high, largest + 1)
    while high - low > 1:  # low fits, high does not (or is past the largest)
        middle = (low + high) // 2
        low, high = (middle, high) if tried(middle) else (low, middle)
    return low, probes


def tokens_per_second(params: Params, batch: int, info: DistInfo, steps: int) -> tuple[int, float]:
    """The global batch (params', rounded to a multiple of ``batch``) and its tokens/s over ``steps`` steps."""
    global_batch = max(batch, round(params.training.global_batch_size / batch) * batch)
    timed = with_batch(params, batch, global_batch)
    parts, step = built_step(timed, info)
    step(0)  # warm-up: allocations, kernel choice
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    start = time.perf_counter()
    for number in range(1, steps + 1):
        float(step(number).loss)  # waits for the step
    return global_batch, parts.tokens_per_step * steps / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    """Find and time the largest micro-batch of a params file (see the module doc)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    options: dict[str, str] = {}
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("--memory-gb", "--steps"):
            options[word] = next(words, "")
        else:
            rest.append(word)
    path, overrides = parse_argv(rest)

    def body() -> int:
        params = load(path, overrides)
        device = pick_device(params.general.device_type)
        info = DistInfo(rank=0, local_rank=0, world_size=1, device=device)
        budget = int(float(options["--memory-gb"]) * 2**30) if "--memory-gb" in options else None
        if budget is None and device.type != "cuda":
            print("error: on CPU pass --memory-gb (the memory a step may use)", file=sys.stderr)
            return 2
        batch, probes = largest_fit(lambda b: probe(params, b, info, budget))
        for p in probes:
            memory = f"{p.memory / 2**30:.3f} GiB" if p.memory >= 0 else "out of memory"
            print(f"device_batch_size {p.batch:5d}: {'fits' if p.fits else 'does not fit'} ({memory})")
        if batch == 0:
            print("error: not even a micro-batch of 1 fits", file=sys.stderr)
            return 1
        global_batch, rate = tokens_per_second(params, batch, info, int(options.get("--steps", "3")))
        print(f"tokens/s at device_batch_size {batch}, global_batch_size {global_batch}: {rate:,.0f}")
        print(f"suggested: --training.device_batch_size {batch} --training.global_batch_size {global_batch}")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
