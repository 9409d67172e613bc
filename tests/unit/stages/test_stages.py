"""Stage functions called directly on tiny data, and the stage command lines' error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_params, write_params

from nanugpt.config.params import load_params
from nanugpt.config.token_meta import DataError
from nanugpt.data.sources import SourceError
from nanugpt.data.tokenize import CorpusError
from stages import evaluate, generate, source, tokenize, train


def test_four_stages_in_order(tmp_path: Path, params_file: Path) -> None:
    params = load_params(params_file)
    data, out = tmp_path / "data", tmp_path / "out"
    meta = tokenize.run(params, data_root=data)
    assert (data / "tiny" / "char" / "train.bin").stat().st_size == 2 * meta.train_tokens
    train.run(params, data_root=data, out_dir=out)
    metrics = evaluate.run(params, data_root=data, out_dir=out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["val_ppl"] == pytest.approx(2.718281828 ** metrics["val_loss"], rel=1e-6)
    samples = generate.run(params, data_root=data, out_dir=out)
    assert len(samples) == 2 and all(s.startswith("First") for s in samples)
    assert samples == generate.run(params, data_root=data, out_dir=out)  # same seed, same text
    assert (out / "samples.txt").read_text().startswith(samples[0])


def test_url_source_offline_uses_local_copy_or_says_how(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    import hashlib

    sha = hashlib.sha256(corpus.read_bytes()).hexdigest()
    params = load_params(
        write_params(tmp_path / "p.yaml", tiny_params("http://127.0.0.1:9/tiny.txt", data={"sha256": sha}))
    )
    monkeypatch.delenv("NANUGPT_TINY", raising=False)
    with pytest.raises(SourceError, match=r"set NANUGPT_TINY=/path/to/a/local/copy or put the file at .*raw/tiny.txt"):
        tokenize.run(params, data_root=tmp_path / "data")
    monkeypatch.setenv("NANUGPT_TINY", str(corpus))
    assert tokenize.run(params, data_root=tmp_path / "data").source_sha256 == sha


def test_local_copy_with_wrong_sha_is_refused(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    params = load_params(
        write_params(tmp_path / "p.yaml", tiny_params("http://127.0.0.1:9/tiny.txt", data={"sha256": "0" * 64}))
    )
    monkeypatch.setenv("NANUGPT_TINY", str(corpus))
    with pytest.raises(SourceError, match="sha256 is .*expected 0000"):
        tokenize.run(params, data_root=tmp_path / "data")


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def test_missing_corpus_is_one_clear_line(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(tmp_path / "nope.txt"))
    result = run_cli(["stages.tokenize", str(path)], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: data.source {str(tmp_path / 'nope.txt')!r}: no such file or folder"


def test_train_before_tokenize_says_what_to_run(tmp_path: Path, params_file: Path) -> None:
    result = run_cli(["stages.train", str(params_file)], tmp_path)
    assert result.returncode == 1
    assert "run the tokenize stage first (python -m stages.tokenize)" in result.stderr


def test_cli_runs_with_overrides_and_env_roots(tmp_path: Path, params_file: Path) -> None:
    env = {"DATA_ROOT": str(tmp_path / "d"), "OUT_DIR": str(tmp_path / "o")}
    tokenize.run(load_params(params_file), data_root=tmp_path / "d")
    result = run_cli(["pipeline.launch", str(params_file), "--training.max_steps", "4"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert "(in this process)" in result.stdout and "step 4/4" in result.stdout
    info = json.loads((tmp_path / "o" / "run_info.json").read_text())
    assert info["params"]["training"]["max_steps"] == 4
    assert "--training.max_steps 4" in info["launch_command"]
    keys = {"code", "params", "versions", "device", "world_size", "hosts", "launch_command", "size", "environment"}
    assert set(info) == keys


def test_help_prints_the_manual() -> None:
    result = run_cli(["stages.train", "--help"], REPO)
    assert result.returncode == 0 and "torchrun --standalone" in result.stdout


def test_tokenize_stage_reads_a_hf_datasets_source(tmp_path: Path, corpus: Path) -> None:
    pytest.importorskip("datasets")
    params = load_params(
        write_params(
            tmp_path / "p.yaml",
            tiny_params("hf:text", data={"hf": {"data_files": [str(corpus)]}}, tokenizer={"module": "byte"}),
        )
    )
    meta = tokenize.run(params, data_root=tmp_path / "data")
    lines = corpus.read_text().splitlines()
    assert meta.source == "hf:text" and meta.train_tokens + meta.val_tokens == sum(len(x) + 1 for x in lines)


def test_train_refuses_tokens_of_an_older_corpus_after_a_failed_tokenize(
    tmp_path: Path, corpus: Path, params_file: Path
) -> None:
    """Issue 30, case 14: the source stage recorded an edited corpus, its tokenize failed, and a train by hand
    would have trained on the stale token files."""
    params, data = load_params(params_file), tmp_path / "data"
    source.run(params, data_root=data)
    tokenize.run(params, data_root=data)
    corpus.write_text("")  # an edit that the tokenize stage refuses
    source.run(params, data_root=data)
    with pytest.raises(CorpusError, match="empty"):
        tokenize.run(params, data_root=data)
    with pytest.raises(DataError, match=f"made from another corpus .*\\({corpus} changed\\): run the tokenize stage"):
        train.run(params, data_root=data, out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()
