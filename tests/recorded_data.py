"""A data component for the ``batch_at`` tests (``module: recorded_data:RecordedDataOptions``): the tokenized data
of ``helpers.tiny_params``, whose train batches append what they give to ``record_to``-rank<r>.jsonl, a line per
micro-batch (step, micro-step and the inputs' token ids): what training actually consumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nanugpt.config.schema import BatchShare
from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.tokenized import TokenizedDataOptions


class RecordedDataOptions(TokenizedDataOptions):
    """``tokenized`` data whose train micro-batches are recorded."""

    record_to: str

    def batches(
        self, data_dir: Path, meta: TokenMeta, split: str, *, context_length: int, share: BatchShare, seed: int
    ) -> Any:
        source = super().batches(data_dir, meta, split, context_length=context_length, share=share, seed=seed)
        if split != "train" or source is None:
            return source
        return RecordedBatches(source, Path(f"{self.record_to}-rank{share.rank}.jsonl"))


class RecordedBatches:
    """``source``'s micro-batches, each recorded in ``path`` as it is given."""

    def __init__(self, source: Any, path: Path):
        self.source, self.path = source, path

    def micro_batch(self, step: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.micro_batch(step, micro_step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "micro_step": micro_step, "inputs": x.tolist()}) + "\n")
        return x, y
