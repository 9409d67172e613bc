"""Benchmarks during training, as a curve: ``eval.tasks`` scored every ``eval.tasks_every`` steps on a fixed subset,
the file's first ``eval.tasks_examples`` examples (the same ones every time).

The figures are named ``tasks/<task>_<figure>``: ``tasks/hellaswag_acc`` and ``tasks/hellaswag_acc_norm``. The
trainer merges them into the metrics row of their step, so every sink has them, and ``plots/tasks.csv`` has a row
per scoring (``nanugpt.metrics.sinks``). The scoring is the evaluate stage's (``nanugpt.eval.hellaswag``): on the same
examples and model the figures are those of ``evaluate_hellaswag``. The file is found as evaluate finds it
(``eval.hellaswag_path``, or the pinned download into ``DATA_ROOT/hellaswag/raw/``), read and tokenized once.

Each rank scores its share of the forwards and the counts are summed over ranks, so every rank gets the same
figures. Scoring draws no random number, and the random generators' states are put back after it anyway, so a
run's train losses are the same with the curve on or off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from nanugpt.config.schema import Params
from nanugpt.distributed.process_group import DistInfo
from nanugpt.eval.evaluate import shared_file
from nanugpt.eval.hellaswag import (
    Encoded,
    HellaSwagError,
    encode_examples,
    hellaswag_file,
    per_forward,
    read_examples,
    score_encoded,
)

FIGURES = ("acc", "acc_norm")  # of evaluate_hellaswag's, those that change along a run


class TaskCurve:
    """Scores ``eval.tasks`` on a fixed subset every ``eval.tasks_every`` steps and at the last step.

    Built once per run on every rank (on rank 0 first where the file is downloaded). ``data_root``: where the
    pinned file is downloaded (DATA_ROOT); ``encode``: the run's tokenizer's; ``dtype``: the autocast dtype of
    the run's forwards; ``log``: a line on rank 0's console. With ``eval.tasks_every: 0`` it reads no file and
    ``should_run`` is never true.
    """

    def __init__(
        self,
        params: Params,
        *,
        data_root: Path,
        encode: Callable[[str], list[int]],
        info: DistInfo,
        dtype: str,
        log: Callable[[str], None],
    ):
        e = params.eval
        self.every = e.tasks_every if "hellaswag" in e.tasks else 0
        self.info, self.dtype, self.log = info, dtype, log
        self.encoded: list[Encoded] = []
        self.per_forward = 1
        if not self.every:
            return
        path = shared_file(info, lambda: hellaswag_file(e.hellaswag_path, e.hellaswag_sha256, data_root))
        examples = read_examples(path, limit=e.tasks_examples)
        self.encoded = encode_examples(examples, encode, params.model.context_length)
        if not self.encoded:
            raise HellaSwagError(
                f"eval.tasks_every: the tokenizer cannot encode any of the first {len(examples)} examples of {path} "
                "(a char vocabulary without their characters?); set eval.tasks_every: 0"
            )
        self.per_forward = per_forward(examples, params.training.device_batch_size)
        skipped = len(examples) - len(self.encoded)
        log(
            f"HellaSwag every {self.every} steps: the first {len(examples)} examples of {path}"
            + (f", {skipped} skipped (text the tokenizer cannot encode)" if skipped else "")
        )

    def should_run(self, step: int, final: bool) -> bool:
        """True at the steps the tasks are scored: every ``eval.tasks_every`` steps and the last (none when 0)."""
        return self.every > 0 and (final or step % self.every == 0)

    def run(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """``tasks/hellaswag_acc`` and ``tasks/hellaswag_acc_norm`` of ``model`` (put in eval mode and back, no
        gradient), the same on every rank; a line with them on rank 0's console. Every rank must call it."""
        started = time.perf_counter()
        device = self.info.device
        with torch.random.fork_rng(
            devices=[] if device.type == "cpu" else [device], device_type=None if device.type == "cpu" else device.type
        ):
            figures = score_encoded(
                model, self.encoded, examples_per_forward=self.per_forward, info=self.info, dtype=self.dtype
            )
        metrics = {f"tasks/hellaswag_{name}": float(figures[name]) for name in FIGURES}
        self.log(
            f"step {step}: hellaswag acc {figures['acc']:.4f} acc_norm {figures['acc_norm']:.4f} "
            f"({figures['examples']} examples, {time.perf_counter() - started:.1f} s)"
        )
        return metrics
