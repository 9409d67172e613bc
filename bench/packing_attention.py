"""Document-masked attention (``data.packing: documents``) against the unmasked causal path: train-step time.

    python -m bench.packing_attention [--rounds 15] [--steps 20] [--doc-length 24] [--variants bool,float]

The default CPU shape: ``params/tinyshakespeare_char.yaml``'s model (``nanogpt``, 4 layers, 4 heads, 128
wide, context 64, dropout 0), its ``training.device_batch_size`` (12) and a 65-token vocabulary. Each round
times ``--steps`` forward + backward passes (the loss from the hidden states, as the train step takes it,
then ``zero_grad``) of each variant on the same batches, in an order that rotates from round to round:

- ``unmasked``: the reference, ``causal_attention``'s ``is_causal=True`` SDPA call;
- ``bool``: ours, the model after ``mask_documents``: a (B, 1, T, T) boolean mask built once per forward
  and given to SDPA, positions restarted per document;
- ``float``: the same mask as an additive float mask (0 / -inf), SDPA otherwise unchanged;
- ``per_row``: SDPA per row of the batch, each row's (1, 1, T, T) mask.

Not a variant: ``torch.nn.attention.flex_attention``, which has no backward on CPU (torch 2.13 raises
``NotImplementedError: FlexAttention does not support backward on CPU``), so it cannot train here.

The batches hold documents of ``--doc-length`` tokens on average (geometric lengths, end-of-text id 0), the
figure per variant is the median over rounds of its time / the unmasked time of the same round, with
[min, max]. Goal for ``bool`` (issue 33): <= 1.3. Prints a table and writes
``bench/results/packing_attention.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from nanugpt.models import layers
from nanugpt.models.layers import DocumentMask
from nanugpt.models.nanogpt import GPT, NanoGPTOptions
from nanugpt.optim.losses import Loss
from pipeline.schema import load as load_preset

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PRESET = REPO / "params" / "tinyshakespeare_char.yaml"
VOCAB = 65
EOT = 0
GOAL = 1.3
VARIANTS = ("bool", "float", "per_row")


def packed_batches(count: int, rows: int, context: int, doc_length: float, seed: int = 0) -> list[torch.Tensor]:
    """``count`` (rows, context + 1) batches of token ids whose documents end with ``EOT``, of geometric
    lengths with mean ``doc_length``."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(1, VOCAB, (rows, context + 1), generator=g)
        ends = torch.rand(rows, context + 1, generator=g) < 1 / doc_length
        batches.append(ids.masked_fill(ends, EOT))
    return batches


def float_mask(documents: DocumentMask) -> DocumentMask:
    """``documents`` with its boolean mask turned into an additive float one (0 where seen, -inf elsewhere)."""
    mask = torch.zeros(documents.attn_mask.shape, dtype=torch.float32)
    documents.attn_mask = mask.masked_fill(~documents.attn_mask, float("-inf"))
    return documents


def per_row_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """SDPA row by row, each with its own (1, 1, T, T) mask."""
    mask = kwargs.pop("attn_mask")
    return torch.cat(
        [
            F.scaled_dot_product_attention(
                q[i : i + 1], k[i : i + 1], v[i : i + 1], attn_mask=mask[i : i + 1], **kwargs
            )
            for i in range(q.size(0))
        ]
    )


def build(variant: str, opts: NanoGPTOptions) -> tuple[GPT, Callable | None]:
    """The model of ``variant`` (same weights for every variant) and its SDPA stand-in, if any."""
    torch.manual_seed(0)
    model = opts.build(VOCAB)
    model.train()
    if variant == "unmasked":
        return model, None
    model.mask_documents(EOT, restart_positions=True)
    if variant == "bool":
        return model, None
    if variant == "float":
        plain = type(model).documents.__get__(model)
        model.documents = lambda idx, cache=None: float_mask(plain(idx, cache))  # type: ignore[method-assign]
        return model, None
    return model, per_row_attention


def time_steps(model: GPT, sdpa: Callable | None, batches: list[torch.Tensor], loss: Loss) -> float:
    """Seconds for forward + backward of every batch (SDPA replaced by ``sdpa`` in the attention helper)."""
    original = layers.F.scaled_dot_product_attention
    if sdpa is not None:
        layers.F = _Patched(sdpa)  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        for batch in batches:
            x, y = batch[:, :-1], batch[:, 1:]
            loss.of_model(model, model, x, y).backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - start
    finally:
        layers.F = F
        assert layers.F.scaled_dot_product_attention is original


class _Patched:
    """``torch.nn.functional`` with ``scaled_dot_product_attention`` replaced (the bench's variants only)."""

    def __init__(self, sdpa: Callable) -> None:
        self.scaled_dot_product_attention = sdpa

    def __getattr__(self, name: str) -> object:
        return getattr(F, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="forward + backward passes per variant per round")
    parser.add_argument("--doc-length", type=float, default=24.0, help="mean document length in tokens")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = ["unmasked", *[v for v in args.variants.split(",") if v]]
    params = load_preset(PRESET)
    opts, rows = params.model, params.training.device_batch_size
    assert isinstance(opts, NanoGPTOptions), f"{PRESET}: the bench times nanogpt, got {opts.module}"
    models = {variant: build(variant, opts) for variant in variants}
    loss = Loss()
    batches = packed_batches(args.steps, rows, opts.context_length, args.doc_length)
    for variant in variants:  # warm-up: allocations
        time_steps(*models[variant], batches[:3], loss)
    seconds: dict[str, list[float]] = {variant: [] for variant in variants}
    load = []
    for r in range(args.rounds):
        load.append(os.getloadavg()[0])
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            seconds[variant].append(time_steps(*models[variant], batches, loss))
    tokens = args.steps * rows * opts.context_length
    print(
        f"\nnanogpt {opts.n_layer}x{opts.n_embd}, {opts.n_head} heads, context {opts.context_length}, batch {rows}, "
        f"documents of ~{args.doc_length:g} tokens; {args.rounds} rounds of {args.steps} forward + backward; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {min(load):.2f}-{max(load):.2f}\n"
    )
    print("| variant | tokens/s (median) | time / unmasked: median [min, max] | goal |")
    print("|---|---|---|---|")
    results = {}
    for variant in variants:
        ratios = [s / u for s, u in zip(seconds[variant], seconds["unmasked"])]
        median = statistics.median(ratios)
        tok_s = tokens / statistics.median(seconds[variant])
        goal = "" if variant != "bool" else f"<= {GOAL}: {'PASS' if median <= GOAL else 'MISS'}"
        print(f"| {variant} | {tok_s:,.0f} | {median:.3f} [{min(ratios):.3f}, {max(ratios):.3f}] | {goal} |")
        results[variant] = {
            "tokens_per_s": tok_s,
            "ratio_median": median,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    RESULTS.mkdir(exist_ok=True)
    out = {"args": vars(args), "load": load, "torch": torch.__version__, "results": results}
    (RESULTS / "packing_attention.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
