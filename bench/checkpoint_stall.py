"""How long a checkpoint stops training: a blocking save against ``training.async_checkpoint``, 1 process and FSDP.

    python -m bench.checkpoint_stall [--rounds 7] [--layers 12] [--width 768] [--steps 2] [--out DIR]
    python -m bench.checkpoint_stall --fsdp [--ranks 2] ...      # launches itself under torchrun (gloo)
    python -m torch.distributed.run --standalone --nproc-per-node=2 -m bench.checkpoint_stall --fsdp ...
    python -m bench.checkpoint_stall --quick [--fsdp]             # a tiny model: checks the script in seconds

A ``nanogpt`` model (``--layers`` x ``--width``, 12 heads (4 where 12 does not divide the width), context 64,
the character vocabulary padded to 128; 12 x 768 is 85M parameters, 1.0 GB of float32 weights and AdamW moments)
takes two AdamW steps of 64 tokens per rank, so the optimizer has its state, before the first save. Two
``Checkpointer`` objects (``nanugpt/train/checkpointer.py``), built as the trainer builds its own, save into
folders of their own: one blocking ("sync"), one with ``training.async_checkpoint: true`` ("async"). With
``--fsdp`` the model is sharded over the ranks by ``nanugpt.distributed.fsdp.shard_model`` and both
checkpointers have ``training.strategy: fsdp``: step folders written through DCP (``async_save`` for the async
one), every rank writing its shards.

Each round saves once with each checkpointer, the order flipping each round, after a first save of each
(timed and printed apart: a run's first async save also allocates the memory of its host copy, which later
saves reuse). A save's **stall** is what the train loop waits for in ``Trainer.save``: building the state
(``model_optimizer_state`` and the run's plain values, as ``Trainer.state_dict`` does) plus
``Checkpointer.save`` until it returns; under FSDP the slowest rank's (all ranks start a save together, after
a barrier). A blocking save returns once the checkpoint is written (fsynced, checksummed, renamed); an async
one once the state is copied into host memory, and the write goes on in a background thread. After each save
training goes on: ``--steps`` optimizer steps, and after an async save more, until its write has finished
(the **background write** time: from the start of the save to the end of the write, as the writer thread
reports it through ``on_saved``). So the next save never waits for the previous write, as in a run whose
``checkpoint_every`` leaves the write time to finish; a run that saves more often also waits there.

Figures, each the median over rounds: the stall of each side, async / sync of each round's stalls (the goal of
issue 34: <= 0.1), the pooled ratio over rounds with a 95% bootstrap interval (``bench/stats.py``), the
background write time, the checkpoint's size on disk, the time of ``staged()``'s copy of the state alone (one
process: the floor of the async stall; 3 copies after the rounds), and the train step's time while a background
write runs over its time after a blocking save (on 2 vCPUs the writer thread takes CPU from training), and
from it the training time an async save costs in all: its stall plus the extra time of the steps while it
writes (over the median step after the round's blocking save), for information beside the goal. The
last checkpoint of each folder is loaded back and checked: ``store.load_checkpoint`` (``.pt``) or
``sharded.read_run_state`` and ``sharded.load_into`` (step folders), with the model's and AdamW's tensors
compared with those at the save's step, so the async checkpoint holds the saved step's state, not a later one.

Checkpoints go to ``--out`` (kept), or to a temporary folder that is removed. Prints Markdown tables (rank 0)
and writes JSON to ``bench/results/checkpoint_stall[-fsdp].json`` (or ``--json``). It never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.stats import bootstrap_ratio
from nanugpt.checkpoint import sharded, store
from nanugpt.checkpoint.background import staged
from nanugpt.config.params import validate_params
from nanugpt.config.schema import Params
from nanugpt.distributed.process_group import DistInfo, process_group
from nanugpt.train.checkpointer import Checkpointer, rng_state

REPO = Path(__file__).resolve().parent.parent
VOCAB, CONTEXT, BATCH = 65, 64, 1  # BATCH rows of CONTEXT tokens per rank and step
GOAL = 0.1  # stall(async) <= GOAL x stall(sync)
QUICK = {"layers": 2, "width": 64, "rounds": 2, "steps": 1}


def bench_params(args: argparse.Namespace, *, fsdp: bool, async_checkpoint: bool) -> Params:
    """The params of one checkpointer: the model and optimizer measured, and how it saves."""
    heads = 12 if args.width % 12 == 0 else 4
    return validate_params(
        {
            "general": {"seed": 0, "device_type": "cpu"},
            "data": {"module": "tokenized", "dataset": "bench", "source": "unused"},
            "tokenizer": {"module": "char"},
            "model": {"module": "nanogpt", "n_layer": args.layers, "n_head": heads, "n_embd": args.width,
                      "context_length": CONTEXT},
            "training": {"max_steps": 1000, "device_batch_size": BATCH, "global_batch_size": BATCH * args.world_size,
                         "strategy": "fsdp" if fsdp else "ddp", "async_checkpoint": async_checkpoint,
                         "keep_last": 1},
            "optimizer": {"module": "adamw", "lr": 1e-4},
            "scheduler": {"module": "constant"},
            "logging": {"dvclive": False},
        },
        "bench",
    )  # fmt: skip


class Bench:
    """The model, its optimizer and the two checkpointers of this process."""

    def __init__(self, args: argparse.Namespace, info: DistInfo, folder: Path) -> None:
        from nanugpt.distributed.fsdp import shard_model

        self.info = info
        self.params = bench_params(args, fsdp=args.fsdp, async_checkpoint=False)
        torch.manual_seed(0)
        model = self.params.model.build(VOCAB)
        if args.fsdp and info.world_size > 1:
            model = shard_model(model, info, reshard_after_forward=True, policy=None, compile_blocks=False)
        self.model = model
        self.optimizer = self.params.optimizer.build(model, "cpu")
        self.loss_fn = self.params.loss.build()
        generator = torch.Generator().manual_seed(1 + info.rank)
        self.ids = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=generator)
        self.step = 0
        self.written_at: dict[str, float] = {}  # side -> perf_counter when its last write finished (rank 0)
        self.checkpointers = {
            side: Checkpointer(
                folder / side,
                bench_params(args, fsdp=args.fsdp, async_checkpoint=side == "async"),
                info,
                log=print,
                model=model,
                optimizer=self.optimizer,
                on_saved=lambda record, side=side: self.written_at.__setitem__(side, time.perf_counter()),
            )
            for side in ("sync", "async")
        }
        for checkpointer in self.checkpointers.values():
            checkpointer.folder.mkdir(parents=True, exist_ok=True)

    def train_step(self) -> float:
        """One optimizer step (every rank together under FSDP); its seconds."""
        start = time.perf_counter()
        self.loss_fn(self.model(self.ids[:, :-1]), self.ids[:, 1:]).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return time.perf_counter() - start

    def state(self, checkpointer: Checkpointer) -> dict[str, Any]:
        """The state ``Trainer.state_dict`` would save at this step (its plain values stand in for the loop's)."""
        model_state, optimizer_state = checkpointer.model_optimizer_state()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": {},
            "scaler": {},
            "step": self.step,
            "tokens_seen": self.step * BATCH * CONTEXT * self.info.world_size,
            "train_loss": None,
            "best_val_loss": None,
            "rng": rng_state(),
            "data": {"seed": 0, "next_step": self.step},
            "params": checkpointer.params.to_dict(),
            "params_digest": checkpointer.digest,
            "data_digest": checkpointer.data_digest,
            "vocab_size": VOCAB,
        }

    def any_busy(self, checkpointer: Checkpointer) -> bool:
        """True while the background write of any rank runs (so all ranks take the same number of steps)."""
        busy = checkpointer.writer is not None and checkpointer.writer.busy
        if self.info.world_size == 1:
            return busy
        flag = torch.tensor([float(busy)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def save(self, side: str, steps: int) -> dict[str, Any]:
        """Save once with ``side``'s checkpointer and train on; this rank's seconds (the write's: rank 0's)."""
        checkpointer = self.checkpointers[side]
        if self.info.world_size > 1:
            dist.barrier()
        self.written_at.pop(side, None)
        start = time.perf_counter()
        checkpointer.save(self.step, self.state(checkpointer))
        stall = time.perf_counter() - start
        saved_step = self.step
        snapshot = self.snapshot()
        step_times = [self.train_step() for _ in range(steps)]
        while self.any_busy(checkpointer):
            step_times.append(self.train_step())
        checkpointer.wait()
        write = self.written_at.get(side, time.perf_counter()) - start  # rank 0 knows when the write finished
        return {"stall_s": stall, "write_s": write, "step_s": step_times, "step": saved_step, "snapshot": snapshot}

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of this rank's part of a few saved tensors: a weight, its AdamW moments, the last block's."""
        first, last = self.first_last_parameters()
        out: dict[str, torch.Tensor] = {}
        for name, p in (("first", first), ("last", last)):
            out[name] = local(p).clone()
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{name}.{key}"] = local(self.optimizer.state[p][key]).clone()
        return out

    def first_last_parameters(self) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        """The first and the last parameter with optimizer state (the embedding and the last block's weights)."""
        params = [p for p in self.model.parameters() if p in self.optimizer.state]
        return params[0], params[-1]

    def check_loads(self, side: str, saved: dict[str, Any]) -> str:
        """Load ``side``'s last checkpoint back and compare it with ``saved`` (``save``'s return); a line."""
        folder = self.checkpointers[side].folder
        step, snapshot = saved["step"], saved["snapshot"]
        if self.params.training.strategy == "fsdp":
            path = folder / "last"
            run = sharded.read_run_state(path, "full") if self.info.is_main else {"step": step}
            sharded.load_into(path, self.model, self.optimizer)  # the shards back into this rank's model
            loaded = self.snapshot()
        else:
            path = folder / "last.pt"
            run = store.load_checkpoint(path, "cpu", "full")
            names = {id(p): n for n, p in self.model.named_parameters()}
            order = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
            moments = {order[i]: s for i, s in run["optimizer"]["state"].items()}  # by position -> by name
            loaded = {}
            for label, p in zip(("first", "last"), self.first_last_parameters(), strict=True):
                loaded[label] = run["model"][names[id(p)]]
                for key in ("exp_avg", "exp_avg_sq"):
                    loaded[f"{label}.{key}"] = moments[names[id(p)]][key]
        same = all(torch.equal(loaded[key], snapshot[key]) for key in snapshot)
        if self.info.world_size > 1:
            flag = torch.tensor([float(same)])
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            same = bool(flag.item())
        ok = run["step"] == step and same
        return (
            f"{side}: {path.name} -> step {run['step']}, tensors {'equal' if same else 'DIFFERENT'} at step {step}"
            + ("" if ok else " (MISMATCH)")
        )


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly sharded) tensor."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor.detach()


def disk_bytes(path: Path) -> int:
    """Bytes of a ``.pt`` file or of every file in a step folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def gather(value: Any, info: DistInfo) -> list[Any]:
    """``value`` of every rank (a list of one in one process)."""
    if info.world_size == 1:
        return [value]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def run(args: argparse.Namespace, info: DistInfo) -> dict[str, Any] | None:
    """Every round on this rank; the results on rank 0 (None elsewhere)."""
    say = print if info.is_main else (lambda *_, **__: None)
    load_before = os.getloadavg()
    mine = args.out or (Path(tempfile.mkdtemp(prefix="checkpoint_stall-")) if info.is_main else None)
    folder = Path(gather(str(mine), info)[0])  # rank 0's
    try:
        bench = Bench(args, info, folder)
        n_params = sum(p.numel() for p in bench.model.parameters())
        for _ in range(2):  # the optimizer's state exists from the first step; the second one warms up
            bench.train_step()
        last: dict[str, dict[str, Any]] = {}

        def measured_save(side: str) -> dict[str, Any]:
            """One save of ``side`` and the steps after it; the slowest rank's stall, rank 0's other figures."""
            last[side] = bench.save(side, args.steps)
            everyone = gather({k: v for k, v in last[side].items() if k != "snapshot"}, info)
            return {
                "stall_s": max(m["stall_s"] for m in everyone),
                "stall_s_ranks": [m["stall_s"] for m in everyone],
                "write_s": everyone[0]["write_s"],
                "step_s": statistics.median(everyone[0]["step_s"]),
                "steps": len(everyone[0]["step_s"]),
                "step_times": everyone[0]["step_s"],
            }

        # a run's first save of each kind, apart: the first async one also allocates the host copy's memory
        first = {side: measured_save(side) for side in ("sync", "async")}
        say(f"first saves (not in the rounds): stall sync {first['sync']['stall_s']:.3f} s, async "
            f"{first['async']['stall_s']:.3f} s", flush=True)  # fmt: skip
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ("sync", "async") if r % 2 == 0 else ("async", "sync")
            row: dict[str, Any] = {"order": list(order)}
            for side in order:
                row[side] = measured_save(side)
            row["ratio"] = row["async"]["stall_s"] / row["sync"]["stall_s"]
            rounds.append(row)
            say(
                f"round {r + 1}/{args.rounds}: stall sync {row['sync']['stall_s']:.3f} s, async "
                f"{row['async']['stall_s']:.3f} s ({row['ratio']:.3f}); "
                f"background write {row['async']['write_s']:.2f} s, "
                f"{row['async']['steps']} steps meanwhile",
                flush=True,
            )
        copies = []  # the floor of the async stall: staged()'s copy of the state alone, after the rounds
        for _ in range(0 if args.fsdp else 3):
            start = time.perf_counter()
            copy = staged(bench.state(bench.checkpointers["async"]))
            copies.append(time.perf_counter() - start)
            del copy
        size = {
            side: disk_bytes(c.folder / ("last" if args.fsdp else "last.pt")) if info.is_main else 0
            for side, c in bench.checkpointers.items()
        }
        checks = [bench.check_loads(side, last[side]) for side in ("sync", "async")]
    finally:
        if info.world_size > 1:
            dist.barrier()
        if info.is_main and args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    if not info.is_main:
        return None
    measured = {
        "copies": copies,
        "first": first,
        "rounds": rounds,
        "parameters": n_params,
        "size": size,
        "checks": checks,
        "load_before": load_before,
    }
    return summarise(args, info, measured)


def summarise(args: argparse.Namespace, info: DistInfo, measured: dict[str, Any]) -> dict[str, Any]:
    """Print the tables (rank 0) and return the JSON result."""
    rounds, n_params, size = measured["rounds"], measured["parameters"], measured["size"]
    checks, load_before, first = measured["checks"], measured["load_before"], measured["first"]
    sync = [r["sync"]["stall_s"] for r in rounds]
    stall_async = [r["async"]["stall_s"] for r in rounds]
    ratios = [r["ratio"] for r in rounds]
    median = statistics.median(ratios)
    point, low, high = bootstrap_ratio(stall_async, sync)
    write = statistics.median(r["async"]["write_s"] for r in rounds)
    step_during = statistics.median(r["async"]["step_s"] for r in rounds)
    step_after = statistics.median(r["sync"]["step_s"] for r in rounds)
    # training time a save costs: its stall, and for an async save also the steps' extra time while it writes
    # (each round's steps after it over the median step after the blocking save of the same round)
    lost = [r["async"]["stall_s"] + sum(t - r["sync"]["step_s"] for t in r["async"]["step_times"]) for r in rounds]
    lost_ratio = statistics.median(a / r["sync"]["stall_s"] for a, r in zip(lost, rounds, strict=True))
    load_after = os.getloadavg()
    mode = f"FSDP, {info.world_size} ranks (gloo), DCP step folders" if args.fsdp else "1 process, .pt files"
    big_enough = statistics.median(sync) >= 1.0
    print(
        f"\nnanogpt {args.layers} x {args.width} ({n_params / 1e6:.1f}M parameters), AdamW; {mode}; "
        f"{args.rounds} rounds, {args.steps}+ steps after each save; {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    print(f"load average (1, 5, 15 min): before {fmt_load(load_before)}, after {fmt_load(load_after)}\n")
    print("| figure | value |\n|---|---|")
    print(f"| checkpoint size on disk (sync / async) | {size['sync'] / 1e9:.3f} / {size['async'] / 1e9:.3f} GB |")
    print(f"| stall, blocking save (median) | {statistics.median(sync):.3f} s |")
    print(f"| stall, async save (median) | {statistics.median(stall_async):.3f} s |")
    print(f"| async / sync, median over rounds [min, max] | {median:.4f} [{min(ratios):.4f}, {max(ratios):.4f}] |")
    print(f"| async / sync, pooled over rounds [95% interval] | {point:.4f} [{low:.4f}, {high:.4f}] |")
    if not args.fsdp:
        copies = ", ".join(f"{c:.3f}" for c in measured["copies"])
        print(f"| `staged()`'s copy of the state alone, 3 after the rounds | {copies} s |")
    print(f"| background write, save start to written (median) | {write:.2f} s |")
    print(f"| train step while it writes / after a blocking save | {step_during:.3f} / {step_after:.3f} s |")
    print(f"| training time lost per async save: stall + the steps' extra time while it writes (median) | "
          f"{statistics.median(lost):.3f} s, {lost_ratio:.3f} x the blocking stall |")  # fmt: skip
    print(f"| the run's first save, before the rounds: stall sync / async | {first['sync']['stall_s']:.3f} / "
          f"{first['async']['stall_s']:.3f} s |")  # fmt: skip
    for line in checks:
        print(f"| loaded back | {line} |")
    verdict = "PASS" if median <= GOAL else "MISS"
    note = "" if big_enough else " (the blocking save took under 1 s: a size too small for the goal)"
    print("\n| goal | target | measured | result |\n|---|---|---|---|")
    print(f"| stall async / sync, median over rounds | <= {GOAL} | {median:.4f} | {verdict}{note} |")
    return {
        "mode": "fsdp" if args.fsdp else "single",
        "world_size": info.world_size,
        "layers": args.layers,
        "width": args.width,
        "parameters": n_params,
        "first": first,
        "staged_copy_s": measured["copies"],
        "rounds": rounds,
        "steps": args.steps,
        "checkpoint_bytes": size,
        "stall_sync_s": statistics.median(sync),
        "stall_async_s": statistics.median(stall_async),
        "ratio": {"median": median, "pooled": point, "low": low, "high": high, "rounds": ratios},
        "write_s": write,
        "step_s": {"during_write": step_during, "after_sync": step_after},
        "async_lost_s": {"median": statistics.median(lost), "rounds": lost, "over_sync_stall": lost_ratio},
        "loaded_back": checks,
        "goal": GOAL,
        "result": verdict,
        "load_avg": [list(load_before), list(load_after)],
    }


def fmt_load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in load)


def launch_ranks(argv: list[str], ranks: int) -> int:
    """Run this script under torchrun on ``ranks`` processes (gloo); its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command += ["-m", "bench.checkpoint_stall", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, cwd=REPO, env=env).returncode


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks")
    parser.add_argument("--width", type=int, default=768, help="n_embd")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps after each save (async: at least)")
    parser.add_argument("--fsdp", action="store_true", help="shard over ranks, step folders (DCP)")
    parser.add_argument("--ranks", type=int, default=2, help="with --fsdp outside torchrun: the ranks launched")
    parser.add_argument("--quick", action="store_true", help="a tiny model, 2 rounds: checks the script")
    parser.add_argument("--out", type=Path, help="where checkpoints go (kept); default: a temporary folder, removed")
    parser.add_argument("--json", type=Path, help="default: bench/results/checkpoint_stall[-fsdp].json")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.fsdp and "WORLD_SIZE" not in os.environ:
        code = launch_ranks(raw, args.ranks)
        if code:
            raise SystemExit(code)
        return None
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    with process_group("cpu") as info:
        result = run(args, info)
    if result is None:
        return None
    out = args.json or REPO / "bench" / "results" / f"checkpoint_stall{'-fsdp' if args.fsdp else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
