"""The loader's ``a.yaml;b.yaml`` stacking and its ``_env:`` section (nanuGPT's last two directives)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers import ASSETS, tiny_params, write_params

from nanugpt.config.loader import ConfigError, load_yaml_tree
from pipeline.schema import load

NANUGPT_CONFIGS = ASSETS / "nanugpt"


def write(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    return path


def test_stacked_files_merge_in_order_later_wins(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", {"a": {"x": 1, "y": 2}, "b": 1})
    write(tmp_path / "sub" / "inner.yaml", {"a": {"z": 9}})
    overlay = write(tmp_path / "sub" / "overlay.yaml", {"__include__": "inner.yaml", "a": {"y": 3}, "c": 4})
    assert load_yaml_tree(f"{base};{overlay}") == {"a": {"x": 1, "y": 3, "z": 9}, "b": 1, "c": 4}
    assert load_yaml_tree(f"{overlay} ; {base}")["a"]["y"] == 2  # order decides; spaces around ';' are ignored
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_yaml_tree(f"{base};{tmp_path / 'nope.yaml'}")


def test_an_overlay_stacks_onto_a_params_file(tmp_path: Path, corpus: Path) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    overlay = write(
        tmp_path / "lr_range_test.yaml",
        {"scheduler": {"_inherit": False, "module": "lr_range_test", "min_lr": 1e-5, "max_lr": 1e-1}},
    )
    loaded = load(f"{params};{overlay}")
    assert (loaded.scheduler.module, loaded.scheduler.max_lr, loaded.optimizer.lr) == ("lr_range_test", 0.1, 3e-3)


def test_env_sets_variables_before_later_keys_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NANUGPT_T_PROJECT", "NANUGPT_T_ROOT", "NANUGPT_T_FLAG"):
        monkeypatch.setenv(name, "before")  # restored after the test, whatever the loader sets
    monkeypatch.setenv("NANUGPT_T_HOME", "/home/x")
    path = write(
        tmp_path / "p.yaml",
        {
            "general": {"project_name": "grok"},
            "_env": {
                "NANUGPT_T_PROJECT": "_copy: /general/project_name",
                "NANUGPT_T_ROOT": "$NANUGPT_T_HOME/runs",
                "NANUGPT_T_FLAG": True,
            },
            "out": {"dir": "$NANUGPT_T_ROOT/$NANUGPT_T_PROJECT", "flag": "${NANUGPT_T_FLAG}"},
        },
    )
    assert load_yaml_tree(path) == {
        "general": {"project_name": "grok"},
        "out": {"dir": "/home/x/runs/grok", "flag": "true"},
    }
    assert os.environ["NANUGPT_T_PROJECT"] == "grok"


def test_bad_env_entries_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", {"_env": {"1BAD": "x", "LIST": [1, 2], "EMPTY": None}})
    with pytest.raises(ConfigError) as exc:
        load_yaml_tree(path)
    assert [line.split(": ", 1)[1] for line in exc.value.problems] == [
        "_env.1BAD: not an environment variable name (letters, digits, _)",
        "_env.EMPTY: expected a string or number, got None",  # yaml.safe_dump wrote the keys sorted
        "_env.LIST: expected a string or number, got [1, 2]",
    ]
    with pytest.raises(ConfigError, match=r"_env: expected a mapping of NAME: value, got 'x'"):
        load_yaml_tree(write(tmp_path / "q.yaml", {"_env": "x"}))


def test_nanugpts_lr_range_test_overlay_imports_stacked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.params import main

    configs = NANUGPT_CONFIGS
    stacked = f"{configs / 'train_gpt2' / 'tinyshakespeare.yaml'};{configs / 'hp_tuning' / 'lr_range_test.yaml'}"
    assert main(["import-nanugpt", stacked, "-o", str(tmp_path / "lrrt.yaml")]) == 0
    monkeypatch.setenv("DATA_ROOT", "/data")
    params = load(tmp_path / "lrrt.yaml")
    assert (params.scheduler.module, params.training.max_steps, params.eval.eval_every) == ("lr_range_test", 60, 1)
    # nanuGPT: lr * exp(4 * (step / max_steps - 0.5)), from lr / e^2 to lr * e^2
    assert params.scheduler.min_lr == pytest.approx(1.5e-3 * 2.718281828**-2)
    assert params.scheduler.max_lr == pytest.approx(1.5e-3 * 2.718281828**2)
