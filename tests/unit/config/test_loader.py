"""Every authoring directive of the params loader, and its error paths."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from nanugpt.config.loader import RUN_TIME_ENV, ConfigError, load_yaml_tree, parse_overrides


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_include_merges_deeply_later_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {"model": {"n_layer": 2, "n_head": 4}, "training": {"max_steps": 10}})
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "mid.yaml", {"__include__": "../base.yaml", "model": {"n_layer": 6}})
    top = write(tmp_path / "sub" / "top.yaml", {"__include__": ["mid.yaml"], "training": {"max_steps": 99}})
    assert load_yaml_tree(top) == {"model": {"n_layer": 6, "n_head": 4}, "training": {"max_steps": 99}}


def test_include_list_order_later_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"x": {"v": 1, "a": 1}})
    write(tmp_path / "b.yaml", {"x": {"v": 2}})
    top = write(tmp_path / "top.yaml", {"__include__": ["a.yaml", "b.yaml"]})
    assert load_yaml_tree(top) == {"x": {"v": 2, "a": 1}}


def test_inherit_false_replaces_section(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {"tokenizer": {"module": "tiktoken", "encoding": "gpt2"}})
    top = write(tmp_path / "top.yaml", {"__include__": "base.yaml", "tokenizer": {"_inherit": False, "module": "byte"}})
    assert load_yaml_tree(top) == {"tokenizer": {"module": "byte"}}


def test_include_cycle_and_missing_file_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"__include__": "b.yaml"})
    write(tmp_path / "b.yaml", {"__include__": "a.yaml"})
    with pytest.raises(ConfigError, match="__include__ cycle"):
        load_yaml_tree(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"__include__": "nope.yaml"})
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_yaml_tree(tmp_path / "c.yaml")


def test_copy_absolute_relative_and_mapping(tmp_path: Path) -> None:
    top = write(
        tmp_path / "p.yaml",
        {
            "model": {"context_length": 64, "n_embd": 128},
            "data": {"context": "_copy: /model/context_length", "width": "_copy: ../model/n_embd"},
            "training": {"device_batch_size": 12, "global_batch_size": "_copy: device_batch_size"},
            "other": {"_copy": "/model", "n_embd": 256},
        },
    )
    tree = load_yaml_tree(top)
    assert tree["data"] == {"context": 64, "width": 128}
    assert tree["training"]["global_batch_size"] == 12
    assert tree["other"] == {"context_length": 64, "n_embd": 256}


def test_copy_follows_chains_and_sees_overrides(tmp_path: Path) -> None:
    top = write(tmp_path / "p.yaml", {"a": {"x": 1}, "b": {"y": "_copy: /a/x"}, "c": {"z": "_copy: /b/y"}})
    assert load_yaml_tree(top, ["--a.x", "5"])["c"]["z"] == 5


def test_copy_cycle_and_dangling_are_errors(tmp_path: Path) -> None:
    top = write(tmp_path / "p.yaml", {"a": {"x": "_copy: /b/y"}, "b": {"y": "_copy: /a/x"}, "c": {"z": "_copy: /nope"}})
    with pytest.raises(ConfigError) as info:
        load_yaml_tree(top)
    text = str(info.value)
    assert "_copy cycle" in text and "/a/x" in text
    assert "c.z: _copy: nothing at '/nope'" in text


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANU_ROOT", "/scratch")
    top = write(tmp_path / "p.yaml", {"data": {"a": "$NANU_ROOT/x", "b": "${NANU_ROOT}y", "c": "cost $$5"}})
    assert load_yaml_tree(top)["data"] == {"a": "/scratch/x", "b": "/scratchy", "c": "cost $5"}


def test_unset_env_var_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANU_UNSET", raising=False)
    top = write(tmp_path / "p.yaml", {"data": {"source": "${NANU_UNSET}/input.txt"}})
    with pytest.raises(ConfigError, match=r"data.source: environment variable \$NANU_UNSET is not set"):
        load_yaml_tree(top)


def test_a_variable_named_like_a_secret_is_never_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 30, case 11: ``run-$WANDB_API_KEY`` would write the key into every checkpoint and log."""
    monkeypatch.setenv("WANDB_API_KEY", "s3cr3t-value")
    monkeypatch.setenv("hf_token", "s3cr3t-value")
    monkeypatch.delenv("NANUGPT_SECRET_NAMES", raising=False)
    top = write(tmp_path / "p.yaml", {"general": {"run_name": "run-$WANDB_API_KEY", "tag": "${hf_token}"}})
    with pytest.raises(ConfigError) as refused:
        load_yaml_tree(top)
    message = str(refused.value)
    assert "general.run_name: $WANDB_API_KEY looks like a secret (its name matches *KEY*)" in message
    assert "general.tag: $hf_token looks like a secret (its name matches *TOKEN*)" in message
    assert "s3cr3t" not in message
    monkeypatch.setenv("NANUGPT_SECRET_NAMES", "*PASSWORD*")  # the patterns are the user's to set
    assert load_yaml_tree(top)["general"] == {"run_name": "run-s3cr3t-value", "tag": "s3cr3t-value"}
    monkeypatch.setenv("MY_PASSWORD", "x")
    with pytest.raises(ConfigError, match=r"\$MY_PASSWORD looks like a secret"):
        load_yaml_tree(write(tmp_path / "q.yaml", {"general": {"run_name": "$MY_PASSWORD"}}))


def test_env_expansion_runs_no_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    top = write(tmp_path / "p.yaml", {"data": {"source": f"$(touch {marker})`touch {marker}`"}})
    assert load_yaml_tree(top)["data"]["source"].startswith("$(touch")
    assert not marker.exists()


def test_time_stamp_is_shared_through_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    monkeypatch.setenv(RUN_TIME_ENV, repr(stamp))
    top = write(tmp_path / "p.yaml", {"general": {"run_name": "_time:%Y%m%d-%H%M%S", "day": "_time:%d"}})
    assert load_yaml_tree(top)["general"] == {"run_name": "20260102-030405", "day": "02"}


def test_time_stamp_fixed_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_TIME_ENV, raising=False)
    top = write(tmp_path / "p.yaml", {"general": {"run_name": "_time:"}})
    first = load_yaml_tree(top)["general"]["run_name"]
    time.sleep(1.1)
    assert load_yaml_tree(top)["general"]["run_name"] == first
    import os

    assert RUN_TIME_ENV in os.environ  # children (torchrun ranks) inherit the same stamp


def test_overrides_parse_yaml_values() -> None:
    parsed = parse_overrides(["--optimizer.lr", "3e-4", "--a.b=[1, 2]", "--c.d", "null", "--e.f", "text"])
    assert parsed == {"optimizer.lr": "3e-4", "a.b": [1, 2], "c.d": None, "e.f": "text"}


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--optimizer.lr"])
    with pytest.raises(ConfigError, match="expected a dotted key"):
        parse_overrides(["--lr", "1"])
    with pytest.raises(ConfigError, match="expected '--section.key value'"):
        parse_overrides(["lr=1"])


def test_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml_tree(write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_yaml_tree(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    evil = write(tmp_path / "evil.yaml", "a: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml_tree(evil)


def test_a_yaml_bomb_and_an_oversized_file_are_refused(tmp_path: Path) -> None:
    """Issue 30, case 12: a few nested aliases expand to billions of values."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = write(tmp_path / "bomb.yaml", "\n".join(levels) + "\n")
    with pytest.raises(ConfigError, match=r"more than 100,000 values once its aliases \(\*name\) are expanded"):
        load_yaml_tree(bomb)
    big = write(tmp_path / "big.yaml", "general:\n  run_name: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: 1,048,\d+ bytes; a params file may have at most 1,048,576"):
        load_yaml_tree(big)
    reused = write(tmp_path / "reused.yaml", "base: &b {lr: 1}\none: *b\ntwo: *b\n")  # aliases as people use them
    assert load_yaml_tree(reused)["two"] == {"lr": 1}
