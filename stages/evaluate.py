"""Evaluate stage: ``OUT_DIR/model/last.pt`` -> ``OUT_DIR/metrics.json`` (val_loss, val_ppl, benchmarks).

    python -m stages.evaluate [params.yaml] [--section.key value ...]
    torchrun --standalone --nproc-per-node=2 -m stages.evaluate params.yaml   # the work shared by 2 processes

Loss on ``eval.eval_iters`` fixed batches of ``training.device_batch_size``
sequences of the val split (and the test split when ``test.bin`` exists), and
each benchmark of ``eval.tasks``: ``hellaswag`` scores the official validation
file (downloaded once into ``DATA_ROOT/hellaswag/raw/`` and checked against
``eval.hellaswag_sha256``, or read from ``eval.hellaswag_path``) and reports
``hellaswag_acc``, ``hellaswag_acc_norm``, ``hellaswag_examples`` and
``hellaswag_skipped`` (see ``nanugpt.eval.hellaswag``). Under torchrun each rank
takes a share and rank 0 writes.
``dvc metrics show`` and ``dvc exp show`` list these numbers; with
``logging.tensorboard`` / ``logging.wandb`` they also go to TensorBoard and to
the training's W&B run as ``eval/<name>``. Reads: general.seed,
general.device_type, general.dtype, general.project_name, general.run_name,
training.device_batch_size, eval.eval_iters, eval.tasks, eval.hellaswag_path,
eval.hellaswag_sha256, data.dataset, tokenizer.module, logging.wandb,
logging.tensorboard.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nanugpt.config.schema import Params
from nanugpt.distributed.process_group import process_group
from nanugpt.eval.evaluate import evaluate_checkpoint
from nanugpt.files.atomic import write_json
from nanugpt.metrics.sinks import check_sinks, log_evaluation
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import tee_console
from pipeline.threads import use_threads


def run(params: Params, data_root: Path | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate the last checkpoint and write ``metrics.json``; return the metrics."""
    use_threads(params.general.threads)
    out = paths.writable(out_dir or paths.out_dir(), "OUT_DIR")
    with paths.held(out, "evaluate"):
        check_sinks(params)
        with process_group(params.general.device_type) as info:  # one process, or each rank of torchrun
            metrics = evaluate_checkpoint(
                params,
                paths.last_checkpoint(out),
                paths.tokenized_dir(params, data_root),
                info,
                data_root or paths.data_root(),
            )
            if not info.is_main:
                return metrics
        write_json(paths.metrics_file(out), metrics)
        log_evaluation(params, out, metrics)
        print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
        return metrics


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("evaluate")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
