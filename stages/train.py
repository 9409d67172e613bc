"""Train stage: token files -> ``OUT_DIR/model``, ``OUT_DIR/plots/*.csv``, ``OUT_DIR/dvclive/``,
``OUT_DIR/run_info.json`` (the metric sinks: docs/training.md); run by hand, its console goes to
``OUT_DIR/logs/train.log`` too. Checkpoints are written to ``OUT_DIR/checkpoints`` as the run goes; once it has
finished, its last and best are linked into ``OUT_DIR/model``, the stage's output (``pipeline.publish``).

One process (what ``dvc repro`` runs through ``pipeline.launch`` when
``launch.nproc_per_node`` is 1)::

    python -m stages.train [params.yaml] [--section.key value ...]

Several processes on one machine (DDP; gloo on CPU, NCCL on GPU)::

    torchrun --standalone --nproc-per-node=4 -m stages.train params.yaml

Several nodes inside a Slurm allocation (``pipeline.launch`` builds this)::

    srun torchrun --nnodes=$SLURM_NNODES --nproc-per-node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=<first node>:29500 --rdzv-id=$SLURM_JOB_ID -m stages.train params.yaml

Resumes from ``OUT_DIR/checkpoints/last.pt`` when ``training.resume`` is
``auto`` and the checkpoint was trained with the same params. Reads:
general.*, data.dataset, tokenizer.*, model.*, training.*, optimizer.*,
scheduler.*, loss.*, scaler.*, eval.*, logging.*.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from nanugpt.config.schema import Params
from nanugpt.config.token_meta import DataError
from nanugpt.data.sources import changed_files
from nanugpt.train.trainer import train
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import env_rank, tee_console
from pipeline.launch import LAUNCH_COMMAND_ENV
from pipeline.publish import publish
from pipeline.threads import require_strict_kernels, use_threads


def run(params: Params, data_root: Path | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Train the model of ``params`` on its tokenized data; return the run summary."""
    use_threads(params.general.threads)
    require_strict_kernels(params.general.reproducible)
    out = paths.writable(out_dir or paths.out_dir(), "OUT_DIR")
    check_tokens_current(params, data_root)
    with paths.held(out, "train"):
        summary = train(
            params,
            paths.tokenized_dir(params, data_root),
            out,
            launch_command=os.environ.get(LAUNCH_COMMAND_ENV)
            or " ".join([sys.executable, "-m", "stages.train", *sys.argv[1:]]),
        )
        if env_rank() == 0:
            placed = publish(paths.checkpoint_dir(out), paths.model_dir(out))
            print(f"linked {', '.join(placed) or 'no checkpoint'} into {paths.model_dir(out)}")
        return summary


def check_tokens_current(params: Params, data_root: Path | None) -> None:
    """Refuse token files made from another corpus than the source stage last recorded (a tokenize that failed or
    never ran after the corpus changed). Without both records (the stages run by hand) nothing is compared."""
    try:
        recorded = json.loads(paths.source_record(params, data_root).read_text())
        made_from = json.loads(paths.tokens_source(params, data_root).read_text())
    except (OSError, ValueError):
        return
    changed = changed_files(recorded, made_from)
    if changed:
        raise DataError(
            f"the token files in {paths.tokenized_dir(params, data_root)} were made from another corpus than "
            f"{paths.source_record(params, data_root)} records ({', '.join(changed)} changed): run the tokenize "
            "stage (python -m stages.tokenize, or dvc repro / snakemake) before training"
        )


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("train")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
