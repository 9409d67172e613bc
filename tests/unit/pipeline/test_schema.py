"""The launch section belongs to the pipeline: every command checks it, runs record it, the library ignores it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import tiny_params, write_params

import pipeline.launch
import pipeline.params
from nanugpt.checkpoint.store import load_trained_model
from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import Params
from pipeline import paths
from pipeline.schema import LaunchParams, PipelineParams, load
from stages import evaluate, export, generate, source, tokenize, train

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "source": source.main,
    "tokenize": tokenize.main,
    "train": train.main,
    "evaluate": evaluate.main,
    "generate": generate.main,
    "export": export.main,
    "pipeline.launch": pipeline.launch.main,
    "pipeline.params check": lambda argv: pipeline.params.main(["check", *argv]),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_a_bad_launch_key_at_load_time(name: str, tmp_path: Path, corpus: Path, capsys) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, launch={"nprocs_per_node": 2}))
    assert COMMANDS[name]([str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: launch.nprocs_per_node: unknown key; did you mean 'nproc_per_node'?\n"


def test_launch_cross_rule_is_reported_with_its_key(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, launch={"nproc_per_node": 4, "gpus_per_node": 2}))
    with pytest.raises(ParamsError, match=r"launch: gpus_per_node \(2\) is fewer than nproc_per_node \(4\)"):
        load(path)


def test_the_library_schema_has_no_launch_section(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, launch={"nproc_per_node": 2}))
    assert "launch" not in Params.model_fields
    with pytest.raises(ParamsError, match="launch: unknown key"):
        load_params(path)
    assert load(path).launch == LaunchParams(nproc_per_node=2)


def test_checkpoint_holds_the_whole_params_and_still_loads(tmp_path: Path, corpus: Path) -> None:
    path = write_params(
        tmp_path / "params.yaml",
        tiny_params(
            corpus, training={"max_steps": 2, "checkpoint_every": 0}, eval={"eval_every": 0}, launch={"mem_mb": 1234}
        ),
    )
    params = load(path)
    data, out = tmp_path / "data", tmp_path / "out"
    tokenize.run(params, data_root=data)
    train.run(params, data_root=data, out_dir=out)
    assert json.loads((out / "run_info.json").read_text())["params"]["launch"]["mem_mb"] == 1234
    assert torch.load(paths.last_checkpoint(out), weights_only=True)["params"]["launch"]["mem_mb"] == 1234
    _, trained, _ = load_trained_model(paths.last_checkpoint(out), torch.device("cpu"))
    assert trained.to_dict() == {k: v for k, v in params.to_dict().items() if k != "launch"}


def test_params_tools_cover_launch() -> None:
    assert "| `launch.nproc_per_node` | int | `1` |" in pipeline.params.reference()
    assert "launch" in pipeline.params.json_schema()["params"]["properties"]
    assert PipelineParams.model_fields["launch"].annotation is LaunchParams
