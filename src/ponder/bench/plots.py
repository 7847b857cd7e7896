"""The report's plots: accuracy against tokens, latency or cost, one line per strategy (and run)
through N = 1, 2, 4, ... S with its 95 % interval shaded, live results as single markers with
error bars, the Pareto frontier drawn as a staircase, and the x axis logarithmic (budgets double).

Figures are made with matplotlib's object API on an Agg canvas, never pyplot, so making a report
touches no global state (no backend switch, no open figures) in the process that calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ponder.bench.report import Axis, Report, ReportError, ReportRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LABELS: Mapping[Axis, str] = MappingProxyType(
    {
        "tokens": "completion tokens per item (log)",
        "latency": "latency per item, s (log)",
        "cost": "cost per 1,000 items, USD (log)",
    }
)
SCALE: Mapping[Axis, float] = MappingProxyType({"tokens": 1.0, "latency": 1.0, "cost": 1000.0})
"""Plotted x = value x scale: costs per 1,000 items read as dollars rather than as zeros."""
RUN_STYLES = ("-", "--", "-.", (0, (5, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
"""Marker shapes per strategy, so lines that overlap (they often do at small N) stay apart."""
ORACLE_COLOUR = (0.45, 0.45, 0.45, 1.0)
BAND_ALPHA = 0.08
"""Light enough that a dozen overlapping intervals still show the lines through them."""
LIVE_MARKERS = ("*", "D", "P", "X", "s", "^", "v", "<", ">", "h")


def plot_accuracy(report: Report, axis: Axis, path: Path) -> None:
    """Write the accuracy-against-`axis` plot of `report` to `path` (PNG)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ReportError("report plots need matplotlib: pip install 'ponder[bench]'") from error
    figure = Figure(figsize=(11.0, 6.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    rows = [row for row in report.rows if row.x(axis) is not None]
    positive = all((row.x(axis) or 0.0) > 0 for row in rows)
    _lines(ax, report, rows, axis)
    _live(ax, report, rows, axis)
    _frontier(ax, rows, axis)
    if positive:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel(LABELS[axis])
    else:
        ax.set_xlabel(LABELS[axis].replace(" (log)", ""))
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    models = ", ".join(run.config.model for run in report.runs)
    ax.set_title(
        f"Accuracy vs {axis} · {report.dataset}, {report.items_used} items · {models}",
        fontsize=11,
    )
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, handlelength=3
    )
    figure.savefig(path, dpi=120)


def _plain_log_ticks(ax: Axes) -> None:
    """Ticks at 1-2-5 x 10^k (or every integer mantissa on a short range), labelled as plain
    numbers ("600", "2,000", "0.5") rather than matplotlib's 6 x 10^2."""
    from matplotlib import ticker

    low, high = ax.get_xlim()
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**e for e in decades for m in mantissas if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:
        return
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _plain(value)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _plain(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:g}"


def _x(row: ReportRow, axis: Axis) -> float:
    return float(row.x(axis) or 0.0) * SCALE[axis]


def _lines(ax: Axes, report: Report, rows: list[ReportRow], axis: Axis) -> None:
    """One line per (run, strategy) through its N points, with the interval as a band. Colour
    and marker tell strategies apart, line style runs (so the legend names each strategy once
    and each run once, however many runs); pass@k, the oracle, is thin, grey and has no band."""
    from matplotlib import colormaps

    replayed = [r for r in rows if r.kind == "replay"]
    strategies = list(dict.fromkeys(r.strategy for r in replayed))
    tab10, dark = colormaps["tab10"], colormaps["tab20b"]
    palette = [tab10(k) for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # grey is the oracle's
    palette += [dark(k) for k in (0, 8, 12, 16, 4)]
    several = report.several_runs
    runs = [run.label for run in report.runs]
    if several:  # legend entries for the runs' line styles, first
        for run_index, run in enumerate(runs):
            style = RUN_STYLES[run_index % len(RUN_STYLES)]
            ax.plot([], [], color="black", linestyle=style, linewidth=1.6, label=f"run: {run}")
    labelled: set[str] = set()
    for run_index, run in enumerate(runs):
        style = RUN_STYLES[run_index % len(RUN_STYLES)]
        for index, strategy in enumerate(strategies):
            line = sorted(
                (r for r in replayed if r.run == run and r.strategy == strategy),
                key=lambda r: r.n or 0,
            )
            if not line:
                continue
            oracle = line[0].oracle
            label = f"{strategy} (oracle)" if oracle else strategy
            xs = [_x(r, axis) for r in line]
            ys = [100 * r.accuracy for r in line]
            colour = ORACLE_COLOUR if oracle else palette[index % len(palette)]
            ax.plot(
                xs,
                ys,
                linestyle=style if several or not oracle else ":",
                marker="." if oracle else MARKERS[index % len(MARKERS)],
                markersize=4,
                linewidth=1.0 if oracle else 1.6,
                color=colour,
                label=None if label in labelled else label,
            )
            labelled.add(label)
            if oracle:  # a ceiling to read against, not a choice: no band to crowd the others
                continue
            band_x = xs + xs[::-1]
            band_y = [100 * r.ci_high for r in line] + [100 * r.ci_low for r in line[::-1]]
            ax.fill(band_x, band_y, color=colour, alpha=BAND_ALPHA, linewidth=0)


def _live(ax: Axes, report: Report, rows: list[ReportRow], axis: Axis) -> None:
    """Live configs: one marker each, with the interval as a vertical error bar."""
    live = [r for r in rows if r.kind == "live"]
    for index, row in enumerate(live):
        y = 100 * row.accuracy
        ax.errorbar(
            [_x(row, axis)],
            [y],
            yerr=[[y - 100 * row.ci_low], [100 * row.ci_high - y]],
            fmt=LIVE_MARKERS[index % len(LIVE_MARKERS)],
            markersize=9,
            capsize=3,
            color="black",
            markerfacecolor=f"C{index % 10}",
            label=f"{row.name(report.several_runs)}",
        )


def _frontier(ax: Axes, rows: list[ReportRow], axis: Axis) -> None:
    """The Pareto frontier: a staircase through its points (the best accuracy reachable at each
    budget), each point ringed."""
    front = sorted((r for r in rows if axis in r.pareto), key=lambda r: _x(r, axis))
    if not front:
        return
    xs = [_x(r, axis) for r in front]
    ys = [100 * r.accuracy for r in front]
    ax.step(xs, ys, where="post", color="black", linewidth=1.0, linestyle="--", alpha=0.7)
    ax.scatter(
        xs,
        ys,
        s=110,
        facecolors="none",
        edgecolors="black",
        linewidths=1.3,
        zorder=5,
        label="Pareto frontier",
    )
