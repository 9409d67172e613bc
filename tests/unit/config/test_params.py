"""Params validation: types, ranges, cross-key rules, components, and the messages users see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_params, write_params

from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import Params
from nanugpt.models.nanogpt import NanoGPTOptions
from pipeline.schema import load


def problems_of(tmp_path: Path, params: dict, overrides: list[str] | None = None) -> str:
    path = write_params(tmp_path / "params.yaml", params)
    with pytest.raises(ParamsError) as info:
        load_params(path, overrides or [])
    return str(info.value)


def test_valid_params_load_with_defaults(params_file: Path) -> None:
    params = load_params(params_file)
    assert params.optimizer.lr == 3e-3
    assert params.model.n_layer == 2
    assert params.loss.module == "autoregressive" and params.scaler.module == "amp"
    assert params.generate.top_k == 200


def test_unknown_key_gets_did_you_mean(tmp_path: Path, corpus: Path) -> None:
    text = problems_of(tmp_path, tiny_params(corpus, optimizer={"lrr": 1e-3}, training={"max_step": 5}))
    assert f"{tmp_path / 'params.yaml'}: optimizer.lrr: unknown key; did you mean 'lr'?" in text
    assert "training.max_step: unknown key; did you mean 'max_steps'?" in text
    assert len(text.splitlines()) == 2  # one line per problem, every problem


def test_unknown_section_is_reported(tmp_path: Path, corpus: Path) -> None:
    params = tiny_params(corpus)
    params["optimiser"] = {"lr": 1}
    assert "optimiser: unknown key; did you mean 'optimizer'?" in problems_of(tmp_path, params)


def test_wrong_type_names_expected_and_found(tmp_path: Path, corpus: Path) -> None:
    text = problems_of(tmp_path, tiny_params(corpus, model={"n_layer": "four"}))
    assert "model.n_layer: input should be a valid integer" in text and "got 'four'" in text


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("optimizer", {"lr": -0.001}, "optimizer.lr: input should be greater than 0, got -0.001"),
        ("model", {"n_embd": 30, "n_head": 4}, "model.n_embd: must be divisible by model.n_head (4), got 30"),
        ("scheduler", {"warmup_steps": 50}, "scheduler.warmup_steps: must be <= training.max_steps (20), got 50"),
        (
            "training",
            {"global_batch_size": 10},
            "training.global_batch_size: must be a multiple of training.device_batch_size (4), got 10",
        ),
        ("data", {"val_fraction": 1.5}, "data.val_fraction: input should be less than 1"),
        ("scaler", {"module": "keller"}, "training.grad_clip: must be 0 with scaler.module keller"),
        (
            "scheduler",
            {"module": "constant", "warmup_steps": 0, "cooldown_steps": 30},
            "scheduler.cooldown_steps: must be <= training.max_steps (20), got 30",
        ),
    ],
)
def test_out_of_range_values(tmp_path: Path, corpus: Path, section: str, values: dict, message: str) -> None:
    assert message in problems_of(tmp_path, tiny_params(corpus, **{section: values}))


def test_missing_required_key(tmp_path: Path, corpus: Path) -> None:
    params = tiny_params(corpus)
    del params["training"]["max_steps"]
    assert "training.max_steps: required key is missing" in problems_of(tmp_path, params)


def test_unknown_module_gets_did_you_mean(tmp_path: Path, corpus: Path) -> None:
    text = problems_of(tmp_path, tiny_params(corpus, optimizer={"module": "adamw_nanogtp"}))
    assert "optimizer.module: unknown optimizer module 'adamw_nanogtp'; did you mean 'adamw_nanogpt'?" in text


def test_module_kwargs_form_means_the_same(tmp_path: Path, corpus: Path) -> None:
    canonical = load_params(write_params(tmp_path / "a.yaml", tiny_params(corpus)))
    nested = tiny_params(corpus)
    nested["optimizer"] = {"module": "adamw_nanogpt", "module_kwargs": {"lr": 3e-3}}
    nested["model"] = {
        "module": "nanogpt",
        "module_kwargs": {"n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
    }
    assert load_params(write_params(tmp_path / "b.yaml", nested)).to_dict() == canonical.to_dict()


def test_module_kwargs_conflict_is_an_error(tmp_path: Path, corpus: Path) -> None:
    params = tiny_params(corpus)
    params["optimizer"]["module_kwargs"] = {"lr": 1e-4}
    assert "optimizer.lr: given both beside 'module'" in problems_of(tmp_path, params)


def test_user_component_by_import_path(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_sched.py").write_text(
        "from nanugpt.optim.schedulers import CosineOptions\n"
        "class HalfCosine(CosineOptions):\n"
        "    '''A user's schedule.'''\n"
        "    half: bool = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    params = load_params(
        write_params(tmp_path / "p.yaml", tiny_params(corpus, scheduler={"module": "my_sched.HalfCosine"}))
    )
    assert type(params.scheduler).__name__ == "HalfCosine" and params.scheduler.half is True
    text = problems_of(tmp_path, tiny_params(corpus, scheduler={"module": "my_sched.Nope"}))
    assert "scheduler.module: cannot import 'my_sched.Nope'" in text


def test_overrides_are_cast_and_unknown_ones_named(tmp_path: Path, params_file: Path) -> None:
    params = load_params(params_file, ["--optimizer.lr", "3e-4", "--generate.top_k", "null", "--model.n_layer=3"])
    assert params.optimizer.lr == pytest.approx(3e-4) and params.generate.top_k is None and params.model.n_layer == 3
    with pytest.raises(
        ParamsError, match="command line --optimizer.lrate: optimizer.lrate: unknown key; did you mean 'lr'"
    ):
        load_params(params_file, ["--optimizer.lrate", "1"])
    with pytest.raises(ParamsError, match="command line --training.max_steps: training.max_steps: input should be"):
        load_params(params_file, ["--training.max_steps", "many"])


def test_cli_bad_params_exit_2_without_traceback(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, optimizer={"lr": "fast"}, model={"n_layr": 2}))
    result = subprocess.run([sys.executable, "-m", "stages.train", str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("optimizer.lr: input should be a valid number" in line for line in lines)
    assert any("model.n_layr: unknown key; did you mean 'n_layer'?" in line for line in lines)


def test_dataset_name_cannot_escape_data_root(tmp_path: Path, corpus: Path) -> None:
    assert "data.dataset" in problems_of(tmp_path, tiny_params(corpus, data={"dataset": "../../etc"}))


def test_every_preset_is_valid() -> None:
    presets = sorted((REPO / "params").glob("*.yaml"))
    assert presets
    for preset in presets:
        load(preset)  # presets are pipeline files: they hold the launch section


def test_params_yaml_is_the_explicit_default_preset() -> None:
    from pipeline.params import explicit_yaml

    expected = explicit_yaml(load(REPO / "params" / "tinyshakespeare_char.yaml"), "tinyshakespeare_char")
    assert (REPO / "params.yaml").read_text() == expected, "run: python -m pipeline.params use tinyshakespeare_char"


class EvenLayersOptions(NanoGPTOptions):
    """A user's model (named by import path below) with a rule of its own that involves another section."""

    def check(self, params: Params) -> list[tuple[str, str]]:
        problems = super().check(params)
        if self.n_layer > params.training.max_steps:
            problems.append(("model.n_layer", f"must be <= training.max_steps ({params.training.max_steps})"))
        return problems


def test_a_user_components_check_is_honoured(tmp_path: Path, corpus: Path) -> None:
    model = {"module": f"{__name__}.EvenLayersOptions", "n_layer": 30, "n_embd": 30, "n_head": 4}
    lines = problems_of(tmp_path, tiny_params(corpus, model=model)).splitlines()
    assert lines == [
        f"{tmp_path / 'params.yaml'}: model.n_embd: must be divisible by model.n_head (4), got 30",
        f"{tmp_path / 'params.yaml'}: model.n_layer: must be <= training.max_steps (20)",
    ]
    params = load_params(
        write_params(tmp_path / "ok.yaml", tiny_params(corpus, model={**model, "n_layer": 2, "n_embd": 32}))
    )
    assert type(params.model) is EvenLayersOptions


def test_every_components_check_runs_and_names_the_override(tmp_path: Path, corpus: Path) -> None:
    text = problems_of(tmp_path, tiny_params(corpus, scaler={"module": "keller"}), ["--scheduler.warmup_steps", "50"])
    assert "command line --scheduler.warmup_steps: scheduler.warmup_steps: must be <= training.max_steps" in text
    assert "training.grad_clip: must be 0 with scaler.module keller" in text


def test_strict_reproducibility_is_for_eager_float32_cpu_runs_at_one_thread(tmp_path: Path, corpus: Path) -> None:
    general = {"reproducible": "strict", "device_type": "auto", "torch_compile": True, "threads": None}
    text = problems_of(tmp_path, tiny_params(corpus, general=general))
    assert text == (
        f"{tmp_path / 'params.yaml'}: general.reproducible: strict runs eager float32 on the CPU at one thread: set "
        "general.device_type cpu, general.torch_compile false, general.threads 1 with it, got 'strict'"
    )
    strict = tiny_params(corpus, general={"reproducible": "strict"})  # tiny_params: cpu, one thread
    assert load_params(write_params(tmp_path / "strict.yaml", strict)).general.reproducible == "strict"
