"""A sweep's report: summary.csv and report.html from the points' folders, and the page in a real headless Chromium.

The points' folders are written here as the stages write them (train_summary.json, metrics.json, plots/*.csv),
so the report is tested without training: five points, two lr values times two seeds and one that failed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params, write_params

from pipeline.sweep.report import (
    PALETTE,
    failed_marker,
    nice_ticks,
    read_result,
    report_html,
    summary_csv,
    write_report,
)
from pipeline.sweep.spec import Sweep, expand

WINDOW = (1280, 1500)
CHROMIUM_TIMEOUT_S = 120


def fake_point(folder: Path, final_loss: float, steps: int = 40) -> None:
    """The files train and evaluate leave in a point's folder, with a loss that falls to ``final_loss``."""
    (folder / "plots").mkdir(parents=True)
    (folder / "logs").mkdir()
    loss = lambda step: final_loss + 2.0 * (1 - step / steps)  # noqa: E731
    train = ["step,tokens,train_loss,lr"] + [f"{s},{s * 128},{loss(s) + 0.1},0.001" for s in range(1, steps + 1)]
    val = ["step,tokens,val_loss,val_ppl"] + [f"{s},{s * 128},{loss(s)},1.0" for s in range(10, steps + 1, 10)]
    (folder / "plots" / "train.csv").write_text("\n".join(train) + "\n")
    (folder / "plots" / "val.csv").write_text("\n".join(val) + "\n")
    summary = {
        "step": steps,
        "val_loss": final_loss,
        "best_val_loss": final_loss,
        "tokens_per_s": 2000.0,
        "seconds": 3.5,
    }
    (folder / "train_summary.json").write_text(json.dumps(summary))
    (folder / "metrics.json").write_text(json.dumps({"val_loss": final_loss, "val_ppl": 9.9}))


@pytest.fixture
def swept(tmp_path: Path, corpus: Path) -> tuple[Sweep, Path]:
    """A sweep of five points and its folder: lr=0.001 and lr=0.003 with seeds 1 and 2 done, ``broken`` failed."""
    write_params(tmp_path / "base.yaml", tiny_params(corpus))
    path = tmp_path / "seeds.yaml"
    spec = {
        "base": "base.yaml",
        "grid": {"optimizer.lr": [0.001, 0.003], "general.seed": [1, 2]},
        "points": [{"name": "broken", "training.resume": "/missing.pt"}],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = expand(path)
    folder = sweep.folder(tmp_path / "out")
    for name, loss in {
        "lr=0.001,seed=1": 2.6,
        "lr=0.001,seed=2": 2.4,
        "lr=0.003,seed=1": 2.2,
        "lr=0.003,seed=2": 2.3,
    }.items():
        fake_point(folder / name, loss)
    (folder / "broken" / "logs").mkdir(parents=True)
    failed_marker(folder / "broken", "train").touch()
    return sweep, folder


def test_status_of_each_kind_of_folder(swept: tuple[Sweep, Path], tmp_path: Path) -> None:
    sweep, folder = swept
    results = {p.name: read_result(p, folder / p.name).status for p in sweep.points}
    assert results == {
        "lr=0.001,seed=1": "done",
        "lr=0.001,seed=2": "done",
        "lr=0.003,seed=1": "done",
        "lr=0.003,seed=2": "done",
        "broken": "failed (train)",
    }
    assert read_result(sweep.points[0], tmp_path / "nowhere").status == "not run"


def test_summary_csv_has_a_row_per_point_and_marks_the_best(swept: tuple[Sweep, Path]) -> None:
    sweep, folder = swept
    results = [read_result(p, folder / p.name) for p in sweep.points]
    rows = list(csv.DictReader(io.StringIO(summary_csv(sweep, results))))
    assert [r["point"] for r in rows] == [p.name for p in sweep.points]
    assert list(rows[0]) == [
        "point", "group", "optimizer.lr", "general.seed", "training.resume",
        "status", "val_loss", "best_val_loss", "tokens_per_s", "wall_s", "steps", "environment", "best",
    ]  # fmt: skip
    assert [r["point"] for r in rows if r["best"] == "1"] == ["lr=0.003,seed=1"]
    assert rows[2]["val_loss"] == "2.2" and rows[2]["optimizer.lr"] == "0.003" and rows[2]["group"] == "lr=0.003"
    assert rows[4]["status"] == "failed (train)" and rows[4]["val_loss"] == ""


def test_points_of_two_environments_are_told_apart(swept: tuple[Sweep, Path]) -> None:
    sweep, folder = swept
    fingerprint = {"torch": "2.13.0+cpu", "numpy": "2.1.0", "threads": 1}
    for name in ("lr=0.001,seed=1", "lr=0.001,seed=2", "lr=0.003,seed=1"):
        (folder / name / "run_info.json").write_text(json.dumps({"environment": fingerprint}))
    results = [read_result(p, folder / p.name) for p in sweep.points]
    assert "environments (" not in report_html(sweep, results)  # one environment (a point without run_info.json: none)
    other = {**fingerprint, "numpy": "1.26.4"}
    (folder / "lr=0.003,seed=2" / "run_info.json").write_text(json.dumps({"environment": other}))
    results = [read_result(p, folder / p.name) for p in sweep.points]
    digests = [r.metrics["environment"] for r in results]
    assert len(set(digests[:3])) == 1 and digests[3] != digests[0] and digests[4] is None
    assert all(len(d) == 12 for d in digests[:4])
    assert f"ran in 2 environments ({', '.join(sorted({digests[0], digests[3]}))}" in report_html(sweep, results)
    rows = list(csv.DictReader(io.StringIO(summary_csv(sweep, results))))
    assert [r["environment"] for r in rows] == [*digests[:4], ""]


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.0, 10.0) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert nice_ticks(2.13, 2.91) == pytest.approx([2.2, 2.4, 2.6, 2.8])
    assert nice_ticks(3.0, 3.0) == [3.0, 3.2, 3.4, 3.6, 3.8, 4.0]


def test_report_html_holds_the_table_the_groups_and_the_curves(swept: tuple[Sweep, Path]) -> None:
    sweep, folder = swept
    html_path, csv_path = write_report(sweep, folder)
    page = html_path.read_text()
    assert csv_path.is_file()
    assert page.count("<tr class=") == 5
    assert page.count('class="curve"') == 4 * 4  # four charts, a line per finished point
    assert page.count('class="band"') == 4 * 2  # two seed groups per chart
    assert "<h2>Over seeds</h2>" in page and "2.5 ± 0.14 (2.4 to 2.6)" in page  # lr=0.001: mean and sd over seeds
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch: it renders offline


def chromium() -> str:
    """The Chromium binary, or skip."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no chromium on PATH: install Debian's package (bash .ci/chromium-up; CI runs it)")
    return binary


def headless(binary: str, *args: str) -> str:
    """Run headless Chromium (as root it needs --no-sandbox); return its stdout."""
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_report_in_headless_chromium(swept: tuple[Sweep, Path], tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    binary = chromium()
    sweep, folder = swept
    html_path, _ = write_report(sweep, folder)
    url = html_path.resolve().as_uri()

    # The DOM after the page's script ran, sorted by val loss through the URL: one row per point, best first.
    dom = headless(binary, "--dump-dom", url + "#sort=val_loss")
    body = dom.split('<table id="points"', 1)[1].split("</table>", 1)[0]
    order = re.findall(r'<tr class="[^"]*" data-point="([^"]+)"', body)
    assert order == ["lr=0.003,seed=1", "lr=0.003,seed=2", "lr=0.001,seed=2", "lr=0.001,seed=1", "broken"], order
    assert dom.count('class="curve"') == 16

    # The screenshot: the lines were drawn in both groups' colours.
    shot = tmp_path / "report.png"
    headless(binary, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
    picture = image.open(shot).convert("RGB")
    assert picture.size == WINDOW
    colours = {colour for _, colour in picture.getcolors(maxcolors=1 << 20)}
    for hex_colour in PALETTE[:2]:
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        drawn = sum(count for count, colour in picture.getcolors(maxcolors=1 << 20) if colour == rgb)
        assert rgb in colours and drawn > 200, (hex_colour, drawn)
    print(f"report screenshot {picture.size[0]}x{picture.size[1]}: {len(colours)} colours")
