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
from pipeline.sweep import halving, spec as sweeps
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
# {point: {train run folder: its params}}: the point's folder, and under halving one folder per earlier rung
RUNS = {name: sweeps.run_trees(point, SWEEP, Path(SWEEP_DIR)) for name, point in POINTS.items()}
HALVING = SWEEP.halving


def point_targets(names):
    """The outputs of every stage of the points ``names``, in their own folders."""
    return [
        str(path)
        for name in names
        for stage in ("train", *POINT_STAGES)
        for path in outputs(stage, out_dir=f"{SWEEP_DIR}/{name}")
    ]


def rung_entrants(steps):
    """The points that train to the rung ``steps``: every point at the first, else those the rung before promoted
    (known once its promotion job has run: a Snakemake checkpoint)."""
    previous = HALVING.previous(int(steps))
    if previous is None:
        return list(POINTS)
    return halving.promoted(checkpoints.sweep_promote.get(steps=previous).output[0])


def halving_targets(wildcards):
    """Every rung's promotion record, and the outputs of the points that reach the last rung."""
    records = [str(halving.promotion_path(Path(SWEEP_DIR), steps)) for steps in HALVING.rungs[:-1]]
    return records + point_targets(rung_entrants(HALVING.rungs[-1]))


SWEEP_TARGETS = halving_targets if HALVING else point_targets(POINTS)


def one_of(names):
    """A wildcard constraint that matches exactly these names."""
    return "|".join(re.escape(name) for name in names)


def point_dir(wildcards):
    return f"{SWEEP_DIR}/{wildcards.point}"


def point_data_dir(wildcards):
    return f"{DATA_ROOT}/{POINTS[wildcards.point].data_dir}"


def point_values(stage):
    """The values of the keys ``stage`` reads, for the point of a job (its rerun trigger)."""
    if stage == "train":  # the params of the point's own run (under halving, the last rung's)
        return lambda wildcards: param_values(STAGES[stage], RUNS[wildcards.point][Path(point_dir(wildcards))])
    return lambda wildcards: param_values(STAGES[stage], POINTS[wildcards.point].params.to_dict())


STEMS = {stem.name: stem for stem in SWEEP.stems}


def stem_result(wildcards):
    """The summary of the stable phase a point continues from (pipeline/sweep/stems.py), if any."""
    stem = SWEEP.stem_of(POINTS[wildcards.point])
    return [str(stem.folder(Path(SWEEP_DIR)) / "train_summary.json")] if stem else []


def rung_dir(wildcards):
    return halving.rung_folder(Path(point_dir(wildcards)), int(wildcards.steps), HALVING)


def previous_rung_result(wildcards):
    """Under halving, the result of the rung a point's run continues from (none for the first rung)."""
    if not HALVING:
        return []
    steps = int(getattr(wildcards, "steps", HALVING.rungs[-1]))
    previous = HALVING.previous(steps)
    if previous is None:
        return []
    return [str(halving.rung_folder(Path(point_dir(wildcards)), previous, HALVING) / halving.RESULT)]


def point_inputs(stage):
    return lambda wildcards: paths(stage, "deps", point_data_dir(wildcards), point_dir(wildcards))


def run_in(stage, folder, log="{log}"):
    """The stage's command on ``folder``'s params file with OUT_DIR at ``folder``, its output into ``log``."""
    return f"OUT_DIR={folder} {STAGES[stage].command(folder + '/params.yaml')} > {log} 2>&1"


def point_command(stage, log="{log}"):
    """The stage's command on the point's params file with OUT_DIR at the point's folder; a failure leaves a marker."""
    marker = shlex.quote(SWEEP_DIR) + "/" + str(failed_marker("{wildcards.point}", stage))
    run = run_in(stage, shlex.quote(SWEEP_DIR) + "/{wildcards.point}", log)
    return f"rm -f {marker}; {run} || {{{{ touch {marker}; exit 1; }}}}"


def after_train_command():
    """Each stage after train, one after another; every stage runs even where one before failed (its marker says
    which), and the job fails if any did."""
    runs = " ".join(f"( {point_command(stage, '{log.' + stage + '}')} ) || failed=1;" for stage in POINT_STAGES)
    return f"failed=0; {runs} exit $failed"


def rung_command():
    """Train a point to a rung in the rung's folder, then write its result (rung.json), done or failed: a point that
    fails or diverges ranks last in the rung instead of stopping the search."""
    folder = shlex.quote(SWEEP_DIR) + "/{wildcards.point}/rungs/{wildcards.steps}"
    run = run_in("train", folder)
    metric = HALVING.metric if HALVING else "val_loss"
    result = f"{shlex.quote(sys.executable)} -m pipeline.sweep rung-result {folder} --exit-code $code --metric {metric}"
    return f"code=0; {run} || code=$?; {result}"


def point_stage_resources():
    """The resources of a point's evaluate, generate and export, each a function of the point (stage_resources)."""
    keys = sorted(stage_resources(SWEEP.points[0].params.to_dict()))
    resource = lambda key: lambda wildcards: stage_resources(POINTS[wildcards.point].params.to_dict()).get(key, 0)  # noqa: E731
    return {key: resource(key) for key in keys}


def point_resources(params_of=lambda wildcards: POINTS[wildcards.point].params.to_dict()):
    """The train job's resources, each a function of the job's params, the point's by default (Slurm reads their
    `launch` section)."""
    keys = {tuple(sorted(train_resources(p.params.to_dict()))) for p in SWEEP.points}
    if len(keys) > 1:
        raise WorkflowError(
            f"{SWEEP_FILE}: the points ask Slurm for different kinds of resources ({' / '.join(map(str, keys))}); "
            "run the points with and without GPUs (or with one and several nodes) as separate sweeps"
        )
    resource = lambda key: lambda wildcards: train_resources(params_of(wildcards))[key]  # noqa: E731
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
        run_in("tokenize", shlex.quote(TOKENIZE_DIR) + "/{wildcards.data}")


rule sweep_train:
    input:
        point_inputs("train"),
        code_files(STAGES["train"]),
        previous_rung_result,
        stem_result,
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


rule sweep_stem:
    input:
        lambda wildcards: paths("train", "deps", f"{DATA_ROOT}/{POINTS[STEMS[wildcards.stem].members[0]].data_dir}"),
        code_files(STAGES["train"]),
    output:
        outputs("train", out_dir=f"{SWEEP_DIR}/_stems/{{stem}}"),
    params:
        values=lambda wildcards: param_values(STAGES["train"], STEMS[wildcards.stem].tree),
    log:
        f"{SWEEP_DIR}/_stems/{{stem}}/logs/train.log",
    wildcard_constraints:
        stem=one_of(STEMS) if STEMS else "$^",
    resources:
        **point_resources(lambda wildcards: STEMS[wildcards.stem].tree),
    threads: lambda wildcards: train_threads(STEMS[wildcards.stem].tree, default=1)
    shell:
        run_in("train", shlex.quote(SWEEP_DIR) + "/_stems/{wildcards.stem}")


rule sweep_rung:
    input:
        point_inputs("train"),
        code_files(STAGES["train"]),
        previous_rung_result,
    output:
        f"{SWEEP_DIR}/{{point}}/rungs/{{steps}}/{halving.RESULT}",
    params:
        values=lambda wildcards: param_values(STAGES["train"], RUNS[wildcards.point][rung_dir(wildcards)]),
    log:
        f"{SWEEP_DIR}/{{point}}/rungs/{{steps}}/logs/train.log",
    wildcard_constraints:
        point=one_of(POINTS),
        steps=one_of(str(steps) for steps in HALVING.rungs[:-1]) if HALVING else "$^",
    resources:
        **point_resources(),
    threads: lambda wildcards: train_threads(POINTS[wildcards.point].params.to_dict(), default=1)
    shell:
        rung_command()


checkpoint sweep_promote:
    input:
        lambda wildcards: [
            str(halving.rung_folder(Path(SWEEP_DIR) / name, int(wildcards.steps), HALVING) / halving.RESULT)
            for name in rung_entrants(wildcards.steps)
        ],
    output:
        f"{SWEEP_DIR}/halving/rung-{{steps}}.json",
    localrule: True
    run:
        record = halving.promote(Path(SWEEP_DIR), rung_entrants(wildcards.steps), HALVING, int(wildcards.steps))
        print(f"rung {wildcards.steps}: promoted {', '.join(record['promoted'])}")


rule sweep_after_train:
    # evaluate, generate (and export) of a point as one job: one queue wait and one start on a cluster, not three
    input:
        *[point_inputs(stage) for stage in POINT_STAGES],
        *[code_files(STAGES[stage]) for stage in POINT_STAGES],
    output:
        *[path for stage in POINT_STAGES for path in outputs(stage, out_dir=f"{SWEEP_DIR}/{{point}}")],
    params:
        values=lambda wildcards: {stage: point_values(stage)(wildcards) for stage in POINT_STAGES},
    log:
        **{stage: f"{SWEEP_DIR}/{{point}}/logs/{stage}.log" for stage in POINT_STAGES},
    wildcard_constraints:
        point=one_of(POINTS),
    resources:
        **point_stage_resources(),
    shell:
        after_train_command()


def write_sweep_report():
    html, csv = write_report(SWEEP, Path(SWEEP_DIR))
    print(f"sweep report: {html} and {csv}")


onsuccess:
    write_sweep_report()


onerror:
    write_sweep_report()
