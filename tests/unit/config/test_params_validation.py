"""The validation holes of issue 15: each input below used to be accepted or to end in a traceback."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_params, write_params

from nanugpt.config import registry
from nanugpt.config.params import ParamsError, load_params
from nanugpt.config.schema import KIND_BASES
from nanugpt.data.sources import SourceError, resolve_source
from nanugpt.distributed.device import available_bytes
from nanugpt.inference.generate import GenerateError, read_prompt
from nanugpt.train.memory_check import (
    BYTES_PER_PARAMETER,
    ModelTooLarge,
    check_model_fits,
    count_parameters,
)
from pipeline import params as params_tool


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ParamsError) as info:
        load_params(path, overrides or [])
    return info.value.problems


def check_exit(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    """``pipeline.params check`` as the user runs it: the exit code and the lines printed to stderr."""
    code = params_tool.main(["check", *argv])
    return code, capsys.readouterr().err.splitlines()


# 1. Non-finite floats


@pytest.mark.parametrize(
    "key, value",
    [
        ("optimizer.lr", "inf"),
        ("generate.temperature", "inf"),
        ("optimizer.lr", "nan"),
        ("generate.top_p", "nan"),
        ("training.grad_clip", "-inf"),
        ("optimizer.beta2", ".inf"),
        ("training.peak_flops", "Infinity"),
    ],
)
def test_non_finite_override_is_refused(params_file: Path, key: str, value: str) -> None:
    (line,) = problems(params_file, [f"--{key}", value])
    assert line.startswith(f"command line --{key}: {key}: input should be a finite number, got ")
    assert value.lstrip(".") in line or "nan" in line


def test_non_finite_in_file_is_refused_and_large_finite_is_not(tmp_path: Path, corpus: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, optimizer={"lr": float("inf")}))
    assert problems(path) == [f"{path}: optimizer.lr: input should be a finite number, got inf"]
    assert load_params(path, ["--optimizer.lr", "1e30"]).optimizer.lr == 1e30  # finite: the train loop's to judge


# 2. Duplicate keys


def test_duplicate_key_names_both_lines(tmp_path: Path, params_file: Path) -> None:
    text = params_file.read_text().replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.1\n")
    params_file.write_text(text)
    first = text.splitlines().index("  lr: 0.003") + 1
    expected = f"{params_file}: optimizer.lr: duplicate key (lines {first} and {first + 1}); keep one"
    assert problems(params_file) == [expected]


def test_repeated_section_is_a_duplicate_not_a_missing_module(params_file: Path) -> None:
    text = params_file.read_text()
    first = text.splitlines().index("optimizer:") + 1
    params_file.write_text(text + "optimizer:\n  lr: 0.1\n")
    last = len(text.splitlines()) + 1
    assert problems(params_file) == [f"{params_file}: optimizer: duplicate key (lines {first} and {last}); keep one"]


def test_duplicate_key_in_an_included_file(tmp_path: Path, params_file: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("eval:\n  eval_iters: 2\n  eval_iters: 3\n")
    top = tmp_path / "top.yaml"
    top.write_text(f"__include__: [base.yaml, {params_file.name}]\n")
    assert problems(top) == [f"{base}: eval.eval_iters: duplicate key (lines 2 and 3); keep one"]


# 3. Directive values


def test_inherit_takes_only_true_or_false(tmp_path: Path, params_file: Path) -> None:
    top = tmp_path / "top.yaml"
    top.write_text(f"__include__: {params_file.name}\noptimizer:\n  _inherit: maybe\n  lr: 0.1\n")
    expected = f"{top}: optimizer._inherit: expected true (merge, the default) or false (replace), got 'maybe'"
    assert problems(top) == [expected]


def test_time_stamp_with_unknown_code(tmp_path: Path, params_file: Path) -> None:
    top = tmp_path / "top.yaml"
    top.write_text(f"__include__: {params_file.name}\ngeneral:\n  run_name: _time:%Q\n")
    (line,) = problems(top)
    assert line.startswith(f"{top}: general.run_name: _time: unknown strftime code '%Q'; use %a %A")
    assert "%Y" in line


@pytest.mark.parametrize("directive", ["_copy:", "_copy: /", "_copy: ."])
def test_copy_without_a_path(tmp_path: Path, params_file: Path, directive: str) -> None:
    top = tmp_path / "top.yaml"
    top.write_text(f"__include__: {params_file.name}\ngeneral:\n  run_name: '{directive}'\n")
    (line,) = problems(top)
    assert line.startswith(f"{top}: general.run_name: _copy: expected a path such as /section/key, got ")


def test_copy_key_must_be_a_path(tmp_path: Path, params_file: Path) -> None:
    top = tmp_path / "top.yaml"
    top.write_text(f"__include__: {params_file.name}\neval:\n  _copy: [1, 2]\n")
    assert problems(top) == [f"{top}: eval: _copy: expected a path such as /section/key, got [1, 2]"]


# 4. Command-line values and the command line's own errors


def test_string_keys_keep_the_text_typed(params_file: Path) -> None:
    params = load_params(
        params_file,
        [
            "--generate.prompt",
            "ROMEO:",
            "--generate.seed",
            "7",
            "--general.run_name",
            "2024",
            "--data.sha256",
            "null",
            "--training.resume",
            "never",
            "--eval.eval_iters",
            "3",
            "--model.bias",
            "false",
            "--data.hf.split",
            "1",
        ],
    )
    assert params.generate.prompt == "ROMEO:" and params.generate.seed == 7
    assert params.general.run_name == "2024" and params.data.sha256 is None
    assert params.training.resume == "never" and params.eval.eval_iters == 3 and params.model.bias is False
    assert params.data.hf.split == "1"


def test_component_string_key_follows_the_overridden_module(params_file: Path) -> None:
    params = load_params(params_file, ["--tokenizer.encoding", "gpt2", "--tokenizer.module", "tiktoken"])
    assert params.tokenizer.encoding == "gpt2"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["--foo.bar", "1"], "command line --foo.bar: foo: unknown key"),
        (["--optimizer.lrr", "1"], "command line --optimizer.lrr: optimizer.lrr: unknown key; did you mean 'lr'?"),
        (["--optimizer.lr"], "command line: --optimizer.lr needs a value"),
        (["--optimizer.lr", "--generate.seed", "3"], "command line: --optimizer.lr needs a value"),
        (["--lr", "1"], "command line: --lr: expected a dotted key"),
        (["--optimizer..lr", "1"], "command line: --optimizer..lr: expected a dotted key"),
    ],
)
def test_command_line_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], params_file: Path, overrides: list[str], expected: str
) -> None:
    code, lines = check_exit(capsys, [str(params_file), *overrides])
    assert code == 2 and len(lines) == 1 and lines[0].startswith(expected)


def test_params_path_or_include_that_is_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert check_exit(capsys, [str(tmp_path)]) == (2, [f"{tmp_path}: is a folder, expected a params YAML file"])
    (tmp_path / "sub").mkdir()
    top = tmp_path / "top.yaml"
    top.write_text("__include__: sub\n")
    assert check_exit(capsys, [str(top)]) == (
        2,
        [f"{top}: __include__: {tmp_path / 'sub'}: is a folder, expected a params YAML file"],
    )


# 5. Components


def test_component_module_that_raises_on_import(
    tmp_path: Path, params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_component_15.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (line,) = problems(params_file, ["--model.module", "broken_component_15:Options"])
    assert line.startswith(
        "command line --model.module: model.module: importing 'broken_component_15' raised "
        "RuntimeError: boom second line;"
    )
    sys.modules.pop("broken_component_15", None)


@pytest.mark.parametrize("module", ["nanugpt.config.schema:ModelOptions", "nanugpt.config.schema.ModelOptions"])
def test_base_class_is_not_a_component(params_file: Path, module: str) -> None:
    (line,) = problems(params_file, ["--model.module", module, "--model.n_layer", "null", "--model.n_head", "null"])
    assert f"model.module: '{module}' is a base class, not a component: it does not implement build;" in line


def test_every_builtin_component_resolves() -> None:
    for kind, names in registry.BUILTIN.items():
        for name in names:
            assert issubclass(registry.resolve(kind, name), KIND_BASES[kind])


# 6. FILE: prompts


def test_prompt_file_that_is_binary_or_missing(tmp_path: Path) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\xff\xfe")
    with pytest.raises(GenerateError, match=rf"generate.prompt: {binary} is not UTF-8 text"):
        read_prompt(f"FILE:{binary}")
    with pytest.raises(GenerateError, match="generate.prompt: cannot read .*nope.txt: No such file"):
        read_prompt(f"FILE:{tmp_path / 'nope.txt'}")
    with pytest.raises(GenerateError, match="cannot read"):
        read_prompt(f"FILE:{tmp_path}")


# 7. A pinned sha256 and another source


def test_sha256_mismatch_says_how_to_proceed(tmp_path: Path, corpus: Path) -> None:
    actual = hashlib.sha256(corpus.read_bytes()).hexdigest()
    with pytest.raises(SourceError) as info:
        resolve_source(str(corpus), "tiny", "0" * 64, tmp_path / "raw")
    assert f"--data.sha256 {actual}" in str(info.value) and "--data.sha256 null" in str(info.value)


# 8. Model size against memory


def test_parameters_are_counted_without_allocating(params_file: Path) -> None:
    model = load_params(params_file).model
    torch.manual_seed(0)
    assert count_parameters(model, 34) == sum(p.numel() for p in model.build(34).parameters())
    huge = load_params(params_file, ["--model.n_embd", "100000000", "--model.n_head", "4"]).model
    assert count_parameters(huge, 34) > 10**17  # would be exabytes if allocated


def test_model_too_large_is_refused_with_the_estimate(params_file: Path) -> None:
    model = load_params(params_file).model
    count = count_parameters(model, 34)
    needed = count * BYTES_PER_PARAMETER
    check_model_fits(model, 34, available=needed)
    expected = rf"model: {count:,} parameters need about {needed / 2**20:.1f} MiB for .* but only"
    with pytest.raises(ModelTooLarge, match=expected):
        check_model_fits(model, 34, available=needed - 1)
    with pytest.raises(ModelTooLarge, match="x 2 processes"):
        check_model_fits(model, 34, available=needed + 1, processes=2)
    check_model_fits(model, 34, available=None)  # unknown memory: no verdict


def test_available_bytes_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_bytes(torch.device("cpu"), meminfo) == 8_000_000 * 1024
    assert available_bytes(torch.device("cpu"), tmp_path / "absent") is None


def test_a_project_name_that_wandb_refuses_stops_the_load(tmp_path: Path, corpus: Path) -> None:
    """Issue 30, case 13: W&B's UsageError came mid-run, after run_info.json, plots and TensorBoard files."""
    path = write_params(tmp_path / "params.yaml", tiny_params(corpus, general={"project_name": "a/b"}))
    load_params(path)  # W&B off: any name is a name
    assert problems(path, ["--logging.wandb", "true"]) == [
        f"{path}: general.project_name: W&B refuses the project name 'a/b' (logging.wandb is on): at most 128 "
        "characters, none of / \\ # ? % :"
    ]
    assert problems(path, ["--logging.wandb", "true", "--general.project_name", "p" * 129])
