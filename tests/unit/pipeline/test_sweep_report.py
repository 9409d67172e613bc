"""A sweep's report: summary.csv and report.html from the points' folders, and the page in a real headless Chromium.

The points' folders are written here as the stages write them (train_summary.json, metrics.json, plots/*.csv,
run_info.json), so the report is tested without training: five points, two lr values times two seeds and one that
failed; and for the conclusions, five model sizes of three seeds each, whose losses follow known power laws.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params, write_params

from pipeline.sweep.report import (
    PALETTE,
    curve_fit,
    failed_marker,
    log_ticks,
    nice_ticks,
    read_result,
    report_html,
    summary_csv,
    write_report,
)
from pipeline.sweep.spec import Sweep, expand

WINDOW = (1280, 1500)
CURVE_ALPHA = 0.5  # the exponent of every fake point's loss curve in steps
SIZE_ALPHA, SIZE_E, SIZE_A = 0.3, 1.5, 40.0  # the fake sizes' final val loss: SIZE_E + SIZE_A * N^-SIZE_ALPHA
SEED_SHIFT = {1: 0.02, 2: -0.01, 3: 0.0}  # what a seed does to every setting alike
CHROMIUM_TIMEOUT_S = 120


def fake_point(folder: Path, final_loss: float, steps: int = 40, parameters: int | None = None) -> None:
    """The files train and evaluate leave in a point's folder, with a loss that falls to ``final_loss`` as a power
    law of the step, exponent ``CURVE_ALPHA`` (the val curve a little off it, alternately up and down)."""
    (folder / "plots").mkdir(parents=True)
    (folder / "logs").mkdir()
    scale = 2.0 / (1 - steps**-CURVE_ALPHA)  # the loss falls by 2 from step 1 to the last
    loss = lambda step: final_loss + scale * (step**-CURVE_ALPHA - steps**-CURVE_ALPHA)  # noqa: E731
    train = ["step,tokens,train_loss,lr"] + [f"{s},{s * 128},{loss(s) + 0.1},0.001" for s in range(1, steps + 1)]
    wiggle = lambda step: 0.002 * (-1) ** (step // 5) if step < steps else 0.0  # noqa: E731
    val = ["step,tokens,val_loss,val_ppl"] + [
        f"{s},{s * 128},{loss(s) + wiggle(s)},1.0" for s in range(5, steps + 1, 5)
    ]
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
    if parameters is not None:
        size = {"parameters": parameters, "tokens_per_step": 128, "max_tokens": 128 * steps}
        (folder / "run_info.json").write_text(json.dumps({"size": size}))


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


def size_parameters(n_embd: int) -> int:
    return 24 * n_embd**2


@pytest.fixture
def sized(tmp_path: Path, corpus: Path) -> tuple[Sweep, Path]:
    """A sweep of five model sizes times three seeds, whose val loss falls as a known power law of the parameter
    count, and ``worse``: the largest size at a worse lr, one seed."""
    write_params(tmp_path / "base.yaml", tiny_params(corpus))
    path = tmp_path / "sizes.yaml"
    spec = {
        "base": "base.yaml",
        "grid": {"model.n_embd": [16, 32, 48, 64, 96], "general.seed": [1, 2, 3]},
        "points": [{"name": "worse", "model.n_embd": 96, "optimizer.lr": 0.1}],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = expand(path)
    folder = sweep.folder(tmp_path / "out")
    for point in sweep.points:
        n_embd, seed = point.values["model.n_embd"], point.values.get("general.seed", 1)
        parameters = size_parameters(n_embd)
        loss = SIZE_E + SIZE_A * parameters**-SIZE_ALPHA + SEED_SHIFT[seed] + 0.001 * ((n_embd + seed) % 3 - 1)
        fake_point(folder / point.name, loss + (0.8 if point.name == "worse" else 0.0), parameters=parameters)
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
        "status", "val_loss", "best_val_loss", "tokens_per_s", "wall_s", "steps", "parameters", "environment",
        "best",
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


def test_log_ticks_are_round_values_on_a_log_axis() -> None:
    log10 = lambda values: [math.log10(v) for v in values]  # noqa: E731
    assert log_ticks(math.log10(6144), math.log10(221184)) == pytest.approx(log10([1e4, 2e4, 5e4, 1e5, 2e5]))
    assert log_ticks(math.log10(1.5e6), math.log10(4.5e6)) == pytest.approx(log10([2e6, 3e6, 4e6]))
    assert log_ticks(math.log10(2.1e5), math.log10(2.6e5)) == pytest.approx(log10([2.2e5, 2.4e5, 2.6e5]))


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
    # The conclusions: 2 seeds cannot tell lr=0.003 from lr=0.001 (paired differences 0.4 and 0.1); each val curve
    # fitted and extended (dashed) but the failed point's; no model sizes to fit over.
    assert '<p id="paired" class="within-noise"><b>lr=0.003</b> has the lowest mean val loss, ahead of ' in page
    assert "<b>lr=0.001</b>, but not beyond seed noise: the runner-up's val loss minus the best's is +0.25 " in page
    assert page.count('class="predicted"') == 4 and page.count('<path class="prediction"') == 4
    assert '<td class="no-fit">no fit: no val evaluation after warmup yet</td>' in page  # broken
    assert "No scaling fit: no finished point has its parameter count yet." in page


def test_each_val_curve_fit_recovers_its_exponent(swept: tuple[Sweep, Path]) -> None:
    sweep, folder = swept
    for point in sweep.points[:4]:
        fit = curve_fit(read_result(point, folder / point.name))
        low, high = fit.alpha_interval()
        assert low <= CURVE_ALPHA <= high and high - low < 0.2, (point.name, low, high)
        assert fit.predict(160) == pytest.approx(fit.law(160)) and fit.law.e < fit.predict(160) < fit.predict(40)


def test_conclusions_over_model_sizes(sized: tuple[Sweep, Path]) -> None:
    sweep, folder = sized
    html_path, csv_path = write_report(sweep, folder)
    page = html_path.read_text()
    # The largest size against the next, paired over 3 seeds: 0.275 apart, seeds move both alike.
    assert '<p id="paired" class="beats"><b>n_embd=96</b> beats <b>n_embd=64</b> beyond seed noise: ' in page
    # The scaling fit over the best setting of each size recovers the exponent within its interval.
    scaling = re.search(r'<p id="scaling">.* over the best setting of each of 5 model sizes \(15 points.*?</p>', page)
    assert scaling, page
    alpha, low, high = map(float, re.search(r"alpha = ([\d.]+) \[([\d.]+), ([\d.]+)\]", scaling[0]).groups())
    assert low <= SIZE_ALPHA <= high and high - low < 0.2 and alpha == pytest.approx(SIZE_ALPHA, abs=0.05)
    table = page.split('<table id="scaling-table">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td>") == 5 and "<td>n_embd=96</td><td>221,184</td><td>3</td>" in table
    chart = page.split('<div id="scaling-chart">', 1)[1].split("</div>", 1)[0]
    assert chart.count('class="frontier"') == 15 and chart.count('class="scaling-point" data-point="worse"') == 1
    assert chart.count('class="scaling-fit"') == 1 and chart.count('class="scaling-band"') == 1
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [int(r["parameters"]) for r in rows[:3]] == [size_parameters(16)] * 3


def test_one_seed_and_one_size_say_why_there_is_no_conclusion(tmp_path: Path, corpus: Path) -> None:
    write_params(tmp_path / "base.yaml", tiny_params(corpus, scheduler={"warmup_steps": 12}))
    path = tmp_path / "lrs.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"optimizer.lr": [0.001, 0.003, 0.3]}}))
    sweep = expand(path)
    folder = sweep.folder(tmp_path / "out")
    for point, loss in zip(sweep.points, (2.3, 2.2, 2.0)):
        fake_point(folder / point.name, loss, parameters=1000 if loss > 2.0 else 9000)
    (folder / "lr=0.3" / "metrics.json").write_text('{"val_loss": NaN}')  # diverged: no part in the conclusions
    page = write_report(sweep, folder)[0].read_text()
    assert '<p id="paired" class="no-conclusion">No paired comparison: general.seed is not swept' in page
    assert "No scaling fit: every finished point has the same model size (1,000 parameters)." in page
    assert page.count('class="predicted"') == 3
    assert page.count('<td data-value="6">6</td>') == 3  # the curves are fitted after warmup: steps 15 to 40


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


def test_conclusions_in_headless_chromium(sized: tuple[Sweep, Path], tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    binary = chromium()
    sweep, folder = sized
    html_path, _ = write_report(sweep, folder)
    url = html_path.resolve().as_uri()

    # The DOM after the page's script ran, the table of fits sorted by predicted loss through the URL.
    dom = headless(binary, "--dump-dom", url + "#sort=predicted")
    fits = dom.split('<table id="fits"', 1)[1].split("</table>", 1)[0]
    order = re.findall(r'<tr data-point="([^"]+)"', fits)
    predicted = {p.name: curve_fit(read_result(p, folder / p.name)).predict(160) for p in sweep.points}
    assert order == sorted(predicted, key=predicted.get), order
    assert 'class="beats"' in dom and dom.count('<path class="prediction"') == 16
    assert dom.count('<circle class="frontier"') == 15

    # The two new charts alone, as the page has them, drawn: the fits in each size's colour, the scaling fit in black.
    page = html_path.read_text()
    charts = [
        page.split(f'<div id="{name}">', 1)[1].split("</div>", 1)[0] for name in ("prediction-chart", "scaling-chart")
    ]
    alone = tmp_path / "charts.html"
    alone.write_text(
        f'<!DOCTYPE html><html><body style="margin:0">{"".join(f"<div>{c}</div>" for c in charts)}</body></html>'
    )
    shot = tmp_path / "charts.png"
    headless(binary, f"--screenshot={shot}", "--window-size=600,680", alone.resolve().as_uri())
    picture = image.open(shot).convert("RGB")
    fits_half, scaling_half = (
        {colour: count for count, colour in picture.crop(box).getcolors(maxcolors=1 << 20)}
        for box in ((0, 0, 600, 330), (0, 330, 600, 680))
    )
    for hex_colour in PALETTE[:6]:  # five sizes and worse
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert fits_half.get(rgb, 0) > 100, (hex_colour, fits_half.get(rgb))
    black, grey = (0, 0, 0), (153, 153, 153)  # the scaling fit and the best of each size; worse
    assert scaling_half.get(black, 0) > fits_half.get(black, 0) + 200 and scaling_half.get(grey, 0) > 20
    print(f"charts screenshot: black {scaling_half.get(black)} against {fits_half.get(black, 0)} px")


def test_halving_points_stop_at_their_last_rung_and_the_winners_curves_start_with_its_rungs(
    tmp_path: Path, corpus: Path
) -> None:
    write_params(tmp_path / "base.yaml", tiny_params(corpus, training={"max_steps": 40}))
    path = tmp_path / "halving.yaml"
    search = {"method": "halving", "rungs": [10, 20, 40], "keep": 0.5}
    path.write_text(
        yaml.safe_dump({"base": "base.yaml", "grid": {"optimizer.lr": [0.001, 0.002, 0.003]}, "search": search})
    )
    sweep = expand(path)
    folder = sweep.folder(tmp_path / "out")
    rungs = {"lr=0.001": [10], "lr=0.002": [10, 20], "lr=0.003": [10, 20]}
    for name, reached in rungs.items():
        for steps in reached:
            run = folder / name / "rungs" / str(steps)
            fake_point(run, final_loss=3.0 - steps / 100, steps=steps)
            (run / "rung.json").write_text(json.dumps({"status": "done", "step": steps, "val_loss": 3.0 - steps / 100}))
    fake_point(folder / "lr=0.003", final_loss=2.0, steps=40)
    write_report(sweep, folder)
    with open(folder / "summary.csv", newline="") as f:
        rows = {row["point"]: row for row in csv.DictReader(f)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "lr=0.001": "stopped at step 10",
        "lr=0.002": "stopped at step 20",
        "lr=0.003": "done",
    }
    assert rows["lr=0.002"]["val_loss"] == "2.8" and rows["lr=0.003"]["best"] == "1"
    winner = read_result(
        sweep.points[2], folder / "lr=0.003", [folder / "lr=0.003" / "rungs" / s for s in ("10", "20")]
    )
    assert [row["step"] for row in winner.curves["train"]][:12] == [*range(1, 11), 1, 2]  # rung 10's, then rung 20's
    page = (folder / "report.html").read_text()
    assert "Successive halving (3 to step 10 -&gt; 1 to step 20 -&gt; 1 to step 40" in page
    assert "1 done, 2 stopped" in page
