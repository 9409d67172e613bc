"""Sweep files: grid expansion, point names, validation per point, token folders, the DVC flags."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_params, write_params

from pipeline.schema import load
from pipeline.sweep import dvc as sweep_dvc
from pipeline.sweep.spec import SweepError, expand, point_name, write_params_files


def sweep_file(folder: Path, corpus: Path, name: str = "lr_width", **spec: Any) -> Path:
    """A sweep file beside a tiny base params file."""
    write_params(folder / "base.yaml", tiny_params(corpus))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}, sort_keys=False))
    return path


GRID = {"optimizer.lr": [0.001, 0.003], "model.n_embd": [32, 64]}


def test_grid_expands_to_every_combination_with_names_from_values(tmp_path: Path, corpus: Path) -> None:
    sweep = expand(sweep_file(tmp_path, corpus, grid=GRID))
    assert [p.name for p in sweep.points] == [
        "lr=0.001,n_embd=32",
        "lr=0.001,n_embd=64",
        "lr=0.003,n_embd=32",
        "lr=0.003,n_embd=64",
    ]
    assert sweep.name == "lr_width" and sweep.keys == ("optimizer.lr", "model.n_embd")
    point = sweep.points[1]
    assert point.params.optimizer.lr == 0.001 and point.params.model.n_embd == 64
    assert point.params.training.max_steps == 20  # the base's keys stay
    assert sweep.folder(tmp_path / "out") == tmp_path / "out" / "sweeps" / "lr_width"


def test_names_do_not_change_when_values_and_points_are_added(tmp_path: Path, corpus: Path) -> None:
    before = [p.name for p in expand(sweep_file(tmp_path, corpus, grid=GRID)).points]
    grown = {"optimizer.lr": [0.001, 0.003, 0.01], "model.n_embd": [32, 64]}
    after = expand(sweep_file(tmp_path, corpus, grid=grown, points=[{"optimizer.lr": 0.1, "training.max_steps": 5}]))
    names = [p.name for p in after.points]
    assert set(before) < set(names)
    assert len(names) == 7 and names[-1] == "lr=0.1,max_steps=5"


def test_explicit_points_seeds_and_groups(tmp_path: Path, corpus: Path) -> None:
    path = sweep_file(
        tmp_path,
        corpus,
        grid={"optimizer.lr": [0.001], "general.seed": [1, 2]},
        points=[{"name": "long", "training.max_steps": 40}, {"optimizer.module": "adamw"}],
    )
    sweep = expand(path)
    assert [p.name for p in sweep.points] == ["lr=0.001,seed=1", "lr=0.001,seed=2", "long", "optimizer=adamw"]
    assert [p.group for p in sweep.points] == ["lr=0.001", "lr=0.001", "long", "optimizer=adamw"]
    assert sweep.points[2].params.training.max_steps == 40


def test_clashing_short_labels_use_the_whole_key() -> None:
    assert point_name({"generate.seed": 1, "general.seed": 2}) == "generate.seed=1,general.seed=2"
    assert point_name({"optimizer.lr": 1e-5, "data.source": "/a b/c.txt"}) == "lr=1e-05,source=_a_b_c.txt"
    assert point_name({}) == "base"


def test_a_bad_value_names_the_point_and_the_key(tmp_path: Path, corpus: Path) -> None:
    path = sweep_file(tmp_path, corpus, grid={"optimizer.lr": [0.001, -1.0], "model.n_embdd": [32]})
    with pytest.raises(SweepError) as caught:
        expand(path)
    problems = caught.value.problems
    # every point has the unknown key: listed once; only one point has the bad lr
    assert f"{path}: every point: model.n_embdd: unknown key; did you mean 'n_embd'?" in problems
    assert any(
        line.startswith(f"{path}: point lr=-1.0,n_embdd=32: optimizer.lr: ") and "greater than 0" in line
        for line in problems
    ), problems
    assert len(problems) == 2, problems


def test_a_point_that_breaks_a_cross_key_rule_is_named(tmp_path: Path, corpus: Path) -> None:
    path = sweep_file(tmp_path, corpus, grid={"training.device_batch_size": [4, 3]})
    with pytest.raises(SweepError) as caught:
        expand(path)
    assert caught.value.problems == [
        f"{path}: point device_batch_size=3: training.global_batch_size: must be a multiple of "
        "training.device_batch_size (3), got 8"
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"grid": {"optimizer.lr": []}}, "grid.optimizer.lr: no values"),
        ({}, "no points"),
        ({"grid": {"optimizer.lr": [0.1]}, "points": [{"optimizer.lr": 0.1}]}, "points[0]: the same values as grid"),
        ({"grid": {"optimizer.lr": [0.1]}, "points": [{"name": "lr=0.1", "optimizer.lr": 0.2}]}, "is taken by"),
        ({"points": [{"name": "../up", "optimizer.lr": 0.2}]}, "points[0].name: '../up' is not a valid point name"),
        ({"grid": {"optimizer.lr": [0.1]}, "seeds": 3}, "seeds: unknown key"),
    ],
)
def test_sweep_file_problems(tmp_path: Path, corpus: Path, spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(SweepError) as caught:
        expand(sweep_file(tmp_path, corpus, **spec))
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_a_missing_base_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: nowhere.yaml\ngrid: {optimizer.lr: [0.1]}\n")
    with pytest.raises(SweepError) as caught:
        expand(path)
    assert caught.value.problems == [f"{path}: base: {tmp_path / 'nowhere.yaml'}: file not found"]


def test_points_sharing_a_token_folder_must_agree_on_data(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(SweepError, match="tokenize into DATA_ROOT/tiny/char with different data keys"):
        expand(sweep_file(tmp_path, corpus, grid={"data.val_fraction": [0.1, 0.2]}))
    sweep = expand(sweep_file(tmp_path, corpus, grid={"data.dataset": ["a", "b"], "optimizer.lr": [0.1, 0.2]}))
    assert sorted({p.data_dir for p in sweep.points}) == ["a/char", "b/char"]


def test_params_files_are_complete_and_rewritten_only_when_changed(tmp_path: Path, corpus: Path) -> None:
    path = sweep_file(tmp_path, corpus, grid=GRID)
    sweep = expand(path)
    out, tokenize = tmp_path / "out", tmp_path / "tok"
    write_params_files(sweep, out, tokenize)
    written = out / "lr=0.003,n_embd=64" / "params.yaml"
    assert load(written).to_dict() == sweep.points[3].params.to_dict()
    assert load(tokenize / "tiny" / "char" / "params.yaml").data == sweep.points[0].params.data
    stamp = written.stat().st_mtime_ns
    write_params_files(expand(path), out, tokenize)
    assert written.stat().st_mtime_ns == stamp


def test_dvc_flags_turn_params_yaml_into_the_point(tmp_path: Path, corpus: Path) -> None:
    path = sweep_file(tmp_path, corpus, grid=GRID, points=[{"generate.prompt": "It's"}])
    params_yaml = write_params(tmp_path / "params.yaml", tiny_params(corpus))
    sweep = expand(path)
    # params.yaml has lr 0.003 and n_embd 32: only what differs is set
    assert sweep_dvc.set_flags(sweep.points[0], params_yaml) == ["optimizer.lr=0.001"]
    assert sweep_dvc.set_flags(sweep.points[1], params_yaml) == ["model.n_embd=64", "optimizer.lr=0.001"]
    assert sweep_dvc.set_flags(sweep.points[3], params_yaml) == ["model.n_embd=64"]
    assert sweep_dvc.set_flags(sweep.points[4], params_yaml) == ["generate.prompt='It\\'s'"]


def test_dvc_flags_add_and_remove_the_keys_of_another_component(tmp_path: Path, corpus: Path) -> None:
    """Only explicit points, no grid: switching an explicit params.yaml from AdamW to Muon."""
    path = sweep_file(tmp_path, corpus, points=[{"optimizer.module": "muon", "optimizer.lr": 0.02}])
    params_yaml = write_params(tmp_path / "params.yaml", load(tmp_path / "base.yaml").to_dict())
    (point,) = expand(path).points
    assert point.name == "optimizer=muon,lr=0.02"
    flags = sweep_dvc.set_flags(point, params_yaml)
    assert flags[:2] == ["optimizer.module='muon'", "optimizer.lr=0.02"], flags
    assert "++optimizer.momentum=0.95" in flags and "~optimizer.beta1" in flags, flags


def test_hundred_point_grid_expands_to_distinct_valid_points(tmp_path: Path, corpus: Path) -> None:
    grid = {"optimizer.lr": [0.001 * (i + 1) for i in range(10)], "model.n_embd": [16 * (i + 1) for i in range(10)]}
    path = sweep_file(tmp_path, corpus, grid=grid)
    started = time.perf_counter()
    sweep = expand(path)
    seconds = time.perf_counter() - started
    print(f"100-point grid expanded and validated in {seconds * 1000:.0f} ms")
    assert len(sweep.points) == 100 and len({p.name for p in sweep.points}) == 100


def test_a_grid_beyond_max_points_is_refused_at_once_and_the_limit_is_the_users(tmp_path: Path, corpus: Path) -> None:
    """Issue 30, case 12: a 1000 x 1000 grid made the point listing run for minutes with no message."""
    huge = sweep_file(
        tmp_path, corpus, grid={"optimizer.lr": [i * 1e-5 for i in range(1, 1001)], "general.seed": list(range(1000))}
    )
    with pytest.raises(SweepError) as refused:  # counted before any point is made
        expand(huge)
    assert refused.value.problems == [
        f"{huge}: 1,000,000 points (a grid of 1000 x 1000 and 0 listed) is more than max_points (1,000); set "
        "max_points in the sweep file to run that many"
    ]
    small = sweep_file(
        tmp_path, corpus, name="small", grid={"general.seed": [1, 2, 3]}, points=[{"general.seed": 9}], max_points=3
    )
    with pytest.raises(SweepError, match="4 points .* more than max_points \\(3\\)"):
        expand(small)
    assert (
        len(expand(sweep_file(tmp_path, corpus, name="small", grid={"general.seed": [1, 2, 3]}, max_points=3)).points)
        == 3
    )
