# A sweep's rules, included by the Snakefile when `--config sweep=sweeps/<name>.yaml` is given.
#
#   snakemake -j 4 --config sweep=sweeps/lr_width.yaml
#   snakemake --executor slurm -j 8 --workflow-profile profiles/slurm --config sweep=sweeps/lr_width.yaml
#
# Every point runs train, evaluate and generate (and export, with `export: true` in the sweep file) into
# OUT_DIR/sweeps/<name>/<point>/, with the same commands and outputs as the single-run rules; points that
# share a token folder (DATA_ROOT/<dataset>/<tokenizer>) share one tokenize job. The points' params files
# are written when the workflow is read, and only those whose content changed: each job reruns on the
# values of the keys its stage reads (params trigger), so adding a value runs only the new points and
# editing a point reruns only that point. On Slurm each point's train job asks for its own `launch`
# resources. A stage that fails leaves `logs/<stage>.failed` in its point's folder; with --keep-going
# (profiles/default, profiles/slurm) the other points go on, and the report written at the end
# (report.html, summary.csv; pipeline.sweep.report) shows the point as failed. A point's train job takes
# launch.cpus_per_node threads, else one, so that `-j N` trains N points at once without them fighting over
# cores; its other jobs take one. On a cluster a point's evaluate, generate and export ask for resources from
# the point's `launch` section.
import re
import shlex
from pathlib import Path

from nanugpt.data.sources import data_corpus_files
from pipeline.sweep import spec as sweeps
from pipeline.sweep.report import failed_marker, write_report

SWEEP = sweeps.expand(SWEEP_FILE)
SWEEP_DIR = str(SWEEP.folder(OUT_DIR))
# Tokenize jobs run from here, shared by every sweep of this OUT_DIR: a second sweep on the same
# token folder finds it built (same command, same params) and does not tokenize again.
TOKENIZE_DIR = f"{OUT_DIR}/sweeps/_tokenize"
POINTS = {point.name: point for point in SWEEP.points}
DATA = sweeps.data_groups(SWEEP)
sweeps.write_params_files(SWEEP, Path(SWEEP_DIR), Path(TOKENIZE_DIR))
POINT_STAGES = ("evaluate", "generate", "export") if SWEEP.export else ("evaluate", "generate")
SWEEP_TARGETS = [
    str(path)
    for name in POINTS
    for stage in ("train", *POINT_STAGES)
    for path in outputs(stage, out_dir=f"{SWEEP_DIR}/{name}")
]


def one_of(names):
    """A wildcard constraint that matches exactly these names."""
    return "|".join(re.escape(name) for name in names)


def point_dir(wildcards):
    return f"{SWEEP_DIR}/{wildcards.point}"


def point_data_dir(wildcards):
    return f"{DATA_ROOT}/{POINTS[wildcards.point].data_dir}"


def point_values(stage):
    """The values of the keys ``stage`` reads, for the point of a job (its rerun trigger)."""
    return lambda wildcards: param_values(STAGES[stage], POINTS[wildcards.point].params.to_dict())


def point_inputs(stage):
    return lambda wildcards: paths(stage, "deps", point_data_dir(wildcards), point_dir(wildcards))


def point_command(stage):
    """The stage's command on the point's params file with OUT_DIR at the point's folder; a failure leaves a marker."""
    folder = shlex.quote(SWEEP_DIR) + "/{wildcards.point}"
    marker = shlex.quote(SWEEP_DIR) + "/" + str(failed_marker("{wildcards.point}", stage))
    run = f"OUT_DIR={folder} {STAGES[stage].command(folder + '/params.yaml')} > {{log}} 2>&1"
    return f"rm -f {marker}; {run} || {{{{ touch {marker}; exit 1; }}}}"


def point_stage_resources():
    """The resources of a point's evaluate, generate and export, each a function of the point (stage_resources)."""
    keys = sorted(stage_resources(SWEEP.points[0].params.to_dict()))
    resource = lambda key: lambda wildcards: stage_resources(POINTS[wildcards.point].params.to_dict()).get(key, 0)  # noqa: E731
    return {key: resource(key) for key in keys}


def point_resources():
    """The train job's resources, each a function of the point (Slurm reads the point's `launch` section)."""
    keys = {tuple(sorted(train_resources(p.params.to_dict()))) for p in SWEEP.points}
    if len(keys) > 1:
        raise WorkflowError(
            f"{SWEEP_FILE}: the points ask Slurm for different kinds of resources ({' / '.join(map(str, keys))}); "
            "run the points with and without GPUs (or with one and several nodes) as separate sweeps"
        )
    resource = lambda key: lambda wildcards: train_resources(POINTS[wildcards.point].params.to_dict())[key]  # noqa: E731
    return {key: resource(key) for key in next(iter(keys))}


# The single-run tokenize rule builds the same folder when params.yaml names the same data: this one wins.
ruleorder: sweep_tokenize > tokenize


rule sweep_tokenize:
    input:
        # the group's local corpus files themselves (a sweep has no source jobs): editing one re-tokenizes
        lambda wildcards: [str(p) for p in data_corpus_files(DATA[wildcards.data].params.data)],
        code_files(STAGES["tokenize"]),
    output:
        outputs("tokenize", data_dir=f"{DATA_ROOT}/{{data}}"),
    params:
        values=lambda wildcards: param_values(STAGES["tokenize"], DATA[wildcards.data].params.to_dict()),
    log:
        f"{TOKENIZE_DIR}/{{data}}/logs/tokenize.log",
    wildcard_constraints:
        data=one_of(DATA),
    shell:
        f"OUT_DIR={shlex.quote(TOKENIZE_DIR)}/{{wildcards.data}} "
        + STAGES["tokenize"].command(shlex.quote(TOKENIZE_DIR) + "/{wildcards.data}/params.yaml")
        + " > {log} 2>&1"


rule sweep_train:
    input:
        point_inputs("train"),
        code_files(STAGES["train"]),
    output:
        outputs("train", out_dir=f"{SWEEP_DIR}/{{point}}"),
    params:
        values=point_values("train"),
    log:
        f"{SWEEP_DIR}/{{point}}/logs/train.log",
    wildcard_constraints:
        point=one_of(POINTS),
    resources:
        **point_resources(),
    threads: lambda wildcards: train_threads(POINTS[wildcards.point].params.to_dict(), default=1)
    shell:
        point_command("train")


rule sweep_evaluate:
    input:
        point_inputs("evaluate"),
        code_files(STAGES["evaluate"]),
    output:
        outputs("evaluate", out_dir=f"{SWEEP_DIR}/{{point}}"),
    params:
        values=point_values("evaluate"),
    log:
        f"{SWEEP_DIR}/{{point}}/logs/evaluate.log",
    wildcard_constraints:
        point=one_of(POINTS),
    resources:
        **point_stage_resources(),
    shell:
        point_command("evaluate")


rule sweep_generate:
    input:
        point_inputs("generate"),
        code_files(STAGES["generate"]),
    output:
        outputs("generate", out_dir=f"{SWEEP_DIR}/{{point}}"),
    params:
        values=point_values("generate"),
    log:
        f"{SWEEP_DIR}/{{point}}/logs/generate.log",
    wildcard_constraints:
        point=one_of(POINTS),
    resources:
        **point_stage_resources(),
    shell:
        point_command("generate")


rule sweep_export:
    input:
        point_inputs("export"),
        code_files(STAGES["export"]),
    output:
        outputs("export", out_dir=f"{SWEEP_DIR}/{{point}}"),
    params:
        values=point_values("export"),
    log:
        f"{SWEEP_DIR}/{{point}}/logs/export.log",
    wildcard_constraints:
        point=one_of(POINTS),
    resources:
        **point_stage_resources(),
    shell:
        point_command("export")


def write_sweep_report():
    html, csv = write_report(SWEEP, Path(SWEEP_DIR))
    print(f"sweep report: {html} and {csv}")


onsuccess:
    write_sweep_report()


onerror:
    write_sweep_report()
