"""The six pipeline stages as data: command, code, params read, inputs and outputs.

``Snakefile`` builds its rules from this table, and a test checks that
``dvc.yaml`` declares exactly the same, so the two orchestrators cannot drift.
Artifact paths are templates over ``{data_dir}`` (``DATA_ROOT/<dataset>/<tokenizer>``),
``{dataset_dir}`` (``DATA_ROOT/<dataset>``) and ``{out_dir}`` (``OUT_DIR``). Each
stage lists only the params keys it reads, so changing ``optimizer.lr`` re-runs
train and what follows, never tokenize.

A local corpus is an input by content: the ``source`` stage records the sha256
of each of its files in ``DATA_ROOT/<dataset>/source.json``, on which tokenize
depends. DVC cannot depend on a path that only a params value names, so under
DVC the source stage runs at every ``dvc repro`` (``always_changed``: it only
hashes) and what follows re-runs only when the record changed; Snakemake has
the corpus files as the rule's inputs (``corpus_inputs``) and reruns it when
one is newer. The record also holds the data options the token files depend
on (``nanugpt.config.schema.tokens_settings``), so a key that only shapes batches (a
mixture's weights, ``data.sampling``) re-runs train but no tokenize.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanugpt.config.loader import ConfigError, get_dotted
from nanugpt.config.params import validate_params
from nanugpt.config.schema import tokens_settings
from nanugpt.data.sources import data_corpus_files
from nanugpt.errors import UserError
from pipeline.schema import PipelineParams, load

REPO = Path(__file__).resolve().parent.parent


# The data components' modules: the stages that tokenize, train or evaluate depend on them all.
DATA_COMPONENTS = (
    "nanugpt/data/tokenized.py",
    "nanugpt/data/tasks.py",
    "nanugpt/data/grokking.py",
    "nanugpt/data/arithmetic.py",
    "nanugpt/data/hf_dataset.py",
    "nanugpt/data/mixture.py",
    "nanugpt/data/packing.py",
)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage."""

    name: str
    module: str
    code: tuple[str, ...]
    params: tuple[str, ...]
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()  # uncached tables, DVC plots (drawn together by dvc.yaml's top-level plots)
    dirs: frozenset[str] = field(default_factory=frozenset)  # outs that are folders
    always_changed: bool = False  # DVC runs the stage at every repro (the source stage: see the module doc)
    # The stage reads the options the token files depend on (``nanugpt.config.schema.tokens_settings``: the data
    # section but the keys that only shape batches, such as a mixture's weights): Snakemake's params trigger takes
    # them as ``data``; DVC, which cannot depend on part of a section, gets them through the source stage's record.
    reads_tokens_settings: bool = False

    def command(self, params_file: str = "params.yaml") -> str:
        """The shell command both orchestrators run."""
        return f"python -m {self.module} {params_file}"


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            name="source",
            module="stages.source",
            code=(
                "stages/source.py",
                "nanugpt/data/sources.py",
                "nanugpt/data/generated.py",
                "nanugpt/files/download.py",
                *DATA_COMPONENTS,
            ),
            params=(),
            outs=("{dataset_dir}/source.json",),
            always_changed=True,
            reads_tokens_settings=True,
        ),
        Stage(
            name="tokenize",
            module="stages.tokenize",
            code=(
                "stages/tokenize.py",
                *DATA_COMPONENTS,
                "nanugpt/config/token_meta.py",
                "nanugpt/data/tokenize.py",
                "nanugpt/data/sources.py",
                "nanugpt/data/generated.py",
                "nanugpt/files/download.py",
                "nanugpt/data/tokenizers",
            ),
            params=("tokenizer",),
            deps=("{dataset_dir}/source.json",),
            outs=("{data_dir}",),
            dirs=frozenset({"{data_dir}"}),
            reads_tokens_settings=True,
        ),
        Stage(
            name="train",
            module="pipeline.launch",
            code=(
                "stages/train.py",
                "pipeline/threads.py",
                "pipeline/launch.py",
                "pipeline/submit.py",
                "pipeline/snapshot.py",
                "pipeline/publish.py",
                "nanugpt/train/trainer.py",
                "nanugpt/distributed/signals.py",
                *DATA_COMPONENTS,
                "nanugpt/config/token_meta.py",
                "nanugpt/models",
                "nanugpt/optim/adamw.py",
                "nanugpt/optim/muon.py",
                "nanugpt/optim/schedulers.py",
                "nanugpt/optim/losses.py",
                "nanugpt/ops",
                "nanugpt/optim/scalers.py",
                "nanugpt/checkpoint/store.py",
                "nanugpt/checkpoint/sharded.py",
                "nanugpt/distributed/fsdp.py",
                "nanugpt/distributed/process_group.py",
                "nanugpt/distributed/device.py",
                "nanugpt/eval/evaluate.py",
                "nanugpt/eval/task_curve.py",
                "nanugpt/eval/hellaswag.py",
                "nanugpt/files/download.py",
                "nanugpt/data/tokenizers",
                "nanugpt/train/build.py",
                "nanugpt/train/step.py",
                "nanugpt/train/validator.py",
                "nanugpt/train/checkpointer.py",
                "nanugpt/checkpoint/background.py",
                "nanugpt/train/spikes.py",
                "nanugpt/train/environment.py",
                "nanugpt/train/previous_run.py",
                "nanugpt/config/protocols.py",
                "nanugpt/metrics/train_metrics.py",
                "nanugpt/train/memory_check.py",
            ),
            params=(
                "general",
                "data",
                "tokenizer",
                "model",
                "training",
                "optimizer",
                "scheduler",
                "loss",
                "scaler",
                "eval.eval_every",
                "eval.eval_iters",
                # The curve of eval.tasks during training. Not eval.tasks and eval.hellaswag_path: adding a benchmark
                # to evaluate's must not re-run training (tasks_every > 0 needs tasks [hellaswag], the only one),
                # and a local copy of the same file is the same file; its sha256 says which file the curve scores.
                "eval.tasks_every",
                "eval.tasks_examples",
                "eval.hellaswag_sha256",
                "logging",
                "launch",
            ),
            deps=("{data_dir}",),
            # OUT_DIR/checkpoints, where the run writes as it goes and resumes from, is no output: neither DVC nor
            # Snakemake deletes it before a rerun, and DVC's run-cache records the stage (pipeline/publish.py)
            outs=("{out_dir}/model", "{out_dir}/run_info.json"),
            metrics=("{out_dir}/train_summary.json", "{out_dir}/dvclive/metrics.json"),
            plots=(
                "{out_dir}/plots/train.csv",
                "{out_dir}/plots/val.csv",
                "{out_dir}/plots/tasks.csv",  # header only without eval.tasks_every
                "{out_dir}/dvclive/plots/metrics/train/loss.tsv",
                "{out_dir}/dvclive/plots/metrics/val/loss.tsv",
            ),
            dirs=frozenset({"{out_dir}/model"}),
        ),
        Stage(
            name="evaluate",
            module="stages.evaluate",
            code=(
                "stages/evaluate.py",
                "pipeline/threads.py",
                "nanugpt/eval/evaluate.py",
                "nanugpt/checkpoint/store.py",
                "nanugpt/checkpoint/sharded.py",
                "nanugpt/distributed/fsdp.py",
                *DATA_COMPONENTS,
                "nanugpt/config/token_meta.py",
                "nanugpt/distributed/device.py",
                "nanugpt/distributed/process_group.py",
                "nanugpt/models",
                "nanugpt/ops",
                "nanugpt/optim/losses.py",
                "nanugpt/eval/hellaswag.py",
                "nanugpt/config/protocols.py",
                "nanugpt/files/download.py",
                "nanugpt/data/tokenizers",
            ),
            params=(
                "general.seed",
                "general.device_type",
                "general.dtype",
                "data.dataset",
                "tokenizer.module",
                "training.device_batch_size",
                "eval.eval_iters",
                "eval.tasks",
                "eval.hellaswag_path",
                "eval.hellaswag_sha256",
                "general.project_name",
                "general.run_name",
                "logging.tensorboard",
                "logging.wandb",
            ),
            deps=("{data_dir}", "{out_dir}/model"),
            metrics=("{out_dir}/metrics.json",),
        ),
        Stage(
            name="generate",
            module="stages.generate",
            code=(
                "stages/generate.py",
                "pipeline/threads.py",
                "nanugpt/inference/generate.py",
                "nanugpt/checkpoint/store.py",
                "nanugpt/checkpoint/sharded.py",
                "nanugpt/distributed/fsdp.py",
                "nanugpt/distributed/process_group.py",
                "nanugpt/data/tokenized.py",
                "nanugpt/data/packing.py",
                "nanugpt/config/token_meta.py",
                "nanugpt/distributed/device.py",
                "nanugpt/models",
                "nanugpt/ops",
                "nanugpt/data/tokenizers",
                "nanugpt/config/protocols.py",
            ),
            params=(
                "general.device_type",
                "general.project_name",
                "general.run_name",
                "data.dataset",
                "tokenizer.module",
                "generate",
                "logging.wandb",
            ),
            deps=("{data_dir}", "{out_dir}/model"),
            outs=("{out_dir}/samples.txt",),
        ),
        Stage(
            name="export",
            module="stages.export",
            code=(
                "stages/export.py",
                "pipeline/threads.py",
                "nanugpt/inference/hf_export.py",
                "nanugpt/checkpoint/store.py",
                "nanugpt/checkpoint/sharded.py",
                "nanugpt/distributed/fsdp.py",
                "nanugpt/distributed/process_group.py",
                "nanugpt/distributed/device.py",
                "nanugpt/data/tokenized.py",
                "nanugpt/data/packing.py",
                "nanugpt/config/token_meta.py",
                "nanugpt/models",
                "nanugpt/ops",
                "nanugpt/data/tokenizers",
                "nanugpt/config/protocols.py",
            ),
            params=("data.dataset", "tokenizer.module", "export"),
            deps=("{data_dir}", "{out_dir}/model"),
            outs=("{out_dir}/hf",),
            dirs=frozenset({"{out_dir}/hf"}),
        ),
    )
}


def render(template: str, data_dir: str, out_dir: str) -> str:
    """An artifact path with ``{data_dir}``, ``{dataset_dir}`` (its parent) and ``{out_dir}`` filled in."""
    return template.format(data_dir=data_dir, dataset_dir=posixpath.dirname(data_dir), out_dir=out_dir)


def code_files(stage: Stage) -> list[str]:
    """The stage's code as files (folders expanded to their ``.py`` files), relative to the repo."""
    files: list[str] = []
    for entry in stage.code:
        path = REPO / entry
        files += sorted(str(p.relative_to(REPO)) for p in path.rglob("*.py")) if path.is_dir() else [entry]
    return files


def corpus_inputs(params_file: str) -> list[str]:
    """The local corpus files the params file names (the source rule's inputs under Snakemake); none when the
    file or its corpus has a problem, which the source stage's command then reports in its own words."""
    try:
        return [str(path) for path in data_corpus_files(load(params_file).data)]
    except (UserError, ConfigError, OSError):
        return []


def param_values(stage: Stage, params: dict[str, Any]) -> dict[str, Any]:
    """The values of the keys the stage reads, from a plain params dict (Snakemake's rerun trigger)."""
    values = {dotted: get_dotted(params, dotted) for dotted in stage.params}
    if stage.reads_tokens_settings:
        values["data"] = tokens_values(params)
    return values


def tokens_values(params: dict[str, Any]) -> Any:
    """What the token files of a plain params dict depend on (``nanugpt.config.schema.tokens_settings``); the data
    section as written when the params are not valid (the stage's command then says what is wrong)."""
    try:
        return tokens_settings(validate_params(copy.deepcopy(params), "params", schema=PipelineParams).data)
    except (UserError, ConfigError):
        return params.get("data")
