"""End-to-end: the pipeline under the real ``dvc`` binary, in a throw-away copy of the repository.

A module fixture copies the repository's files into a temporary git repository with a
tiny params file and walks through the user's day once, with the README's DVC commands as
written: ``dvc repro``, a second ``dvc repro``, the README's queue of two experiments and
``dvc exp run --run-all``, ``dvc exp run -S optimizer.lr=1e-3``, ``dvc exp show --json``,
``dvc exp run -S generate.temperature=...``, ``dvc exp run -S 'eval.tasks=[hellaswag]'``,
HellaSwag during training as an experiment of the train stage alone
(``dvc exp run -S eval.tasks_every=10 -S training.resume=never train``) and
``dvc plots show --json``. Each test asserts on one step's recorded result (the README
test skips those commands: they run here). A bad params file gets its own fresh workspace.

The module's last tests share that walk-through through DVC remotes (docs/remotes.md): the workspace pushes to a
local-path remote and to an SSH remote served by a real ``sshd`` on node n1 of the namespace cluster (skipped
without it), and a clone of it in another folder pulls the artifacts, the queued experiments and the run-cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    BYTE_EOT,
    DIGITS_TEXT,
    README_EXPERIMENT_HELLASWAG,
    README_EXPERIMENT_LR,
    README_QUEUE_TWO_EXPERIMENTS,
    README_REPRO,
    README_RESTORE_ELSEWHERE,
    README_RUN_QUEUED_EXPERIMENTS,
    SshServer,
    dvc_env,
    make_workspace,
    mixture_data,
    output,
    ran_stages,
    run,
    skipped_stages,
    sshd_on_node,
    tiny_params,
    write_params,
)

pytestmark = pytest.mark.slow

NEW_LR = 1e-3  # README_EXPERIMENT_LR's
QUEUED_LRS = [6e-4, 3e-3]  # README_QUEUE_TWO_EXPERIMENTS's
NEW_TEMPERATURE = 0.5
STAGE_NAMES = ("source", "tokenize", "train", "evaluate", "generate", "export")
# HellaSwag examples in the tiny corpus's characters stand in for the official file (a download): the workspace's
# params point eval.hellaswag_path at them, so the README's experiment runs as written.
HELLASWAG_EXAMPLES = [
    {"ctx": "First Citizen:", "endings": ["Before", "All:", "Speak", "die"], "label": 0},
    {"ctx": "All:\nSpeak,", "endings": ["speak.", "resolved", "famish", "Citizen"], "label": 0},
    {"ctx": "Resolved.", "endings": ["resolved.", "proceed", "speak", "further"], "label": 0},
]
HELLASWAG = {"hellaswag_path": "hellaswag.jsonl", "hellaswag_sha256": None}
PARAMS = tiny_params("corpus.txt", eval={"eval_every": 10, "eval_iters": 2, **HELLASWAG})  # corpus: in the workspace
TASKS_EVERY = 10  # HellaSwag during training: scored at steps 10 and 20 of the 20
MIXTURE = mixture_data("corpus.txt", "digits.txt", weights=(0.7, 0.3))  # files of the workspace
MIXTURE_NEW_WEIGHT = 0.7  # the digits' weight made the corpus's: half the rows each
# The first run's token files, checkpoints, export and metrics (and what else DVC caches): what a clone must pull
ARTIFACTS = (
    "data/tiny/source.json",
    "data/tiny/char",
    "out/model",
    "out/hf",
    "out/run_info.json",
    "out/samples.txt",
    "out/metrics.json",
    "out/train_summary.json",
    "out/dvclive/metrics.json",
)


def files_under(path: Path) -> list[Path]:
    """Every file below ``path``; none when it does not exist."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def digests(ws: Path, paths: tuple[str, ...] = ARTIFACTS) -> dict[str, str]:
    """``{path in ws: sha256}`` of each file at or under ``paths``."""
    files = [file for path in paths for file in ([ws / path] if (ws / path).is_file() else files_under(ws / path))]
    return {str(file.relative_to(ws)): hashlib.sha256(file.read_bytes()).hexdigest() for file in files}


def listed(expected: dict[str, str], got: dict[str, str]) -> str:
    """Each file's sha256 in the first workspace and in the clone, one line each: an assertion's message."""
    names = sorted(set(expected) | set(got))
    return "\n".join(f"{name}: {expected.get(name, '-')} (A) {got.get(name, '-')} (B)" for name in names)


def shell(command: str, ws: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A README command line, run as written by bash in ``ws``."""
    return run(["bash", "-c", command], ws, env)


def experiment_names(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The experiments a ``dvc exp run`` ran, from its ``Reproducing experiment 'name'`` lines."""
    return re.findall(r"Reproducing experiment '([\w-]+)'", output(result))


def experiments(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{experiment name: its data}`` from ``dvc exp show --json``."""
    return {exp["name"]: rev["data"] for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]}


@dataclass
class Session:
    """What each step of the DVC walk-through returned, and the artifacts it left."""

    ws: Path
    env: dict[str, str]
    repro: subprocess.CompletedProcess[str]
    first_run_digests: dict[str, str]
    first_metrics: dict[str, Any]
    baseline_rev: str
    repro_again: subprocess.CompletedProcess[str]
    token_files_mtime: dict[Path, int]
    exp_lr: subprocess.CompletedProcess[str]
    exp_lr_s: float
    exp_lr_metrics: dict[str, Any]
    exp_lr_digests: dict[str, str]
    token_files_mtime_after_exp: dict[Path, int]
    exp_show: list[dict[str, Any]]
    samples_before_temperature: str
    exp_temperature: subprocess.CompletedProcess[str]
    exp_temperature_s: float
    samples_after_temperature: str
    queued: subprocess.CompletedProcess[str]
    exp_hellaswag: subprocess.CompletedProcess[str]
    hellaswag_metrics: dict[str, Any]
    exp_tasks_curve: subprocess.CompletedProcess[str]
    exp_show_all: list[dict[str, Any]]
    plots: dict[str, Any]
    exp_mixture: subprocess.CompletedProcess[str]
    exp_show_mixture: list[dict[str, Any]]
    status_mixture_weight: dict[str, Any]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """Walk through the DVC user's day once in a fresh workspace, recording every step."""
    tmp = tmp_path_factory.mktemp("dvc")
    env = dvc_env(tmp)
    ws = make_workspace(tmp, PARAMS, env)
    (ws / "hellaswag.jsonl").write_text("".join(json.dumps(example) + "\n" for example in HELLASWAG_EXAMPLES))
    run(["git", "add", "hellaswag.jsonl"], ws, env)
    run(["git", "commit", "-q", "-m", "HellaSwag examples"], ws, env)
    tokens = ws / "data" / "tiny" / "char"

    repro = shell(README_REPRO, ws, env)
    first_run_digests = digests(ws)
    first_metrics = json.loads((ws / "out" / "metrics.json").read_text())
    run(["git", "add", "-A"], ws, env)  # the baseline commit holds metrics.json, as a user's would
    run(["git", "commit", "-q", "-m", "first run"], ws, env)
    baseline_rev = run(["git", "rev-parse", "HEAD"], ws, env).stdout.strip()

    repro_again = shell(README_REPRO, ws, env)
    token_files_mtime = {p: p.stat().st_mtime_ns for p in files_under(tokens)}

    # queued from the committed first run, as the README's order has it: the lr=3e-3 one is that run's params
    shell(README_QUEUE_TWO_EXPERIMENTS, ws, env)
    queued = shell(README_RUN_QUEUED_EXPERIMENTS, ws, env)  # runs them in temporary copies

    start = time.perf_counter()
    exp_lr = shell(README_EXPERIMENT_LR, ws, env)
    exp_lr_s = time.perf_counter() - start
    exp_lr_digests = digests(ws)
    exp_lr_metrics = json.loads((ws / "out" / "metrics.json").read_text())
    token_files_mtime_after_exp = {p: p.stat().st_mtime_ns for p in files_under(tokens)}
    exp_show = json.loads(run(["dvc", "exp", "show", "--json"], ws, env).stdout)

    samples_before = (ws / "out" / "samples.txt").read_text()
    start = time.perf_counter()
    exp_temperature = run(["dvc", "exp", "run", "-S", f"generate.temperature={NEW_TEMPERATURE}"], ws, env)
    exp_temperature_s = time.perf_counter() - start
    samples_after = (ws / "out" / "samples.txt").read_text()

    exp_hellaswag = shell(README_EXPERIMENT_HELLASWAG, ws, env)
    hellaswag_metrics = json.loads((ws / "out" / "metrics.json").read_text())
    # the walk-through's one extra training: eval.tasks is [hellaswag] now, so the curve can be turned on. A finished
    # run resumes across eval.tasks_every (at max_steps: nothing to train), so the run starts again from step 0;
    # the train stage alone (the plots the other tests read have the same steps after it)
    curve = ["-S", f"eval.tasks_every={TASKS_EVERY}", "-S", "training.resume=never"]
    exp_tasks_curve = run(["dvc", "exp", "run", *curve, "train"], ws, env)
    exp_show_all = json.loads(run(["dvc", "exp", "show", "--json"], ws, env).stdout)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], ws, env).stdout)

    # a mixture of the corpus and a digits corpus, trained (train stage alone), then again with another weight
    walked = (ws / "params.yaml").read_text()  # put back after: the tests above read the walk's last params
    (ws / "digits.txt").write_text(DIGITS_TEXT)
    mixture = write_params(ws.parent / "mixture.yaml", {**PARAMS, "data": MIXTURE, "tokenizer": BYTE_EOT})
    run([sys.executable, "-m", "pipeline.params", "use", str(mixture)], ws, env)
    exp_mixture = run(["dvc", "exp", "run", "train"], ws, env)
    exp_show_mixture = json.loads(run(["dvc", "exp", "show", "--json"], ws, env).stdout)
    explicit = yaml.safe_load((ws / "params.yaml").read_text())
    explicit["data"]["sources"][1]["weight"] = MIXTURE_NEW_WEIGHT
    (ws / "params.yaml").write_text(yaml.safe_dump(explicit, sort_keys=False))
    # what a repro would run now, without running it (CI's time): the record tokenize depends on holds no weight,
    # so it is the one the source stage made (the unit tests show that it writes the same record for any weight)
    status_mixture_weight = json.loads(run(["dvc", "status", "--json", "train"], ws, env).stdout)
    (ws / "params.yaml").write_text(walked)
    return Session(
        ws=ws,
        env=env,
        repro=repro,
        first_run_digests=first_run_digests,
        first_metrics=first_metrics,
        baseline_rev=baseline_rev,
        repro_again=repro_again,
        token_files_mtime=token_files_mtime,
        exp_lr=exp_lr,
        exp_lr_s=exp_lr_s,
        exp_lr_digests=exp_lr_digests,
        exp_lr_metrics=exp_lr_metrics,
        token_files_mtime_after_exp=token_files_mtime_after_exp,
        exp_show=exp_show,
        samples_before_temperature=samples_before,
        exp_temperature=exp_temperature,
        exp_temperature_s=exp_temperature_s,
        samples_after_temperature=samples_after,
        queued=queued,
        exp_hellaswag=exp_hellaswag,
        hellaswag_metrics=hellaswag_metrics,
        exp_tasks_curve=exp_tasks_curve,
        exp_show_all=exp_show_all,
        plots=plots,
        exp_mixture=exp_mixture,
        exp_show_mixture=exp_show_mixture,
        status_mixture_weight=status_mixture_weight,
    )


def test_repro_runs_every_stage_and_writes_artifacts(session: Session) -> None:
    assert ran_stages(session.repro) == list(STAGE_NAMES)
    ws = session.ws
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (ws / "data" / "tiny" / "char" / name).stat().st_size > 0
    assert session.first_metrics["val_loss"] > 0
    assert session.first_metrics["val_ppl"] > 1
    # the finished run's last checkpoint, as DVC's cache (of the default type, copy) gave it back
    assert (ws / "out" / "model" / "last.pt").read_bytes() == (ws / "out" / "checkpoints" / "last.pt").read_bytes()
    samples = (ws / "out" / "samples.txt").read_text()
    assert samples.startswith("First")  # tiny_params' prompt
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGE_NAMES)


def test_second_repro_runs_nothing_but_the_source_check(session: Session) -> None:
    assert ran_stages(session.repro_again) == ["source"]  # always_changed: it hashes the corpus, nothing more
    assert skipped_stages(session.repro_again) == list(STAGE_NAMES[1:])


def test_new_lr_reruns_train_evaluate_generate_but_not_tokenize(session: Session) -> None:
    assert skipped_stages(session.exp_lr) == ["tokenize"]
    assert ran_stages(session.exp_lr) == ["source", "train", "evaluate", "generate", "export"]
    assert session.token_files_mtime_after_exp == session.token_files_mtime  # token files untouched
    assert session.token_files_mtime
    params = yaml.safe_load((session.ws / "params.yaml").read_text())
    assert params["optimizer"]["lr"] == NEW_LR
    assert session.exp_lr_metrics["val_loss"] != session.first_metrics["val_loss"]  # it really trained again


def test_exp_show_lists_baseline_and_experiment_with_val_loss(session: Session) -> None:
    rows = {row["rev"]: row for row in session.exp_show}
    baseline = rows[session.baseline_rev]
    assert baseline["data"]["metrics"]["out/metrics.json"]["data"]["val_loss"] == session.first_metrics["val_loss"]
    assert baseline["data"]["params"]["params.yaml"]["data"]["optimizer"]["lr"] == PARAMS["optimizer"]["lr"]

    (name,) = experiment_names(session.exp_lr)
    experiment = experiments(session.exp_show)[name]
    assert experiment["params"]["params.yaml"]["data"]["optimizer"]["lr"] == NEW_LR
    assert experiment["metrics"]["out/metrics.json"]["data"]["val_loss"] == session.exp_lr_metrics["val_loss"]


def test_new_temperature_reruns_only_generate(session: Session) -> None:
    assert skipped_stages(session.exp_temperature) == ["tokenize", "train", "evaluate", "export"]
    assert ran_stages(session.exp_temperature) == ["source", "generate"]
    assert session.samples_after_temperature != session.samples_before_temperature


def test_queued_experiments_run_and_dvc_lists_dvclives_step_and_metrics(session: Session) -> None:
    names = experiment_names(session.queued)
    assert len(names) == 2, output(session.queued)
    shown = experiments(session.exp_show_all)
    assert sorted(shown[name]["params"]["params.yaml"]["data"]["optimizer"]["lr"] for name in names) == QUEUED_LRS
    for name in names:
        live = shown[name]["metrics"]["out/dvclive/metrics.json"]["data"]
        assert live["step"] == PARAMS["training"]["max_steps"]
        assert live["train"]["loss"] > 0 and live["train"]["tokens_per_s"] > 0
        assert live["val"]["loss"] > 0 and live["val"]["best_loss"] > 0
        assert shown[name]["metrics"]["out/metrics.json"]["data"]["val_loss"] > 0  # evaluate's figures too


def test_an_experiment_with_hellaswag_reruns_evaluate_alone_and_dvc_lists_its_figures(session: Session) -> None:
    # the source stage checks the corpus at every run (always_changed); of the rest, evaluate alone re-runs
    assert ran_stages(session.exp_hellaswag) == ["source", "evaluate"]
    (name,) = experiment_names(session.exp_hellaswag)
    (baseline,) = [row for row in session.exp_show_all if row["rev"] == session.baseline_rev]
    assert "hellaswag_acc" not in baseline["data"]["metrics"]["out/metrics.json"]["data"]
    figures = experiments(session.exp_show_all)[name]["metrics"]["out/metrics.json"]["data"]
    assert figures["hellaswag_examples"] == len(HELLASWAG_EXAMPLES) and 0 <= figures["hellaswag_acc_norm"] <= 1
    assert figures["hellaswag_acc"] == session.hellaswag_metrics["hellaswag_acc"]


def test_plots_show_has_train_and_val_loss_curves(session: Session) -> None:
    t, eval_every = PARAMS["training"], PARAMS["eval"]["eval_every"]
    train_steps, val_steps = list(range(1, t["max_steps"] + 1)), list(range(eval_every, t["max_steps"] + 1, eval_every))
    interval_steps = list(range(t["log_every"], t["max_steps"] + 1, t["log_every"]))  # evaluations are among them
    (plot,) = session.plots["data"]["loss_by_step"]  # dvclive's series: one field, "loss", in two files
    assert plot["content"]["encoding"]["x"]["field"] == "step"
    steps: dict[str, list[int]] = {}
    for point in plot["content"]["data"]["values"]:
        steps.setdefault(point["filename"], []).append(int(point["step"]))
        assert float(point["loss"]) > 0
    # dvclive has a row per log interval, the CSV (below) one per step; DVC drops the shared folders
    assert steps == {"train/loss.tsv": interval_steps, "val/loss.tsv": val_steps}
    (plot,) = session.plots["data"]["loss_by_tokens"]
    assert plot["content"]["encoding"]["x"]["field"] == "tokens"
    steps = {}
    for point in plot["content"]["data"]["values"]:
        steps.setdefault(point["filename::field"], []).append(int(point["step"]))
        assert float(point["dvc_inferred_y_value"]) > 0  # a loss
    assert steps == {"train.csv::train_loss": train_steps, "val.csv::val_loss": val_steps}


def test_hellaswag_during_training_is_drawn_by_dvc_plots_and_listed_by_dvc_exp_show(session: Session) -> None:
    assert ran_stages(session.exp_tasks_curve) == ["source", "train"]  # the train stage's param: train re-runs
    (name,) = experiment_names(session.exp_tasks_curve)
    shown = experiments(session.exp_show_all)
    live = shown[name]["metrics"]["out/dvclive/metrics.json"]["data"]  # dvclive's summary: the figures of step 20
    assert live["step"] == PARAMS["training"]["max_steps"]
    assert set(live["tasks"]) == {"hellaswag_acc", "hellaswag_acc_norm"}
    assert all(0 <= figure <= 1 for figure in live["tasks"].values())
    (baseline,) = [row for row in session.exp_show_all if row["rev"] == session.baseline_rev]
    assert "tasks" not in baseline["data"]["metrics"]["out/dvclive/metrics.json"]["data"]  # off by default
    # the scoring draws no random number: training is that of the lr experiment (the same train params but these)
    (lr_name,) = experiment_names(session.exp_lr)
    curve_run, lr_run = (shown[n]["metrics"]["out/train_summary.json"]["data"] for n in (name, lr_name))
    assert (curve_run["train_loss"], curve_run["val_loss"]) == (lr_run["train_loss"], lr_run["val_loss"])

    # dvc.yaml's top-level plot of plots/tasks.csv: a point per scoring and figure, by tokens seen
    scorings = list(range(TASKS_EVERY, PARAMS["training"]["max_steps"] + 1, TASKS_EVERY))
    tokens_per_step = PARAMS["training"]["global_batch_size"] * PARAMS["model"]["context_length"]
    (plot,) = session.plots["data"]["hellaswag_by_tokens"]
    assert plot["content"]["encoding"]["x"]["field"] == "tokens"
    points: dict[str, dict[int, float]] = {}
    for point in plot["content"]["data"]["values"]:
        assert int(point["tokens"]) == int(point["step"]) * tokens_per_step
        points.setdefault(point["field"], {})[int(point["step"])] = float(point["dvc_inferred_y_value"])
    assert {field: sorted(steps) for field, steps in points.items()} == {
        "hellaswag_acc": scorings,
        "hellaswag_acc_norm": scorings,
    }
    assert {field: steps[scorings[-1]] for field, steps in points.items()} == live["tasks"]


def test_a_new_mixture_weight_would_train_again_but_tokenize_nothing(session: Session) -> None:
    assert ran_stages(session.exp_mixture) == ["source", "tokenize", "train"]
    # train's params changed; tokenize's record (source.json) did not, so tokenize is not listed
    assert session.status_mixture_weight == {"train": [{"changed deps": {"params.yaml": {"data": "modified"}}}]}


def test_exp_show_lists_each_sources_tokens_and_val_loss(session: Session) -> None:
    (name,) = experiment_names(session.exp_mixture)
    shown = experiments(session.exp_show_mixture)[name]["metrics"]
    summary = shown["out/train_summary.json"]["data"]
    assert shown["out/dvclive/metrics.json"]["data"]["sources"] == summary["sources"]
    assert set(summary["sources"]) == {"letters", "digits"}
    tokens = {source: figures["tokens"] for source, figures in summary["sources"].items()}
    assert sum(tokens.values()) == summary["tokens_seen"]
    assert tokens["digits"] / summary["tokens_seen"] == pytest.approx(0.3, abs=0.05)  # of 160 rows
    assert all(figures["val_loss"] > 0 for figures in summary["sources"].values())


def test_bad_params_stop_dvc_repro_before_any_work(tmp_path: Path) -> None:
    env = dvc_env(tmp_path)
    ws = make_workspace(tmp_path, PARAMS, env)
    bad = yaml.safe_load((ws / "params.yaml").read_text())
    # source reads neither section, but every stage validates the whole file first
    bad["optimizer"]["lrr"] = bad["optimizer"].pop("lr")
    bad["model"]["n_layer"] = "four"
    (ws / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))

    result = run(["dvc", "repro"], ws, env, expect_ok=False)
    text = output(result)
    assert "params.yaml: optimizer.lrr: unknown key; did you mean 'lr'?" in text
    assert "params.yaml: optimizer.lr: required key is missing" in text
    assert re.search(r"params\.yaml: model\.n_layer: .*'four'", text)
    assert ran_stages(result) == ["source"]  # the first stage stops at once
    assert files_under(ws / "data") == []
    assert files_under(ws / "out") == [ws / "out" / "logs" / "source.log"]  # the errors, and nothing else
    assert "optimizer.lrr: unknown key" in (ws / "out" / "logs" / "source.log").read_text()
    assert not (ws / "dvc.lock").exists()


@dataclass
class Shared:
    """What a clone of the walk-through's workspace got through the DVC remotes, step by step."""

    pushed: list[str]
    pulled_digests: dict[str, str]
    repro: subprocess.CompletedProcess[str]
    exp_show: list[dict[str, Any]]
    restored: subprocess.CompletedProcess[str]
    restored_s: float
    restored_digests: dict[str, str]
    applied_params: dict[str, Any]
    applied_digests: dict[str, str]
    exp_run: subprocess.CompletedProcess[str]
    exp_run_s: float
    exp_run_samples: str


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real sshd on node n1 of the namespace cluster, for this module's SSH remote."""
    with sshd_on_node(tmp_path_factory.mktemp("sshd"), "n1") as server:
        yield server


def add_remotes(ws: Path, env: dict[str, str], *, shared_path: Path, ssh_url: str, keyfile: Path) -> None:
    """docs/remotes.md's set-up: the local-path remote as the default and the SSH remote with its key, both in
    ``.dvc/config.local``, where they hold for every commit and experiment of the repository."""
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(shared_path)], ws, env)
    run(["dvc", "remote", "add", "--local", "ssh", ssh_url], ws, env)
    run(["dvc", "remote", "modify", "--local", "ssh", "keyfile", str(keyfile)], ws, env)


@pytest.fixture(scope="module")
def shared(session: Session, ssh_server: SshServer) -> Shared:
    """docs/remotes.md's commands: the walk-through's workspace (A) pushes its artifacts and the run-cache to a
    local-path remote (the default) and to the SSH remote, its git history to a bare repository (origin), and four
    experiments: the two queued ones, the new lr and the new temperature on top of it. A clone of origin in
    another folder (B) pulls the artifacts and the run-cache over SSH, runs ``dvc repro``, pulls the experiments
    from the local-path remote, lists them, applies the new lr, and runs the new temperature again."""
    ws, env, tmp = session.ws, session.env, session.ws.parent
    remotes = {"shared_path": tmp / "remote-shared", "ssh_url": ssh_server.url(tmp / "remote-ssh")}
    add_remotes(ws, env, keyfile=ssh_server.keyfile, **remotes)
    run(["git", "clone", "-q", "--bare", str(ws), str(tmp / "origin.git")], tmp, env)
    run(["git", "remote", "add", "origin", str(tmp / "origin.git")], ws, env)
    # -A: every commit's artifacts; the workspace holds the walk's last experiment, the commit a clone checks out
    # the first run. push-runs: the run-cache and every output its records name, to the default remote
    run(["dvc", "push", "-A"], ws, env)
    run([sys.executable, "-m", "pipeline.storage", "push-runs"], ws, env)
    run(["dvc", "push", "-A", "--run-cache", "-r", "ssh"], ws, env)
    (lr_name,), (temperature_name,) = experiment_names(session.exp_lr), experiment_names(session.exp_temperature)
    pushed = [*experiment_names(session.queued), lr_name, temperature_name]
    run(["dvc", "exp", "push", "origin", *pushed], ws, env)

    clone = tmp / "clone"
    run(["git", "clone", "-q", str(tmp / "origin.git"), str(clone)], tmp, env)
    add_remotes(clone, env, keyfile=ssh_server.keyfile, **remotes)
    run(["dvc", "pull", "--run-cache", "-r", "ssh"], clone, env)
    pulled_digests = digests(clone)
    repro = run(["dvc", "repro"], clone, env)
    run(["dvc", "exp", "pull", "origin", *pushed], clone, env)
    exp_show = json.loads(run(["dvc", "exp", "show", "--json"], clone, env).stdout)
    start = time.perf_counter()
    restored = shell(README_RESTORE_ELSEWHERE, clone, env)  # the lr experiment's setting, on the first run's commit
    restored_s, restored_digests = time.perf_counter() - start, digests(clone)
    run(["dvc", "exp", "apply", lr_name], clone, env)
    applied_params, applied_digests = yaml.safe_load((clone / "params.yaml").read_text()), digests(clone)
    start = time.perf_counter()
    exp_run = run(["dvc", "exp", "run", "-S", f"generate.temperature={NEW_TEMPERATURE}"], clone, env)
    exp_run_s = time.perf_counter() - start
    return Shared(
        pushed=pushed,
        pulled_digests=pulled_digests,
        repro=repro,
        exp_show=exp_show,
        restored=restored,
        restored_s=restored_s,
        restored_digests=restored_digests,
        applied_params=applied_params,
        applied_digests=applied_digests,
        exp_run=exp_run,
        exp_run_s=exp_run_s,
        exp_run_samples=(clone / "out" / "samples.txt").read_text(),
    )


def test_a_clone_pulls_the_first_runs_artifacts_byte_identical_over_ssh(session: Session, shared: Shared) -> None:
    expected = session.first_run_digests
    assert any(name.endswith("train.bin") for name in expected) and "out/model/last.pt" in expected
    assert any(name.startswith("out/hf/") for name in expected)
    assert shared.pulled_digests == expected, listed(expected, shared.pulled_digests)


def test_repro_in_the_clone_runs_nothing_but_the_source_check(shared: Shared) -> None:
    assert ran_stages(shared.repro) == ["source"], output(shared.repro)
    assert skipped_stages(shared.repro) == list(STAGE_NAMES[1:]), output(shared.repro)


def test_pushed_experiments_show_in_the_clone_as_in_the_workspace(session: Session, shared: Shared) -> None:
    here, there = experiments(session.exp_show_all), experiments(shared.exp_show)
    assert sorted(there) == sorted(shared.pushed)
    for name in shared.pushed:
        assert there[name]["params"] == here[name]["params"], name
        assert there[name]["metrics"] == here[name]["metrics"], name


def assert_restored(result: subprocess.CompletedProcess[str], stages: tuple[str, ...], timing: str) -> None:
    """``result`` ran the source check alone (always_changed) and restored ``stages`` from the run-cache."""
    log = output(result)
    assert ran_stages(result) == ["source"], f"{timing}\n{log}"
    for stage in stages:
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in log, f"{stage}: {timing}\n{log}"


def test_the_clones_run_of_a_trained_setting_restores_every_stage_from_the_pushed_run_cache(
    session: Session, shared: Shared
) -> None:
    timing = f"{shared.restored_s:.1f} s in the clone, {session.exp_lr_s:.1f} s when the workspace trained it"
    print(timing)  # pytest -rP shows it
    assert_restored(shared.restored, ("train", "evaluate", "generate", "export"), timing)
    expected = session.exp_lr_digests
    assert shared.restored_digests == expected, f"{timing}\n{listed(expected, shared.restored_digests)}"


def test_an_applied_experiment_gives_the_clone_its_artifacts_byte_identical(session: Session, shared: Shared) -> None:
    assert shared.applied_params["optimizer"]["lr"] == NEW_LR
    assert shared.applied_digests == session.exp_lr_digests, listed(session.exp_lr_digests, shared.applied_digests)


def test_the_clones_run_of_a_setting_run_before_restores_it_from_the_pushed_run_cache(
    session: Session, shared: Shared
) -> None:
    timing = f"{shared.exp_run_s:.1f} s in the clone, {session.exp_temperature_s:.1f} s when the workspace ran it"
    assert_restored(shared.exp_run, ("generate",), timing)
    assert shared.exp_run_samples == session.samples_after_temperature, timing
