# The pipeline under Snakemake: the same four stages, commands and outputs as dvc.yaml,
# built from the table in pipeline/stages.py.
#
#   snakemake -j 2                                                   # locally
#   snakemake -j 2 --config data_root=/scratch/data out_dir=/scratch/runs/exp1
#   snakemake --executor slurm -j 8 --workflow-profile profiles/slurm   # on a cluster
#
# Reruns follow the params each stage reads (Snakemake's params trigger), its code
# (input files) and its inputs, so an optimizer.lr change re-runs train and what follows.
import os
import sys

import yaml

sys.path.insert(0, workflow.basedir)
from pipeline.stages import STAGES, code_files, param_values, render

PARAMS_FILE = config.get("params", "params.yaml")
DATA_ROOT = str(config.get("data_root") or os.environ.get("DATA_ROOT") or "data")
OUT_DIR = str(config.get("out_dir") or os.environ.get("OUT_DIR") or "out")
os.environ["DATA_ROOT"], os.environ["OUT_DIR"] = DATA_ROOT, OUT_DIR  # seen by every stage command

with open(PARAMS_FILE) as f:
    PARAMS = yaml.safe_load(f)
DATA_DIR = f"{DATA_ROOT}/{PARAMS['data']['dataset']}/{PARAMS['tokenizer']['module']}"


def paths(stage, kind):
    """Rendered artifact paths of a stage; folders wrapped in directory() for outputs."""
    s = STAGES[stage]
    rendered = []
    for template in getattr(s, kind):
        path = render(template, DATA_DIR, OUT_DIR)
        rendered.append(directory(path) if kind == "outs" and template in s.dirs else path)
    return rendered


def outputs(stage):
    return paths(stage, "outs") + paths(stage, "metrics") + paths(stage, "plots")


def command(stage):
    return STAGES[stage].command(PARAMS_FILE) + " > {log} 2>&1"


rule all:
    input:
        outputs("evaluate"),
        outputs("generate"),


rule tokenize:
    input:
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
    shell:
        command("generate")
