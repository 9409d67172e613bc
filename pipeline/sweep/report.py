"""The page that compares a sweep's points: ``OUT_DIR/sweeps/<name>/report.html`` and ``summary.csv``.

Read from each point's folder: ``train_summary.json`` (best val loss, tokens/s, wall time), ``metrics.json``
(the evaluate stage's val loss), ``run_info.json`` (the environment's fingerprint, shown as a short digest: points
of two environments agree to rounding, not bitwise, and the page says so) and the loss curves
``plots/train.csv`` / ``plots/val.csv``. The page is one
static file: a sortable table (a few lines of inline JavaScript), the points grouped over seeds (mean and
spread), and the loss curves of every point drawn as inline SVG, against steps and against tokens. It needs
no server and no network.

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


def read_result(point: Point, folder: Path) -> Result:
    """The status, metrics and curves of a point from its folder."""
    summary, evaluated = _json(folder / "train_summary.json"), _json(folder / "metrics.json")
    metrics = {
        "val_loss": evaluated.get("val_loss", summary.get("val_loss")),
        "best_val_loss": summary.get("best_val_loss"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "wall_s": summary.get("seconds"),
        "steps": summary.get("step"),
        "environment": environment_digest(_json(folder / "run_info.json").get("environment")),
    }
    curves = {
        "train": _curve(folder / "plots" / "train.csv", "train_loss"),
        "val": _curve(folder / "plots" / "val.csv", "val_loss"),
    }
    return Result(point, point_status(folder), metrics, curves)


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


def _chart_axes(frame: _Frame, curve: str, x: str) -> list[str]:
    """Tick marks and labels of both axes, and the axes' names."""
    f, parts = frame, []
    for tick in nice_ticks(f.x_lo, f.x_hi):
        parts.append(
            f'<line x1="{f.sx(tick):.1f}" y1="{f.top + f.plot_h}" x2="{f.sx(tick):.1f}" y2="{f.top + f.plot_h + 4}" '
            'stroke="#999"/>'
        )
        parts.append(
            f'<text x="{f.sx(tick):.1f}" y="{f.top + f.plot_h + 16}" text-anchor="middle" font-size="11">'
            f"{_tick_label(tick)}</text>"
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


SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => {
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
    counts = {s: sum(r.status.startswith(s) for r in results) for s in ("done", "failed", "incomplete", "not run")}
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
{environment_note(results)}
<table id="points" class="sortable"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{_groups_table(results)}
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
    results = [read_result(point, folder / point.name) for point in sweep.points]
    html_path, csv_path = folder / "report.html", folder / "summary.csv"
    write_text(csv_path, summary_csv(sweep, results))
    write_text(html_path, report_html(sweep, results))
    return html_path, csv_path
