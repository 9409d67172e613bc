"""Which windows made up a training step's global batch, per rank and micro-step.

    python -m pipeline.batch_at STEP [PARAMS_FILE] [--section.key value ...] [--world-size N] [--json]
                                [--chars N] [--out OUT_DIR]

``STEP`` counts as the log does: 1 is the first optimizer step. Train batches are a pure function of the data
seed (``general.data_seed``, else ``general.seed``), the step and the rank's share of the global batch, so the
answer needs the params and the token files only: no checkpoint, no model. Each row is printed with where it
comes from (``train.bin`` and its token offsets, for token files) and its text, decoded and cut to ``--chars``
characters; ``--json`` prints every token id instead.

- ``--world-size``: the processes the run had (default: ``launch.nnodes x launch.nproc_per_node``); each rank's
  rows are its share, as ``BatchShare`` slices the global batch.
- ``--out``: the run's ``OUT_DIR`` (default ``$OUT_DIR`` or ``out``). A run whose loss spikes were rolled back
  (``training.spike``) skipped batches; the rollbacks its ``train_summary.json`` (or ``run_info.json``) records
  are applied, so the answer is the batch the run's final model was trained on at that step.
- A stream of documents (``hf_dataset`` with ``streaming``) gives its batches in order only: it is read from
  the start up to the step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from nanugpt.config.token_meta import read_meta
from nanugpt.data.hf_dataset import skip_batches
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.distributed.process_group import DistInfo
from nanugpt.errors import UserError
from nanugpt.train.build import train_share
from nanugpt.train.spikes import skipped_before
from pipeline import paths
from pipeline.cli import run_command
from pipeline.schema import PipelineParams, load


def data_offset(step: int, out_dir: Path) -> int:
    """The data steps skipped before ``step`` by the rollbacks the run in ``out_dir`` records (0 for none): a
    rollback to the checkpoint of step S moves every step after S."""
    for name in ("train_summary.json", "run_info.json"):
        try:
            recorded = json.loads((out_dir / name).read_text())
        except (OSError, ValueError):
            continue
        return skipped_before((recorded.get("spikes") or {}).get("rollbacks", []), step)
    return 0


def batch_rows(params: PipelineParams, data_dir: Path, step: int, world_size: int, offset: int = 0) -> list[dict]:
    """Every row of step ``step``'s global batch (from 1), in rank and micro-step order: ``rank``, ``micro_step``,
    ``row`` (within the micro-batch), ``inputs`` (token ids), ``file`` and ``offset`` (the token file, ``train.bin`` or
    a mixture's ``<source>/train.bin``, and the window's first token in it, where the data has one) and ``text``
    (the inputs decoded)."""
    if step < 1:
        raise UserError(f"step {step}: steps count from 1, as the log does")
    meta = read_meta(data_dir)
    decode = tokenizer_from_meta(meta).decode
    data_step = step - 1 + offset
    rows: list[dict] = []
    for rank in range(world_size):
        share = train_share(params, DistInfo(rank, rank, world_size, torch.device("cpu")))
        batches = params.data.batches(
            data_dir,
            meta,
            "train",
            context_length=params.model.context_length,
            share=share,
            seed=params.general.order_seed,
        )
        if batches is None:
            raise UserError(f"{data_dir}: the train split is empty")
        skip_batches(batches, range(data_step), share.micro_steps)  # a stream: its batches in order, from the first
        for micro in range(share.micro_steps):
            inputs, _ = batches.micro_batch(data_step, micro)
            first = share.first_row(micro)
            origins = window_origins(batches, data_step, micro, first, share.rows)
            for row, ids in enumerate(inputs.tolist()):
                file, offset = origins[row] if origins is not None else (None, None)
                rows.append(
                    {
                        "rank": rank,
                        "micro_step": micro,
                        "row": row,
                        "inputs": ids,
                        "file": file,
                        "offset": offset,
                        "text": decode(ids),
                    }
                )
    return rows


def window_origins(batches: Any, step: int, micro: int, first: int, rows: int) -> list[tuple[str, int]] | None:
    """``(token file, first token)`` of each row of a micro-batch: a mixture names the source's file, token files
    ``train.bin``; None for data without token files."""
    if hasattr(batches, "origins"):
        return batches.origins(step, micro)
    if hasattr(batches, "offsets"):
        return [("train.bin", int(offset)) for offset in batches.offsets(step)[first : first + rows]]
    return None


def describe(rows: list[dict], *, step: int, offset: int, data_dir: Path, chars: int) -> list[str]:
    """The rows as lines: a heading per rank and micro-step, then a line per row."""
    skipped = f" (data step {step - 1 + offset}: {offset} skipped by rollbacks)" if offset else ""
    lines = [f"step {step}{skipped}: {len(rows)} rows of {data_dir}"]
    heading = None
    for r in rows:
        if (r["rank"], r["micro_step"]) != heading:
            heading = (r["rank"], r["micro_step"])
            lines.append(f"rank {r['rank']}, micro-step {r['micro_step']}")
        where = (
            f"{r['file']} tokens {r['offset']:,}-{r['offset'] + len(r['inputs']) - 1:,}"
            if r["offset"] is not None
            else ""
        )
        text = r["text"] if len(r["text"]) <= chars else r["text"][:chars] + "..."
        lines.append(f"  row {r['row']:>3} {where} {text!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.batch_at", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", type=int, help="the optimizer step, from 1 as the log counts")
    parser.add_argument("--world-size", type=int, default=None, help="processes of the run")
    parser.add_argument("--json", action="store_true", help="every row with its token ids, as JSON")
    parser.add_argument("--chars", type=int, default=80, help="characters of each row's text")
    parser.add_argument("--out", type=Path, default=None, help="the run's OUT_DIR, for its rollbacks")
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    params_file, overrides = (rest[0], rest[1:]) if rest and not rest[0].startswith("--") else ("params.yaml", rest)

    def body() -> None:
        params = load(params_file, overrides)
        world_size = known.world_size or params.launch.nnodes * params.launch.nproc_per_node
        data_dir = paths.tokenized_dir(params)
        offset = data_offset(known.step, known.out or paths.out_dir())
        rows = batch_rows(params, data_dir, known.step, world_size, offset)
        if known.json:
            print(json.dumps({"step": known.step, "data_offset": offset, "rows": rows}))
        else:
            print("\n".join(describe(rows, step=known.step, offset=offset, data_dir=data_dir, chars=known.chars)))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
