"""End-to-end: the pipeline under the real ``snakemake`` binary, with data and runs outside the workspace.

A module fixture copies the repository's files into a temporary workspace,
writes a tiny params file, and runs the README's ``snakemake -j 2 --config
data_root=/scratch/data out_dir=/scratch/runs/exp1`` (``/scratch`` a temporary
folder outside the workspace) five times: from scratch,
again with nothing changed, after an ``optimizer.lr`` edit, after a
``generate.temperature`` edit, and after one line of the corpus was edited.
Each test asserts on one run's recorded result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    BYTE_EOT,
    DIGITS_TEXT,
    README_SNAKEMAKE_ELSEWHERE,
    TINY_TEXT,
    copy_worktree,
    job_reasons,
    mixture_data,
    tiny_params,
    write_params,
)

from nanugpt.files.hashing import sha256_file

pytestmark = pytest.mark.slow

TIMEOUT_S = 300
NEW_LR = 0.001
NEW_TEMPERATURE = 0.5
EDITED_TEXT = TINY_TEXT.replace("Speak, speak.", "Speak, speak, I say.", 1)  # one line of the corpus
RULES = ("source", "tokenize", "train", "evaluate", "generate", "export")


@dataclass
class Run:
    """One snakemake invocation: its output and the reason it gave for each job, by rule."""

    output: str
    reasons: dict[str, str]


@dataclass
class Session:
    """The workspace, where the runs wrote, each run, and the artifacts they left."""

    ws: Path
    token_dir: Path
    out_dir: Path
    first: Run
    again: Run
    new_lr: Run
    new_temperature: Run
    first_metrics: dict[str, Any]
    new_lr_metrics: dict[str, Any]
    token_files_mtime: dict[Path, int]
    token_files_mtime_after_lr: dict[Path, int]
    samples_before_temperature: str
    samples_after_temperature: str
    corpus_edited: Run
    before_corpus_edit: dict[str, str]
    after_corpus_edit: dict[str, str]
    mixture: Run
    mixture_weight: Run


def mtimes(folder: Path) -> dict[Path, int]:
    """Modification time (ns) of every file below ``folder``."""
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def fingerprint(token_dir: Path, out_dir: Path) -> dict[str, str]:
    """sha256 of the token files, the last checkpoint and the metrics of a run."""
    files = [token_dir / "train.bin", token_dir / "val.bin", out_dir / "checkpoints" / "last.pt"]
    return {path.name: sha256_file(path) for path in [*files, out_dir / "metrics.json"]}


def set_param(params_file: Path, section: str, key: str, value: Any) -> None:
    """Edit one key of a params file, as a user would."""
    params = yaml.safe_load(params_file.read_text())
    params[section][key] = value
    write_params(params_file, params)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """Run snakemake from scratch, again, after an lr edit, a temperature edit and a corpus edit, recording each
    run."""
    tmp = tmp_path_factory.mktemp("snakemake")
    ws, scratch = tmp / "ws", tmp / "scratch"
    data_root, out_dir = scratch / "data", scratch / "runs" / "exp1"
    copy_worktree(ws)
    corpus = tmp / "corpus.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    params_file = write_params(ws / "params.yaml", tiny_params(corpus))

    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = README_SNAKEMAKE_ELSEWHERE.replace("/scratch", str(scratch)).split()

    def snakemake(args: list[str] = command) -> Run:
        result = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        text = result.stdout + result.stderr
        if result.returncode != 0:
            pytest.fail(f"snakemake exited with {result.returncode}\n{text}")
        return Run(text, job_reasons(text))

    tokens = data_root / "tiny" / "char"
    first = snakemake()
    first_metrics = json.loads((out_dir / "metrics.json").read_text())
    again = snakemake()
    token_files_mtime = mtimes(tokens)

    set_param(params_file, "optimizer", "lr", NEW_LR)
    new_lr = snakemake()
    new_lr_metrics = json.loads((out_dir / "metrics.json").read_text())
    token_files_mtime_after_lr = mtimes(tokens)

    samples_before = (out_dir / "samples.txt").read_text()
    set_param(params_file, "generate", "temperature", NEW_TEMPERATURE)
    new_temperature = snakemake()
    samples_after = (out_dir / "samples.txt").read_text()

    before_corpus_edit = fingerprint(tokens, out_dir)
    corpus.write_text(EDITED_TEXT, encoding="utf-8")
    corpus_edited = snakemake()
    after_corpus_edit = fingerprint(tokens, out_dir)

    # a mixture of the corpus and a digits corpus, trained (rules up to train) into a folder of its own; then the plan
    # (a dry run) after a new weight
    digits = tmp / "digits.txt"
    digits.write_text(DIGITS_TEXT)
    params = tiny_params(corpus, tokenizer=BYTE_EOT) | {"data": mixture_data(corpus, digits)}
    mixture_file = write_params(ws / "mixture.yaml", params)
    mixture_run = [*command[:-2], "params=mixture.yaml", command[-2], f"out_dir={scratch}/runs/mix", "--until", "train"]
    mixture = snakemake(mixture_run)
    params["data"]["sources"][1]["weight"] = 0.5
    write_params(mixture_file, params)
    mixture_weight = snakemake([*mixture_run, "-n"])
    return Session(
        ws=ws,
        token_dir=tokens,
        out_dir=out_dir,
        first=first,
        again=again,
        new_lr=new_lr,
        new_temperature=new_temperature,
        first_metrics=first_metrics,
        new_lr_metrics=new_lr_metrics,
        token_files_mtime=token_files_mtime,
        token_files_mtime_after_lr=token_files_mtime_after_lr,
        samples_before_temperature=samples_before,
        samples_after_temperature=samples_after,
        corpus_edited=corpus_edited,
        before_corpus_edit=before_corpus_edit,
        after_corpus_edit=after_corpus_edit,
        mixture=mixture,
        mixture_weight=mixture_weight,
    )


def test_first_run_builds_everything_outside_the_workspace(session: Session) -> None:
    assert sorted(session.first.reasons) == sorted(RULES)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (session.token_dir / name).stat().st_size > 0
    assert (session.out_dir / "checkpoints" / "last.pt").is_file()
    assert session.first_metrics["val_loss"] > 0
    assert session.first_metrics["val_ppl"] > 1
    assert (session.out_dir / "samples.txt").read_text().startswith("First")  # tiny_params' prompt
    for csv in ("train.csv", "val.csv"):
        assert (session.out_dir / "plots" / csv).stat().st_size > 0
    assert not (session.ws / "data").exists()
    assert not (session.ws / "out").exists()


def test_every_rule_writes_its_log(session: Session) -> None:
    for rule in RULES:
        log = session.out_dir / "logs" / f"{rule}.log"
        assert log.stat().st_size > 0, f"{log} is empty"


def test_second_run_has_nothing_to_do(session: Session) -> None:
    assert session.again.reasons == {}
    assert "Nothing to be done" in session.again.output


def test_new_lr_reruns_train_evaluate_generate_but_not_tokenize(session: Session) -> None:
    assert sorted(session.new_lr.reasons) == ["evaluate", "export", "generate", "train"]
    assert session.new_lr.reasons["train"].startswith("Params have changed since last execution")
    assert f"'lr': {NEW_LR}" in session.new_lr.reasons["train"]
    assert session.token_files_mtime_after_lr == session.token_files_mtime  # token files untouched
    assert session.token_files_mtime
    assert session.new_lr_metrics["val_loss"] != session.first_metrics["val_loss"]  # it really trained again


def test_new_temperature_reruns_only_generate(session: Session) -> None:
    assert list(session.new_temperature.reasons) == ["generate"]
    assert session.new_temperature.reasons["generate"].startswith("Params have changed since last execution")
    assert session.samples_after_temperature != session.samples_before_temperature


def test_editing_one_corpus_line_reruns_tokenize_train_and_what_follows(session: Session) -> None:
    assert sorted(session.corpus_edited.reasons) == sorted(RULES)
    assert "corpus.txt" in session.corpus_edited.reasons["source"]  # updated input files: .../corpus.txt
    for name, digest in session.after_corpus_edit.items():
        assert digest != session.before_corpus_edit[name], name  # tokenized and trained anew, not resumed


def test_a_new_mixture_weight_would_train_again_but_tokenize_nothing(session: Session) -> None:
    assert sorted(session.mixture.reasons) == ["source", "tokenize", "train"]
    assert list(session.mixture_weight.reasons) == ["train"]  # the dry run's plan
    assert session.mixture_weight.reasons["train"].startswith("Params have changed since last execution")


def test_forced_train_rerun_keeps_and_resumes_its_checkpoints(session: Session) -> None:
    """Snakemake deletes a rule's outputs before running it: the step checkpoints must survive that."""
    data_root = session.token_dir.parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUT_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [
            "snakemake",
            "-j",
            "1",
            "--forcerun",
            "train",
            "--until",
            "train",  # what follows adds nothing here
            "--config",
            f"data_root={data_root}",
            f"out_dir={session.out_dir}",
        ],
        cwd=session.ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = (session.out_dir / "logs" / "train.log").read_text()
    assert "resumed from step 20" in log, log
