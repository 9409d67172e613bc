"""Generation: our generate stage's sampling loop against ``transformers``' ``generate()`` on our export of the
same trained model.

    python -m bench.generation [--rounds 5] [--new-tokens 128] [--train-steps 50]

Trains ``bench/train_throughput.py``'s GPT-2-like shape (``nanogpt``, 6 x 384, context 256, GPT-2's
vocabulary) for ``--train-steps`` steps on random token files with ``nanugpt.train.trainer.train``, exports
the checkpoint with the export stage's ``nanugpt.inference.hf_export.export_checkpoint`` and loads it with
``GPT2LMHeadModel.from_pretrained``. Then, for greedy and sampled decoding (temperature 0.8,
top-k 200) at batch 1 and 8, each round times ours (``nanugpt.inference.generate.sample``, KV cache) and
transformers' ``generate(use_cache=True)`` on the same 16-token prompt for the same
``--new-tokens`` (transformers' end-of-text stop is off, as ours has none), alternating which goes
first; one untimed call of each warms up. The figure is the median over rounds of ours / theirs
in new tokens per second. Goals (issue 22): ours >= 1.5x, and greedy output identical token for
token. Prints a table and writes ``bench/results/generation.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench.train_throughput import SHAPES, make_data, our_params
from nanugpt.checkpoint.store import load_trained_model
from nanugpt.config.params import validate_params
from nanugpt.config.schema import GenerateParams, Params
from nanugpt.config.token_meta import read_meta
from nanugpt.inference.generate import sample
from nanugpt.inference.hf_export import export_checkpoint
from nanugpt.train.trainer import train

BENCH = Path(__file__).resolve().parent

SHAPE = SHAPES["gpt2"]
PROMPT_TOKENS = 16
TEMPERATURE, TOP_K = 0.8, 200
MODES = [("greedy", 1), ("greedy", 8), ("sampled", 1), ("sampled", 8)]
GOAL = 1.5


def trained_params(steps: int, tokenizer: dict) -> Params:
    """``train_throughput``'s GPT-2-like params for ``steps`` steps, saving the final checkpoint."""
    tree: dict[str, Any] = our_params(SHAPE, steps, False, tokenizer).to_dict()
    tree["training"]["log_every"] = max(1, steps)
    return validate_params(tree, "bench")


def ours(model: torch.nn.Module, prompt: list[int], *, mode: str, batch: int, new_tokens: int, vocab: int) -> list:
    """Our generate stage's loop: ``batch`` continuations of ``prompt``."""
    opts = GenerateParams(
        num_samples=batch,
        max_new_tokens=new_tokens,
        temperature=0.0 if mode == "greedy" else TEMPERATURE,
        top_k=TOP_K,
        seed=0,
    )
    return sample(model, prompt, opts, vocab, torch.device("cpu"))


def theirs(hf: Any, prompt: list[int], mode: str, batch: int, new_tokens: int) -> list:
    """transformers' ``generate`` with its KV cache: ``batch`` continuations of ``prompt``."""
    ids = torch.tensor([prompt] * batch)
    sampled = mode == "sampled"
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=sampled,
            temperature=TEMPERATURE if sampled else None,
            top_k=TOP_K if sampled else None,
            top_p=None,
            use_cache=True,
            eos_token_id=None,  # ours never stops early: the same number of new tokens on both sides
            pad_token_id=0,
        )
    return out[:, len(prompt) :].tolist()


def timed(generate: Callable[[], list]) -> tuple[float, list]:
    """Seconds that ``generate()`` took, and what it returned."""
    start = time.perf_counter()
    out = generate()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=50)
    args = parser.parse_args()
    if PROMPT_TOKENS + args.new_tokens > SHAPE["context_length"]:
        parser.error(f"--new-tokens must be <= {SHAPE['context_length'] - PROMPT_TOKENS} (transformers cannot slide)")
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, tokens = make_data(Path(tmp), SHAPE)
        tokenizer = json.loads((data_dir / "meta.json").read_text())["tokenizer"]
        out_dir = Path(tmp) / "run"
        train(trained_params(args.train_steps, tokenizer), data_dir, out_dir)
        ckpt = out_dir / "checkpoints" / "last.pt"
        export_checkpoint(ckpt, read_meta(data_dir), data_dir, Path(tmp) / "hf")
        model, _, state = load_trained_model(ckpt, torch.device("cpu"))
        model.eval()
        hf = transformers.GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()
    vocab = state["vocab_size"]
    prompt = [int(t) for t in tokens[:PROMPT_TOKENS]]
    results: dict[str, Any] = {}
    for mode, batch in MODES:
        key = f"{mode}, batch {batch}"
        (
            ours(model, prompt, mode=mode, batch=batch, new_tokens=args.new_tokens, vocab=vocab),
            theirs(hf, prompt, mode, batch, args.new_tokens),
        )
        rounds, identical = [], True
        for round_ in range(args.rounds):
            order = ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours")
            seconds, outputs = {}, {}
            for who in order:
                if who == "ours":
                    run = partial(ours, model, prompt, mode=mode, batch=batch, new_tokens=args.new_tokens, vocab=vocab)
                    seconds[who], outputs[who] = timed(run)
                else:
                    seconds[who], outputs[who] = timed(partial(theirs, hf, prompt, mode, batch, args.new_tokens))
            if mode == "greedy":
                identical &= outputs["ours"] == outputs["theirs"]
            new = batch * args.new_tokens
            rounds.append({"ours": new / seconds["ours"], "theirs": new / seconds["theirs"]})
            rounds[-1]["ratio"] = rounds[-1]["ours"] / rounds[-1]["theirs"]
            print(
                f"{key}, round {round_ + 1}: ours {rounds[-1]['ours']:,.0f} tok/s | transformers "
                f"{rounds[-1]['theirs']:,.0f} tok/s | ratio {rounds[-1]['ratio']:.3f}",
                flush=True,
            )
        results[key] = {
            "median_ours_tokens_per_s": statistics.median(r["ours"] for r in rounds),
            "median_theirs_tokens_per_s": statistics.median(r["theirs"] for r in rounds),
            "median_ratio": statistics.median(r["ratio"] for r in rounds),
            "greedy_identical": identical if mode == "greedy" else None,
            "rounds": rounds,
        }
    print(
        "\n| decoding | ours tok/s | transformers tok/s | ours / transformers | greedy output identical |\n"
        "|---|---|---|---|---|"
    )
    for key, row in results.items():
        ratio = row["median_ratio"]
        same = row["greedy_identical"]
        print(
            f"| {key} | {row['median_ours_tokens_per_s']:,.0f} | {row['median_theirs_tokens_per_s']:,.0f} | "
            f"{ratio:.3f} ({'PASS' if ratio >= GOAL else 'MISS'} >= {GOAL}) | "
            f"{'-' if same is None else ('PASS' if same else 'MISS')} |"
        )
    summary = {
        "new_tokens": args.new_tokens,
        "prompt_tokens": PROMPT_TOKENS,
        "rounds": args.rounds,
        "train_steps": args.train_steps,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "modes": results,
    }
    out = BENCH / "results" / "generation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
