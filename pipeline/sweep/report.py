"""The page that compares a sweep's points: ``OUT_DIR/sweeps/<name>/report.html`` and ``summary.csv``.

Read from each point's folder: ``train_summary.json`` (best val loss, tokens/s, wall time), ``metrics.json``
(the evaluate stage's val loss), ``run_info.json`` (the environment's fingerprint, shown as a short digest: points
of two environments agree to rounding, not bitwise, and the page says so) and the loss curves
``plots/train.csv`` / ``plots/val.csv``. The page is one
static file: a sortable table (a few lines of inline JavaScript), the points grouped over seeds (mean and
spread), the conclusions (``pipeline.sweep.fits``: where each val curve is heading, whether the best setting beats
the runner-up beyond seed noise, a scaling fit over model sizes; ``run_info.json``'s ``size`` gives a point's
parameter count), and the loss curves of every point drawn as inline SVG, against steps and against tokens. It
needs no server and no network.

A point's status: ``failed (<stage>)`` when a stage left its marker ``logs/<stage>.failed`` (the sweep's
Snakemake rules write it when the stage exits non-zero), ``done`` when train and evaluate wrote their
metrics, ``incomplete`` when a stage started and has not finished, ``not run`` otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanugpt.files.atomic import write_text
from pipeline.sweep.fits import RESAMPLES, NoConclusion, PairedComparison, PowerLawFit, compare_best_two, fit_power_law
from pipeline.sweep.halving import describe as describe_halving
from pipeline.sweep.spec import SEED_KEY, earlier_runs

if TYPE_CHECKING:
    from pipeline.sweep.spec import Point, Sweep

FAILED_SUFFIX = ".failed"
# Ten colours that stay apart on screen; a group's seeds share one.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
METRICS = (  # (column, heading) of summary.csv and the table, after the swept keys
    ("status", "status"),
    ("val_loss", "val loss"),
    ("best_val_loss", "best val loss"),
    ("tokens_per_s", "tokens/s"),
    ("wall_s", "wall time (s)"),
    ("steps", "steps"),
    ("parameters", "parameters"),
    ("environment", "environment"),
)
CHARTS = (  # (title, curve, x column)
    ("val loss by step", "val", "step"),
    ("val loss by tokens", "val", "tokens"),
    ("train loss by step", "train", "step"),
    ("train loss by tokens", "train", "tokens"),
)
WIDTH, HEIGHT, MARGIN = 560, 320, (16, 16, 44, 64)  # margin: top, right, bottom, left


def failed_marker(folder: Path | str, stage: str) -> Path:
    """``<point folder>/logs/<stage>.failed``: written when the point's stage fails, removed when it starts."""
    return Path(folder) / "logs" / f"{stage}{FAILED_SUFFIX}"


@dataclass
class Result:
    """What one point's folder holds."""

    point: Point
    status: str
    metrics: dict[str, float | None]
    curves: dict[str, list[dict[str, float]]]  # "train" / "val" -> rows of step, tokens, loss


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _curve(path: Path, loss: str) -> list[dict[str, float]]:
    """Rows ``{step, tokens, loss}`` of a plots CSV (a partial last line of a running point is skipped)."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    rows.append({"step": float(row["step"]), "tokens": float(row["tokens"]), "loss": float(row[loss])})
                except (KeyError, TypeError, ValueError):
                    pass
    except OSError:
        pass
    return [r for r in rows if math.isfinite(r["loss"])]


def point_status(folder: Path) -> str:
    """``failed (<stages>)``, ``done``, ``incomplete`` or ``not run`` (see the module doc)."""
    failed = sorted(p.name.removesuffix(FAILED_SUFFIX) for p in (folder / "logs").glob(f"*{FAILED_SUFFIX}"))
    if failed:
        return f"failed ({', '.join(failed)})"
    if (folder / "train_summary.json").is_file() and (folder / "metrics.json").is_file():
        return "done"
    return "incomplete" if (folder / "logs").is_dir() else "not run"


def read_result(point: Point, folder: Path, earlier: Sequence[Path] = ()) -> Result:
    """The status, metrics and curves of a point from its folder and the runs it continued from (``earlier``: its
    rungs under halving, or its shared stable phase), whose curves come first. A halving point that no rung promoted
    to its own folder is ``stopped at step N``, with the figures of its last rung."""
    status, source = point_status(folder), folder
    reached = [run for run in earlier if (run / "rung.json").is_file()]
    if status in ("not run", "incomplete") and reached:
        source, rung = reached[-1], _json(reached[-1] / "rung.json")
        status = f"stopped at step {rung['step']}" if rung.get("status") == "done" else f"failed (rung {source.name})"
    summary, evaluated = _json(source / "train_summary.json"), _json(source / "metrics.json")
    info = _json(source / "run_info.json")
    metrics = {
        "val_loss": evaluated.get("val_loss", summary.get("val_loss")),
        "best_val_loss": summary.get("best_val_loss"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "wall_s": summary.get("seconds"),
        "steps": summary.get("step"),
        "parameters": (info.get("size") or {}).get("parameters"),
        "environment": environment_digest(info.get("environment")),
    }
    runs = [*earlier, folder]
    curves = {
        "train": [row for run in runs for row in _curve(run / "plots" / "train.csv", "train_loss")],
        "val": [row for run in runs for row in _curve(run / "plots" / "val.csv", "val_loss")],
    }
    return Result(point, status, metrics, curves)


def environment_digest(fingerprint: dict[str, Any] | None) -> str | None:
    """The first 12 hex digits of the sha256 of an environment fingerprint (``nanugpt.train.environment``), or
    None for a point without one."""
    if not fingerprint:
        return None
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def environment_note(results: Sequence[Result]) -> str:
    """A warning where the finished points ran in more than one environment, else nothing."""
    digests = sorted({r.metrics["environment"] for r in results if r.status == "done" and r.metrics["environment"]})
    if len(digests) < 2:
        return ""
    return (
        f'<p class="warning">The points ran in {len(digests)} environments ({", ".join(digests)}: the environment '
        "column): compare them to rounding, not bitwise. <code>run_info.json</code> of each says what differs.</p>"
    )


def search_note(sweep: Sweep) -> str:
    """What the sweep trained: successive halving's rungs, or the stable phases its points share; else nothing."""
    lines = []
    if sweep.halving is not None:
        lines.append(
            f"Successive halving ({html.escape(describe_halving(sweep.halving, len(sweep.points)))}): a point not "
            "promoted is <i>stopped</i> at its last rung, with that rung's figures; only finished points are compared "
            "below. The promotions are in <code>halving/rung-&lt;steps&gt;.json</code>."
        )
    for stem in sweep.stems:
        lines.append(
            f"{len(stem.members)} points continue one shared stable phase of {stem.steps} steps "
            f"(<code>_stems/{html.escape(stem.name)}</code>): their curves start with it."
        )
    return "".join(f'<p class="search">{line}</p>\n' for line in lines)


def best_result(results: Sequence[Result]) -> Result | None:
    """The finished point of lowest val loss."""
    done = [r for r in results if r.status == "done" and r.metrics["val_loss"] is not None]
    return min(done, key=lambda r: r.metrics["val_loss"]) if done else None  # type: ignore[arg-type, return-value]


def _cell(value: Any) -> str:
    """A table or CSV cell: floats to 4 significant digits, ``-`` for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def summary_csv(sweep: Sweep, results: Sequence[Result]) -> str:
    """One row per point: name, group, swept values, status, metrics, and ``best`` (1 on the best point)."""
    best = best_result(results)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["point", "group", *sweep.keys, *(column for column, _ in METRICS), "best"])
    for r in results:
        metrics = {"status": r.status, **r.metrics}
        writer.writerow(
            [
                r.point.name,
                r.point.group,
                *(_cell(r.point.values.get(key)) for key in sweep.keys),
                *(_cell(metrics[column]) for column, _ in METRICS),
                int(r is best),
            ]
        )
    return out.getvalue()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks of a log10 axis over the exponents ``[low, high]``: 1, 2 and 5 times the powers of ten, every digit
    where fewer than two of those fall in the range, round values of a linear axis where fewer than two digits do;
    as exponents."""
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [k + math.log10(m) for k in range(math.floor(low), math.ceil(high) + 1) for m in mantissas]
        ticks = [tick for tick in ticks if low <= tick <= high]
        if len(ticks) >= 2:
            return ticks
    return [math.log10(value) for value in nice_ticks(10**low, 10**high) if value > 0]


def _tick_label(value: float) -> str:
    return f"{value / 1e6:g}M" if abs(value) >= 1e6 else f"{value / 1e3:g}k" if abs(value) >= 1e4 else f"{value:g}"


def _group_colors(results: Sequence[Result]) -> dict[str, str]:
    groups = list(dict.fromkeys(r.point.group for r in results))
    return {group: PALETTE[i % len(PALETTE)] for i, group in enumerate(groups)}


def _band(members: Sequence[Result], curve: str, x: str) -> list[tuple[float, float, float]]:
    """``(x, min, max)`` of the loss over a group's seeds at every x that all of them logged."""
    by_x = [{row[x]: row["loss"] for row in r.curves[curve]} for r in members]
    common = sorted(set.intersection(*(set(d) for d in by_x))) if by_x else []
    return [(value, min(d[value] for d in by_x), max(d[value] for d in by_x)) for value in common]


@dataclass(frozen=True)
class _Frame:
    """A chart's plot area and the data ranges it shows: ``sx`` and ``sy`` map data to SVG coordinates."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    top: int = MARGIN[0]
    left: int = MARGIN[3]
    plot_w: int = WIDTH - MARGIN[3] - MARGIN[1]
    plot_h: int = HEIGHT - MARGIN[0] - MARGIN[2]

    @classmethod
    def around(cls, series: Sequence[tuple[Result, list[tuple[float, float]]]]) -> _Frame:
        """The frame that holds every point of ``series``, the losses padded by 5% of their range."""
        xs = [px for _, points in series for px, _ in points]
        ys = [py for _, points in series for _, py in points]
        pad = (max(ys) - min(ys)) * 0.05 or 0.5
        return cls(min(xs), max(max(xs), min(xs) + 1), min(ys) - pad, max(ys) + pad)

    def sx(self, value: float) -> float:
        return self.left + (value - self.x_lo) / (self.x_hi - self.x_lo) * self.plot_w

    def sy(self, value: float) -> float:
        return self.top + (self.y_hi - value) / (self.y_hi - self.y_lo) * self.plot_h


def _chart_head(title: str, curve: str, x: str, n_series: int) -> list[str]:
    """The chart's opening ``<svg>``, its title and the plot area's frame."""
    top, right, bottom, left = MARGIN
    plot_w, plot_h = WIDTH - left - right, HEIGHT - top - bottom
    return [
        f'<svg class="chart" data-curve="{curve}" data-x="{x}" data-series="{n_series}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]


def _chart_axes(frame: _Frame, curve: str, x: str, *, log_x: bool = False) -> list[str]:
    """Tick marks and labels of both axes, and the axes' names (``log_x``: the frame's x is log10 of the value)."""
    f, parts = frame, []
    for tick in log_ticks(f.x_lo, f.x_hi) if log_x else nice_ticks(f.x_lo, f.x_hi):
        parts.append(
            f'<line x1="{f.sx(tick):.1f}" y1="{f.top + f.plot_h}" x2="{f.sx(tick):.1f}" y2="{f.top + f.plot_h + 4}" '
            'stroke="#999"/>'
        )
        parts.append(
            f'<text x="{f.sx(tick):.1f}" y="{f.top + f.plot_h + 16}" text-anchor="middle" font-size="11">'
            f"{_tick_label(10**tick if log_x else tick)}</text>"
        )
    for tick in nice_ticks(f.y_lo, f.y_hi):
        parts.append(
            f'<line x1="{f.left}" y1="{f.sy(tick):.1f}" x2="{f.left + f.plot_w}" y2="{f.sy(tick):.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{f.left - 6}" y="{f.sy(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>'
        )
    parts.append(f'<text x="{f.left + f.plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12">{x}</text>')
    parts.append(
        f'<text x="14" y="{f.top + f.plot_h / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {f.top + f.plot_h / 2})">{curve} loss</text>'
    )
    return parts


def _chart_bands(
    frame: _Frame,
    series: Sequence[tuple[Result, list[tuple[float, float]]]],
    curve: str,
    x: str,
    colors: dict[str, str],
) -> list[str]:
    """A band from min to max over the seeds of each group that has more than one."""
    groups: dict[str, list[Result]] = {}
    for r, _ in series:
        groups.setdefault(r.point.group, []).append(r)
    parts = []
    for group, members in groups.items():
        band = _band(members, curve, x) if len(members) > 1 else []
        if len(band) > 1:
            outline = [(frame.sx(v), frame.sy(hi)) for v, _, hi in band]
            outline += [(frame.sx(v), frame.sy(lo)) for v, lo, _ in reversed(band)]
            d = "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in outline) + " Z"
            parts.append(
                f'<path class="band" data-group="{html.escape(group)}" d="{d}" fill="{colors[group]}" '
                'fill-opacity="0.18" stroke="none"/>'
            )
    return parts


def _chart_curves(
    frame: _Frame, series: Sequence[tuple[Result, list[tuple[float, float]]]], colors: dict[str, str]
) -> list[str]:
    """A line per point, in its group's colour."""
    parts = []
    for r, points in series:
        d = "M" + " L".join(f"{frame.sx(px):.1f},{frame.sy(py):.1f}" for px, py in points)
        parts.append(
            f'<path class="curve" data-point="{html.escape(r.point.name)}" d="{d}" fill="none" '
            f'stroke="{colors[r.point.group]}" stroke-width="1.5"><title>{html.escape(r.point.name)}</title></path>'
        )
    return parts


def chart_svg(title: str, results: Sequence[Result], curve: str, x: str, colors: dict[str, str]) -> str:
    """One chart: a line per point (its group's colour), a band from min to max over each group's seeds."""
    series = [(r, [(row[x], row["loss"]) for row in r.curves[curve]]) for r in results if r.curves[curve]]
    parts = _chart_head(title, curve, x, len(series))
    if not series:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#666">no data yet</text>')
        return "\n".join(parts + ["</svg>"])
    frame = _Frame.around(series)
    parts += _chart_axes(frame, curve, x)
    parts += _chart_bands(frame, series, curve, x, colors)
    parts += _chart_curves(frame, series, colors)
    return "\n".join(parts + ["</svg>"])


def _groups_table(results: Sequence[Result]) -> str:
    """Points that differ only in their seed, as mean and spread (standard deviation, min to max)."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.point.group, []).append(r)
    if all(len(members) == 1 for members in groups.values()):
        return ""
    rows = []
    for group, members in groups.items():
        cells = [html.escape(group), str(len(members))]
        for column in ("val_loss", "best_val_loss"):
            values = [r.metrics[column] for r in members if r.status == "done" and r.metrics[column] is not None]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.4g} ± {spread:.2g} ({min(values):.4g} to {max(values):.4g})")
            else:
                cells.append("")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<tr><th>group</th><th>points</th><th>val loss: mean ± sd (min to max)</th><th>best val loss</th></tr>"
    return f'<h2>Over seeds</h2>\n<table id="groups"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


# Conclusions (pipeline.sweep.fits): where each val curve is heading, the best setting against the runner-up over
# seeds, and a scaling fit over model sizes. Each says in one line why it is missing where the data allow none.

PREDICT_FACTOR = 4  # a point's val curve is extrapolated to this many times its last evaluated step
CURVE_SAMPLES = 60  # x values at which a fitted curve is drawn
DASHED = 'stroke-dasharray="5 4"'


def _spaced(low: float, high: float, count: int = CURVE_SAMPLES) -> list[float]:
    """``count`` values from ``low`` to ``high``, evenly apart on a log scale (a power law bends near its start)."""
    return [low * (high / low) ** (i / (count - 1)) for i in range(count)]


def _interval(value: float, low: float, high: float, digits: int = 4) -> str:
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def _path(frame: _Frame, points: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{frame.sx(px):.1f},{frame.sy(py):.1f}" for px, py in points)


def _no_conclusion(element_id: str, text: str) -> str:
    return f'<p id="{element_id}" class="no-conclusion">{html.escape(text)}</p>'


def fitted_rows(result: Result) -> list[dict[str, float]]:
    """The evaluations a point's curve fit runs through: those after the warmup (``scheduler.warmup_steps``), whose
    rising learning rate shapes the curve in a way no power law of the step describes."""
    warmup = getattr(result.point.params.scheduler, "warmup_steps", 0)
    return [row for row in result.curves["val"] if row["step"] > max(warmup, 0)]


def curve_fit(result: Result) -> PowerLawFit:
    """The power law of a point's val curve (after warmup) against steps; ``NoConclusion`` says why there is none."""
    rows = fitted_rows(result)
    if not rows:
        what = "after warmup " if getattr(result.point.params.scheduler, "warmup_steps", 0) else ""
        raise NoConclusion(f"no val evaluation {what}yet")
    return fit_power_law([row["step"] for row in rows], [row["loss"] for row in rows])


def _budget(result: Result) -> float:
    """The step at which a point's loss is predicted: ``PREDICT_FACTOR`` times its last evaluated step."""
    return PREDICT_FACTOR * max(row["step"] for row in result.curves["val"])


def curve_fits(results: Sequence[Result]) -> list[tuple[Result, PowerLawFit | str]]:
    """Each point with its val curve's fit, or the reason it has none."""
    fits: list[tuple[Result, PowerLawFit | str]] = []
    for r in results:
        try:
            fits.append((r, curve_fit(r)))
        except NoConclusion as exc:
            fits.append((r, str(exc)))
    return fits


def _fits_table(fits: Sequence[tuple[Result, PowerLawFit | str]]) -> str:
    """A sortable row per point: the fitted exponent and asymptote, and the predicted loss at its budget."""
    head = "".join(
        f'<th data-key="{key}">{html.escape(heading)}</th>'
        for key, heading in (
            ("fit_point", "point"),
            ("evaluations", "evaluations fitted"),
            ("alpha", "alpha [95%]"),
            ("e", "E [95%]"),
            ("last_val_loss", "last val loss"),
            ("budget", f"N ({PREDICT_FACTOR}x its steps)"),
            ("predicted", "predicted val loss @ N steps [lo, hi]"),
        )
    )
    rows = []
    for r, fit in fits:
        curve, fitted = r.curves["val"], len(fitted_rows(r))
        name = html.escape(r.point.name)
        cells = [f'<td data-value="{name}">{name}</td>', f'<td data-value="{fitted}">{fitted}</td>']
        if isinstance(fit, PowerLawFit):
            budget = _budget(r)
            cells += [
                f'<td data-value="{fit.law.alpha!r}">{_interval(fit.law.alpha, *fit.alpha_interval(), digits=3)}</td>',
                f'<td data-value="{fit.law.e!r}">{_interval(fit.law.e, *fit.e_interval())}</td>',
                f'<td data-value="{curve[-1]["loss"]!r}">{curve[-1]["loss"]:.4g} @ {curve[-1]["step"]:g}</td>',
                f'<td data-value="{budget!r}">{budget:g}</td>',
                f'<td data-value="{fit.predict(budget)!r}" class="predicted">'
                f"{_interval(fit.predict(budget), *fit.predict_interval(budget))}</td>",
            ]
        else:
            last = f"{curve[-1]['loss']:.4g} @ {curve[-1]['step']:g}" if curve else ""
            cells += ["<td></td>", "<td></td>", f"<td>{last}</td>", "<td></td>"]
            cells.append(f'<td class="no-fit">no fit: {html.escape(fit)}</td>')
        rows.append(f'<tr data-point="{name}">{"".join(cells)}</tr>')
    return (
        f'<table id="fits" class="sortable"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def prediction_chart_svg(fits: Sequence[tuple[Result, PowerLawFit | str]], colors: dict[str, str]) -> str:
    """The val points of each fitted point, its fit (solid over the evaluated steps, dashed beyond: a prediction)
    and the 95% interval of the prediction at its budget (a bar). ``fits`` holds at least one fit."""
    fitted = [(r, fit) for r, fit in fits if isinstance(fit, PowerLawFit)]
    title = f"val loss by step: power-law fits, dashed to {PREDICT_FACTOR}x the steps (predicted)"
    parts = _chart_head(title, "val", "step", len(fitted))
    intervals = {r.point.name: fit.predict_interval(_budget(r)) for r, fit in fitted}
    ys = [row["loss"] for r, _ in fitted for row in r.curves["val"]] + [v for lh in intervals.values() for v in lh]
    pad = (max(ys) - min(ys)) * 0.05 or 0.5
    frame = _Frame(0.0, max(_budget(r) for r, _ in fitted), min(ys) - pad, max(ys) + pad)
    parts += _chart_axes(frame, "val", "step")
    for r, fit in fitted:
        colour, name = colors[r.point.group], html.escape(r.point.name)
        steps = [row["step"] for row in fitted_rows(r)]
        budget, (low, high) = _budget(r), intervals[r.point.name]
        for row in r.curves["val"]:
            parts.append(
                f'<circle class="observed" data-point="{name}" cx="{frame.sx(row["step"]):.1f}" '
                f'cy="{frame.sy(row["loss"]):.1f}" r="2.5" fill="{colour}"/>'
            )
        for kind, start, end, dash in (("fit", min(steps), max(steps), ""), ("prediction", max(steps), budget, DASHED)):
            d = _path(frame, [(s, fit.predict(s)) for s in _spaced(start, end)])
            parts.append(
                f'<path class="{kind}" data-point="{name}" d="{d}" fill="none" stroke="{colour}" stroke-width="1.5" '
                f"{dash}><title>{name}</title></path>"
            )
        bar_x = frame.sx(budget)
        parts.append(
            f'<path class="prediction-interval" data-point="{name}" d="M{bar_x - 4:.1f},{frame.sy(high):.1f} '
            f"L{bar_x + 4:.1f},{frame.sy(high):.1f} M{bar_x:.1f},{frame.sy(high):.1f} L{bar_x:.1f},{frame.sy(low):.1f} "
            f'M{bar_x - 4:.1f},{frame.sy(low):.1f} L{bar_x + 4:.1f},{frame.sy(low):.1f}" stroke="{colour}" '
            f'stroke-width="1.5"><title>{name}: {_interval(fit.predict(budget), low, high)} @ {budget:g}</title></path>'
        )
    return "\n".join(parts + ["</svg>"])


def _curves_html(results: Sequence[Result], colors: dict[str, str]) -> str:
    """Where each val curve is heading: the table of fits and its chart."""
    fits = curve_fits(results)
    fitted = any(isinstance(fit, PowerLawFit) for _, fit in fits)
    chart = f'<div id="prediction-chart">{prediction_chart_svg(fits, colors)}</div>' if fitted else ""
    return (
        "<h3>Where the val curves are heading</h3>\n"
        "<p>Each point's val curve after its warmup, fitted by L(t) = E + A t<sup>-alpha</sup> (t in steps, least "
        f"squares) and extended dashed to {PREDICT_FACTOR}x its steps: <b>a prediction, not a measurement</b>. "
        f"Intervals are 95% percentiles of {RESAMPLES} refits to the curve's resampled residuals: they cover the "
        "noise of the evaluations if the curve keeps its form, not a change of form (a longer run decays its "
        "learning rate later, so it can end below the extension).</p>\n"
        f"{_fits_table(fits)}\n{chart}"
    )


def _seed_losses(results: Sequence[Result]) -> dict[str, dict[Any, float]]:
    """``{group: {seed: final val loss}}`` of the finished points (a diverged one, of loss NaN, takes no part)."""
    losses: dict[str, dict[Any, float]] = {}
    for r in results:
        loss = r.metrics["val_loss"]
        if r.status == "done" and loss is not None and math.isfinite(loss):
            losses.setdefault(r.point.group, {})[r.point.values.get(SEED_KEY)] = loss
    return losses


def comparison_sentence(comparison: PairedComparison) -> str:
    """Whether the best setting beats the runner-up beyond seed noise, with the paired difference, in words."""
    c = comparison
    per_seed = ", ".join(f"seed {seed}: {d:+.3g}" for seed, d in zip(c.seeds, c.differences))
    numbers = (
        f"the runner-up's val loss minus the best's is {c.mean:+.3g} on average over {len(c.seeds)} paired seeds "
        f"(95% t interval {c.low:+.3g} to {c.high:+.3g}; {per_seed})"
    )
    best, runner_up = f"<b>{html.escape(c.best)}</b>", f"<b>{html.escape(c.runner_up)}</b>"
    if c.beats:
        return f"{best} beats {runner_up} beyond seed noise: {numbers}."
    return (
        f"{best} has the lowest mean val loss, ahead of {runner_up}, but not beyond seed noise: {numbers}, and the "
        "interval does not lie above 0. More seeds would narrow it."
    )


def _comparison_html(sweep: Sweep, results: Sequence[Result]) -> str:
    """The best setting against the runner-up, paired by seed."""
    head = "<h3>Best setting against the runner-up</h3>\n"
    if SEED_KEY not in sweep.keys:
        return head + _no_conclusion(
            "paired", f"No paired comparison: {SEED_KEY} is not swept, so each setting ran one seed."
        )
    try:
        comparison = compare_best_two(_seed_losses(results))
    except NoConclusion as exc:
        return head + _no_conclusion("paired", f"No paired comparison: {exc}.")
    return (
        head
        + f'<p id="paired" class="{"beats" if comparison.beats else "within-noise"}">'
        + (comparison_sentence(comparison) + "</p>")
    )


def _sized(results: Sequence[Result]) -> list[tuple[float, float, Result]]:
    """``(parameters, val loss, result)`` of the finished points whose parameter count is known."""
    sized = []
    for r in results:
        parameters, loss = r.metrics["parameters"], r.metrics["val_loss"]
        if r.status == "done" and parameters and loss is not None and math.isfinite(loss):
            sized.append((float(parameters), float(loss), r))
    return sized


def _mean_loss(members: Sequence[tuple[float, float, Result]]) -> float:
    return statistics.mean(loss for _, loss, _ in members)


def scaling_frontier(results: Sequence[Result]) -> list[list[tuple[float, float, Result]]]:
    """The ``(parameters, val loss, result)`` of the best setting (lowest mean val loss over its seeds) of each
    model size, smallest size first: what a scaling fit over sizes runs through."""
    by_size: dict[float, dict[str, list[tuple[float, float, Result]]]] = {}
    for sized in _sized(results):
        by_size.setdefault(sized[0], {}).setdefault(sized[2].point.group, []).append(sized)
    return [
        min(groups.values(), key=lambda members: (_mean_loss(members), members[0][2].point.group))
        for _, groups in sorted(by_size.items())
    ]


def scaling_chart_svg(
    results: Sequence[Result], frontier: Sequence[Sequence[tuple[float, float, Result]]], fit: PowerLawFit
) -> str:
    """Val loss against parameters (log scale): every finished point (grey), the best setting of each size (black),
    the fit through them and its 95% band."""
    everyone = _sized(results)
    chosen = {r.point.name for members in frontier for _, _, r in members}
    sizes = [n for n, _, _ in everyone]
    samples = _spaced(min(sizes), max(sizes))
    band = [fit.predict_interval(n) for n in samples]
    ys = [y for _, y, _ in everyone] + [v for lh in band for v in lh]
    y_pad = (max(ys) - min(ys)) * 0.05 or 0.5
    x_lo, x_hi = math.log10(min(sizes)), math.log10(max(sizes))
    x_pad = (x_hi - x_lo) * 0.05 or 0.1
    frame = _Frame(x_lo - x_pad, x_hi + x_pad, min(ys) - y_pad, max(ys) + y_pad)
    parts = _chart_head("val loss by parameters: scaling fit", "val", "parameters", len(everyone))
    parts += _chart_axes(frame, "val", "parameters", log_x=True)
    outline = [(math.log10(n), hi) for n, (_, hi) in zip(samples, band)]
    outline += [(math.log10(n), lo) for n, (lo, _) in reversed(list(zip(samples, band)))]
    parts.append(f'<path class="scaling-band" d="{_path(frame, outline)} Z" fill="#000" fill-opacity="0.12"/>')
    curve = [(math.log10(n), fit.predict(n)) for n in samples]
    parts.append(f'<path class="scaling-fit" d="{_path(frame, curve)}" fill="none" stroke="#000" stroke-width="1.5"/>')
    for n, y, r in everyone:
        kind, fill = ("frontier", "#000") if r.point.name in chosen else ("scaling-point", "#999")
        name = html.escape(r.point.name)
        parts.append(
            f'<circle class="{kind}" data-point="{name}" cx="{frame.sx(math.log10(n)):.1f}" cy="{frame.sy(y):.1f}" '
            f'r="3.5" fill="{fill}"><title>{name}: {y:.4g}</title></circle>'
        )
    return "\n".join(parts + ["</svg>"])


def _scaling_html(results: Sequence[Result]) -> str:
    """A Chinchilla-style L(N) over the model sizes of the sweep: its intervals, table and chart."""
    head = "<h3>Scaling over model sizes</h3>\n"
    frontier = scaling_frontier(results)
    if not frontier:
        return head + _no_conclusion("scaling", "No scaling fit: no finished point has its parameter count yet.")
    if len(frontier) == 1:
        why = f"every finished point has the same model size ({frontier[0][0][0]:,.0f} parameters)"
        return head + _no_conclusion("scaling", f"No scaling fit: {why}.")
    observed = [sized for members in frontier for sized in members]
    try:
        fit = fit_power_law([n for n, _, _ in observed], [loss for _, loss, _ in observed])
    except NoConclusion as exc:
        return head + _no_conclusion("scaling", f"No scaling fit over {len(frontier)} model sizes: {exc}.")
    steps = sorted({r.metrics["steps"] for _, _, r in observed if r.metrics["steps"] is not None})
    mixed = (
        f" The sizes trained for different numbers of steps ({', '.join(f'{s:g}' for s in steps)}): this L(N) "
        "mixes model size with training length."
        if len(steps) > 1
        else ""
    )
    rows = "".join(
        f"<tr><td>{html.escape(members[0][2].point.group)}</td><td>{members[0][0]:,.0f}</td><td>{len(members)}</td>"
        f"<td>{_mean_loss(members):.4g}</td><td>{fit.predict(members[0][0]):.4g}</td></tr>"
        for members in frontier
    )
    table = (
        '<table id="scaling-table"><thead><tr><th>best setting of its size</th><th>parameters</th><th>seeds</th>'
        f"<th>val loss (mean)</th><th>fitted</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    alpha, e = _interval(fit.law.alpha, *fit.alpha_interval(), digits=3), _interval(fit.law.e, *fit.e_interval())
    chart = scaling_chart_svg(results, frontier, fit)
    return (
        head + f'<p id="scaling">L(N) = E + A N<sup>-alpha</sup> over the best setting of each of {len(frontier)} '
        f"model sizes ({fit.n} points, each seed one): alpha = {alpha}, E = {e} (95% percentiles of {RESAMPLES} "
        f'refits to resampled residuals).{mixed}</p>\n{table}\n<div id="scaling-chart">{chart}</div>'
    )


def conclusions_html(sweep: Sweep, results: Sequence[Result], colors: dict[str, str]) -> str:
    """The page's conclusions: the best setting against the runner-up over seeds, where each val curve is heading,
    and a scaling fit over model sizes."""
    return (
        '<h2>Conclusions</h2>\n<div id="conclusions">\n'
        f"{_comparison_html(sweep, results)}\n{_curves_html(results, colors)}\n{_scaling_html(results)}\n</div>"
    )


SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(th => {
  const column = th.cellIndex;  // within its own table: the page has more than one
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const up = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(other => delete other.dataset.order);
    th.dataset.order = up ? "asc" : "desc";
    const key = row => row.cells[column].dataset.value ?? row.cells[column].textContent;
    const rows = Array.from(body.rows).sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last, either way
      const [nx, ny] = [parseFloat(x), parseFloat(y)];
      const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return up ? order : -order;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
// report.html#sort=<column> opens the page sorted by that column (val_loss, tokens_per_s, ...)
const sortBy = new URLSearchParams(location.hash.slice(1)).get("sort");
document.querySelector(`table.sortable th[data-key="${sortBy}"]`)?.click();
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; cursor: pointer; }
td:first-child, th:first-child { text-align: left; }
tr.best { background: #fff4c2; font-weight: bold; }
tr.failed td { color: #b00; }
p.warning { color: #b00; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.legend span { display: inline-block; margin-right: 1em; font-size: 13px; }
.legend i { display: inline-block; width: 14px; height: 4px; margin-right: 4px; vertical-align: middle; }
"""


def report_html(sweep: Sweep, results: Sequence[Result]) -> str:
    """The whole page."""
    best = best_result(results)
    colors = _group_colors(results)
    columns = [("point", "point"), *((key, key) for key in sweep.keys), *METRICS]
    head = "".join(f'<th data-key="{html.escape(key)}">{html.escape(heading)}</th>' for key, heading in columns)
    rows = []
    for r in results:
        metrics: dict[str, Any] = {"status": r.status, **r.metrics}
        name = html.escape(r.point.name)
        cells = [f'<td data-value="{name}">{"★ " if r is best else ""}{name}</td>']
        cells += [f"<td>{html.escape(_cell(r.point.values.get(key)))}</td>" for key in sweep.keys]
        for column, _ in METRICS:
            value = metrics[column]
            data = f' data-value="{value!r}"' if isinstance(value, (int, float)) else ""
            cells.append(f"<td{data}>{html.escape(_cell(value))}</td>")
        classes = " ".join(
            c for c in ("best" if r is best else "", "failed" if r.status.startswith("failed") else "") if c
        )
        rows.append(f'<tr class="{classes}" data-point="{name}">{"".join(cells)}</tr>')
    kinds = ("done", "stopped", "failed", "incomplete", "not run")
    counts = {s: sum(r.status.startswith(s) for r in results) for s in kinds}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    best_line = (
        f"best: <b>{html.escape(best.point.name)}</b>, val loss {best.metrics['val_loss']:.4g}"
        if best
        else "best: none yet"
    )
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(g)}</span>' for g, c in colors.items())
    swept = html.escape(", ".join(sweep.keys) or "nothing")
    charts = "\n".join(chart_svg(title, results, curve, x, colors) for title, curve, x in CHARTS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sweep {html.escape(sweep.name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>Sweep {html.escape(sweep.name)}</h1>
<p>{html.escape(str(sweep.path))}: {len(results)} points ({summary}) over {swept};
{best_line}. Click a column heading to sort.</p>
{search_note(sweep)}
{environment_note(results)}
<table id="points" class="sortable"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{_groups_table(results)}
{conclusions_html(sweep, results, colors)}
<h2>Loss curves</h2>
<div class="legend">{legend}</div>
<div class="charts">
{charts}
</div>
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def write_report(sweep: Sweep, folder: Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.csv`` into the sweep's folder; return their paths."""
    results = [read_result(point, folder / point.name, earlier_runs(point, sweep, folder)) for point in sweep.points]
    html_path, csv_path = folder / "report.html", folder / "summary.csv"
    write_text(csv_path, summary_csv(sweep, results))
    write_text(html_path, report_html(sweep, results))
    return html_path, csv_path
