"""Successive halving: the search section, the rungs' params, ranking and promotion, the steps it trains."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_params, write_params

from pipeline.sweep import halving
from pipeline.sweep.halving import Halving, SearchSpec
from pipeline.sweep.spec import SweepError, expand, write_params_files

HALVING = {"method": "halving", "rungs": [5, 10, 20], "keep": "1/2"}
GRID = {"optimizer.lr": [0.001, 0.002, 0.003, 0.004]}


def sweep_file(folder: Path, corpus: Path, search: dict[str, Any], **training: Any) -> Path:
    write_params(folder / "base.yaml", tiny_params(corpus, training={"max_steps": 20, **training}))
    path = folder / "halving.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": GRID, "search": search}))
    return path


def test_rungs_entrants_and_train_steps() -> None:
    search = Halving((50, 150, 450), Fraction(1, 3), "val_loss")
    assert search.entrants_per_rung(9) == [9, 3, 1]
    assert search.train_steps(9) == 9 * 50 + 3 * 100 + 1 * 300
    assert search.entrants_per_rung(2) == [2, 1, 1]  # at least one point goes on
    assert halving.describe(search, 9) == (
        "9 to step 50 -> 3 to step 150 -> 1 to step 450; 1,050 train steps, 0.26x the 4,050 of a full grid"
    )


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"keep": 0.5}, Fraction(1, 2)),
        ({"keep": "1/3"}, Fraction(1, 3)),
        ({"keep": 1}, "keep Value error, must be between 0 and 1 (the share promoted), got 1"),
        ({"keep": "a third"}, "keep Value error, a fraction such as 1/3 or 0.5, got 'a third'"),
        ({"rungs": [10, 10]}, "rungs Value error, step budgets must be positive and ascending, got [10, 10]"),
    ],
)
def test_search_section_values(search: dict[str, Any], expected: Any) -> None:
    if isinstance(expected, Fraction):
        assert SearchSpec.model_validate({"method": "halving", **search}).keep == expected
    else:
        with pytest.raises(ValueError) as raised:
            SearchSpec.model_validate({"method": "halving", **search})
        assert expected in " ".join(str(raised.value).split())


def test_a_point_must_train_on_a_schedule_over_the_last_rung(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(SweepError) as raised:
        expand(sweep_file(tmp_path, corpus, {**HALVING, "rungs": [5, 10]}))
    assert raised.value.problems == [
        f"{tmp_path / 'halving.yaml'}: every point: training.max_steps: is 20 but the last rung is 10: a halving "
        "point trains on a schedule over its final budget, so that a rung is the straight run stopped early; set "
        "training.max_steps: 10 (or end the rungs at 20)"
    ]
    with pytest.raises(SweepError, match="training.stop_at / training.resume: the search sets them"):
        expand(sweep_file(tmp_path, corpus, HALVING, stop_at=10))
    with pytest.raises(SweepError, match=r"search.rungs: give two or more step budgets, got \[20\]"):
        expand(sweep_file(tmp_path, corpus, {**HALVING, "rungs": [20]}))
    with pytest.raises(SweepError, match=r"halving.yaml: search.keep: .*between 0 and 1"):
        expand(sweep_file(tmp_path, corpus, {**HALVING, "keep": 2}))


def test_each_rung_stops_at_its_budget_and_continues_from_the_one_before(tmp_path: Path, corpus: Path) -> None:
    sweep = expand(sweep_file(tmp_path, corpus, HALVING))
    out = tmp_path / "out"
    write_params_files(sweep, out, tmp_path / "tokenize")
    point = out / "lr=0.001"

    def training(folder: Path) -> dict[str, Any]:
        return yaml.safe_load((folder / "params.yaml").read_text())["training"]

    assert training(point / "rungs" / "5")["stop_at"] == 5 and training(point / "rungs" / "5")["resume"] == "auto"
    assert training(point / "rungs" / "10") | {"max_steps": 20} == training(point / "rungs" / "10")
    assert training(point / "rungs" / "10")["resume"] == str(point / "rungs" / "5" / "model" / "last.pt")
    final = training(point)
    assert final["stop_at"] is None and final["resume"] == str(point / "rungs" / "10" / "model" / "last.pt")
    assert final["max_steps"] == 20


def write_rung(folder: Path, summary: dict[str, Any] | None, exit_code: int = 0) -> dict[str, Any]:
    folder.mkdir(parents=True)
    if summary is not None:
        (folder / "train_summary.json").write_text(json.dumps(summary))
    return halving.write_result(folder, exit_code=exit_code)


def test_a_failed_or_diverged_rung_ranks_last_and_ties_go_by_name(tmp_path: Path) -> None:
    search = Halving((5, 10), Fraction(1, 2), "val_loss")
    results = {
        "b": write_rung(tmp_path / "b" / "rungs" / "5", {"step": 5, "val_loss": 2.0}),
        "a": write_rung(tmp_path / "a" / "rungs" / "5", {"step": 5, "val_loss": 2.0}),
        "c": write_rung(tmp_path / "c" / "rungs" / "5", {"step": 5, "val_loss": float("nan")}),
        "d": write_rung(tmp_path / "d" / "rungs" / "5", {"step": 3, "val_loss": 1.0}, exit_code=1),
        "e": write_rung(tmp_path / "e" / "rungs" / "5", None),
        "f": write_rung(tmp_path / "f" / "rungs" / "5", {"step": 5, "val_loss": 1.5}),
    }
    assert results["d"] == {"status": "failed", "step": None, "val_loss": None}  # its summary is an earlier run's
    assert results["e"] == {"status": "failed", "step": None, "val_loss": None}
    record = halving.promote(tmp_path, list(results), search, 5)
    assert [row["point"] for row in record["ranking"]] == ["f", "a", "b", "c", "d", "e"]
    assert record["promoted"] == ["f", "a", "b"]
    assert halving.promoted(halving.promotion_path(tmp_path, 5)) == ["f", "a", "b"]
    only_failures = {name: results[name] for name in ("c", "d", "e")}
    assert halving.promotion(only_failures, search, 5)["promoted"] == []  # nothing that failed goes on
