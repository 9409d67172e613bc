"""End-to-end: a local corpus is a tracked input under the real ``dvc``, and the test split reaches
``metrics.json`` and ``dvc exp show``. (A corpus edit under Snakemake: ``test_snakemake_e2e.py``.)

DVC: a committed first run (with ``data.test_fraction``), one line of the corpus edited and ``dvc repro``
(source, tokenize, train and what follows re-run), then the edit undone as a user of versioned data does it
(``git checkout <first run> -- .`` and ``dvc checkout``): every output comes back from the DVC cache and the
next ``dvc repro`` re-runs nothing but the source check; the same edit made again by hand gets every stage back
from DVC's run-cache, train included: nothing is trained. Each run
stops at evaluate (``dvc repro evaluate``): generate and export add nothing to what is tested.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TINY_TEXT,
    dvc_env,
    make_workspace,
    output,
    ran_stages,
    run,
    skipped_stages,
    tiny_params,
)

from nanugpt.files.hashing import sha256_file

pytestmark = pytest.mark.slow

PARAMS = tiny_params("corpus.txt", data={"test_fraction": 0.1})
EDITED_TEXT = TINY_TEXT.replace("Speak, speak.", "Speak, speak, I say.", 1)  # one line of the corpus
EVERY_STAGE = ["source", "tokenize", "train", "evaluate"]  # up to the target, evaluate


def fingerprint(ws: Path, data_dir: Path, out_dir: Path) -> dict[str, str]:
    """sha256 of the corpus, the token files, the last checkpoint and the metrics of a workspace."""
    files = {
        "corpus": ws / "corpus.txt",
        "train.bin": data_dir / "train.bin",
        "test.bin": data_dir / "test.bin",
        "last.pt": out_dir / "model" / "last.pt",
        "metrics": out_dir / "metrics.json",
    }
    return {name: sha256_file(path) for name, path in files.items()}


@dataclass
class DvcSession:
    ws: Path
    first: dict[str, str]
    first_metrics: dict[str, Any]
    edited: subprocess.CompletedProcess[str]
    after_edit: dict[str, str]
    restored: dict[str, str]
    repro_restored: subprocess.CompletedProcess[str]
    edited_again: subprocess.CompletedProcess[str]
    after_edit_again: dict[str, str]
    exp_show: list[dict[str, Any]]


@pytest.fixture(scope="module")
def dvc_session(tmp_path_factory: pytest.TempPathFactory) -> DvcSession:
    """First run and commit, the one-line edit, and the undo through git and the DVC cache."""
    tmp = tmp_path_factory.mktemp("dvc_data")
    env = dvc_env(tmp)
    ws = make_workspace(tmp, PARAMS, env)
    data_dir, out_dir = ws / "data" / "tiny" / "char", ws / "out"

    run(["dvc", "repro", "evaluate"], ws, env)
    first = fingerprint(ws, data_dir, out_dir)
    first_metrics = json.loads((out_dir / "metrics.json").read_text())
    run(["git", "add", "-A"], ws, env)
    run(["git", "commit", "-q", "-m", "first run"], ws, env)
    exp_show = json.loads(run(["dvc", "exp", "show", "--json"], ws, env).stdout)

    (ws / "corpus.txt").write_text(EDITED_TEXT, encoding="utf-8")
    edited = run(["dvc", "repro", "evaluate"], ws, env)
    after_edit = fingerprint(ws, data_dir, out_dir)

    run(["git", "checkout", "HEAD", "--", "."], ws, env)  # the corpus, dvc.lock and the uncached metrics
    run(["dvc", "checkout", "--with-deps", "evaluate"], ws, env)  # token files and the model from the cache
    restored = fingerprint(ws, data_dir, out_dir)
    repro_restored = run(["dvc", "repro", "evaluate"], ws, env)

    (ws / "corpus.txt").write_text(EDITED_TEXT, encoding="utf-8")
    edited_again = run(["dvc", "repro", "evaluate"], ws, env)
    after_edit_again = fingerprint(ws, data_dir, out_dir)
    return DvcSession(
        ws=ws,
        first=first,
        first_metrics=first_metrics,
        edited=edited,
        after_edit=after_edit,
        restored=restored,
        repro_restored=repro_restored,
        edited_again=edited_again,
        after_edit_again=after_edit_again,
        exp_show=exp_show,
    )


def test_dvc_editing_one_corpus_line_reruns_tokenize_train_and_what_follows(dvc_session: DvcSession) -> None:
    assert ran_stages(dvc_session.edited) == EVERY_STAGE
    for name in ("corpus", "train.bin", "last.pt", "metrics"):
        assert dvc_session.after_edit[name] != dvc_session.first[name], name  # trained anew, not resumed


def test_dvc_undoing_the_edit_brings_the_first_result_back_from_the_cache(dvc_session: DvcSession) -> None:
    assert dvc_session.restored == dvc_session.first
    assert ran_stages(dvc_session.repro_restored) == ["source"]  # the check; the record equals dvc.lock's
    assert skipped_stages(dvc_session.repro_restored) == EVERY_STAGE[1:]


def test_dvc_an_edit_made_again_gets_every_stage_from_the_run_cache(dvc_session: DvcSession) -> None:
    for stage in ("tokenize", "train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in output(dvc_session.edited_again)
    assert ran_stages(dvc_session.edited_again) == ["source"]
    assert dvc_session.after_edit_again == dvc_session.after_edit


def test_test_split_figures_in_metrics_json_and_dvc_exp_show(dvc_session: DvcSession) -> None:
    metrics = dvc_session.first_metrics
    assert metrics["test_loss"] > 0 and metrics["test_ppl"] > 1
    (row,) = [row for row in dvc_session.exp_show if row["rev"] != "workspace"]
    shown = row["data"]["metrics"]["out/metrics.json"]["data"]
    assert (shown["test_loss"], shown["test_ppl"]) == (metrics["test_loss"], metrics["test_ppl"])
