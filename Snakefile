# The pipeline under Snakemake: the same six stages, commands and outputs as dvc.yaml,
# built from the table in pipeline/stages.py.
#
#   snakemake -j 2                                                   # locally
#   snakemake -j 2 --config data_root=/scratch/data out_dir=/scratch/runs/exp1
#   snakemake --executor slurm -j 8 --workflow-profile profiles/slurm   # on a cluster
#   snakemake -j 4 --config sweep=sweeps/lr_width.yaml               # every point of a sweep (pipeline/sweep/sweep.smk)
#
# Reruns follow the params each stage reads (Snakemake's params trigger), its code
# (input files) and its inputs, so an optimizer.lr change re-runs train and what follows. The source
# rule has the local corpus files as its inputs, so editing one re-runs source, tokenize and what follows.
# Threads: train takes launch.cpus_per_node, else every core given (-j); evaluate, generate and export,
# short jobs that run side by side after it, one each. Snakemake hands each job its threads as
# OMP_NUM_THREADS, which the stage uses (pipeline/threads.py).
# On a cluster, evaluate, generate and export ask for resources from params' `launch` section (stage_resources).
import os
import sys

import yaml

sys.path.insert(0, workflow.basedir)
from pipeline.stages import STAGES, code_files, corpus_inputs, param_values, render
from pipeline import snapshot
from pipeline.schema import LaunchParams

PARAMS_FILE = config.get("params", "params.yaml")
DATA_ROOT = str(config.get("data_root") or os.environ.get("DATA_ROOT") or "data")
OUT_DIR = str(config.get("out_dir") or os.environ.get("OUT_DIR") or "out")
os.environ["DATA_ROOT"], os.environ["OUT_DIR"] = DATA_ROOT, OUT_DIR  # seen by every stage command

with open(PARAMS_FILE) as f:
    PARAMS = yaml.safe_load(f)
DATA_DIR = f"{DATA_ROOT}/{PARAMS['data']['dataset']}/{PARAMS['tokenizer']['module']}"


def paths(stage, kind, data_dir=DATA_DIR, out_dir=OUT_DIR):
    """Rendered artifact paths of a stage; folders wrapped in directory() for outputs."""
    s = STAGES[stage]
    rendered = []
    for template in getattr(s, kind):
        if kind == "outs" and template in s.dirs:
            rendered.append(directory(render(template, data_dir, out_dir)))
        else:
            rendered.append(render(template, data_dir, out_dir))
    return rendered


def outputs(stage, data_dir=DATA_DIR, out_dir=OUT_DIR):
    return [path for kind in ("outs", "metrics", "plots") for path in paths(stage, kind, data_dir, out_dir)]


def launch_of(params):
    """The ``launch`` section of a plain params dict, defaults filled in."""
    return LaunchParams.model_validate(params.get("launch") or {})


def train_resources(params=PARAMS):
    """The train job's portable resources, from params' ``launch`` section (defaults filled in).

    One task per node runs the launcher (torchrun starts ``nproc_per_node`` processes inside it),
    so cpus_per_task and mem_mb are per node. Cluster specifics (slurm_partition, slurm_account,
    qos) live in the workflow profile (profiles/slurm), not here.
    """
    launch = launch_of(params)
    resources = dict(
        runtime=launch.runtime_min,
        mem_mb=launch.mem_mb,
        cpus_per_task=launch.cpus,
        nodes=launch.nnodes,
        tasks=launch.nnodes,
    )
    if launch.gpus_per_node:
        resources["gres"] = f"gpu:{launch.gpus_per_node}"  # per node
        resources["tasks_per_gpu"] = 0  # keep the slurm plugin from turning `tasks` into --ntasks-per-gpu
    if launch.nnodes > 1:
        # The job runs the rule's command once, on the first node, instead of inside `srun -n1`;
        # pipeline.launch then starts one torchrun per node with its own `srun`.
        resources["mpi"] = "srun"
    return resources


# The cores given with -j on this machine; None under a cluster executor, where -j counts jobs (inside a cluster
# job, the job's cores). The executor itself is not known yet while the Snakefile is read.
CORES = workflow.resource_settings.cores


def stage_resources(params=PARAMS):
    """The resources of each of evaluate, generate and export, from params' ``launch`` section: each loads the model
    on one process (``launch.stage_mem``), with one GPU where train had GPUs."""
    launch = launch_of(params)
    resources = dict(runtime=launch.stage_runtime_min, mem_mb=launch.stage_mem, cpus_per_task=1)
    if launch.gpus_per_node:
        resources["gres"] = "gpu:1"
        resources["tasks_per_gpu"] = 0
    return resources


def train_threads(params=PARAMS, default=None):
    """The train job's threads (Snakemake sets OMP_NUM_THREADS to them; pipeline/threads.py):
    ``launch.cpus_per_node`` when set; on a cluster, the cores the job asks for; else ``default``, else every core
    given to Snakemake (``-j``)."""
    launch = launch_of(params)
    if launch.cpus_per_node or not CORES:
        return launch.cpus
    return default or CORES


def command(stage):
    return STAGES[stage].command(PARAMS_FILE) + " > {log} 2>&1"


onstart:
    # On a cluster (an executor that does not run jobs here) every job runs the code as it is now, from a snapshot
    # under OUT_DIR/.code, not the working tree's code when the job starts (pipeline/snapshot.py)
    if not workflow.executor_plugin.common_settings.local_exec:
        os.environ.update(snapshot.workflow_env(OUT_DIR, os.environ))


SWEEP_FILE = config.get("sweep")
if SWEEP_FILE:  # its rules, and its points' outputs as the targets (SWEEP_TARGETS)

    include: "pipeline/sweep/sweep.smk"


rule all:
    input:
        # plain strings: directory() flags are for outputs only
        SWEEP_TARGETS
        if SWEEP_FILE
        else [str(path) for stage in ("evaluate", "generate", "export") for path in outputs(stage)],


rule source:
    input:
        corpus_inputs(PARAMS_FILE),
        code_files(STAGES["source"]),
    output:
        outputs("source"),
    params:
        values=param_values(STAGES["source"], PARAMS),
    log:
        f"{OUT_DIR}/logs/source.log",
    shell:
        command("source")


rule tokenize:
    input:
        paths("tokenize", "deps"),
        code_files(STAGES["tokenize"]),
    output:
        outputs("tokenize"),
    params:
        values=param_values(STAGES["tokenize"], PARAMS),
    log:
        f"{OUT_DIR}/logs/tokenize.log",
    shell:
        command("tokenize")


rule train:
    input:
        paths("train", "deps"),
        code_files(STAGES["train"]),
    output:
        outputs("train"),
    params:
        values=param_values(STAGES["train"], PARAMS),
    log:
        f"{OUT_DIR}/logs/train.log",
    threads: train_threads()
    resources:
        **train_resources(),
    shell:
        command("train")


rule evaluate:
    input:
        paths("evaluate", "deps"),
        code_files(STAGES["evaluate"]),
    output:
        outputs("evaluate"),
    params:
        values=param_values(STAGES["evaluate"], PARAMS),
    log:
        f"{OUT_DIR}/logs/evaluate.log",
    threads: 1
    resources:
        **stage_resources(),
    shell:
        command("evaluate")


rule generate:
    input:
        paths("generate", "deps"),
        code_files(STAGES["generate"]),
    output:
        outputs("generate"),
    params:
        values=param_values(STAGES["generate"], PARAMS),
    log:
        f"{OUT_DIR}/logs/generate.log",
    threads: 1
    resources:
        **stage_resources(),
    shell:
        command("generate")


rule export:
    input:
        paths("export", "deps"),
        code_files(STAGES["export"]),
    output:
        outputs("export"),
    params:
        values=param_values(STAGES["export"], PARAMS),
    log:
        f"{OUT_DIR}/logs/export.log",
    threads: 1
    resources:
        **stage_resources(),
    shell:
        command("export")
