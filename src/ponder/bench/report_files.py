"""Writing a report (`ponder.bench.report`) to a folder: report.md, rendered here for people
(what was run and how to run it again, where a budget is best spent, the frontier, the
planners' targets, then every number), summary.json for programs, and the plots."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from ponder.bench.report import (
    AUTO,
    AUTO_POLICY,
    AXES,
    CASCADE,
    CASCADE_ORACLE,
    COST_TOLERANCE,
    MARKDOWN,
    PLANNED,
    PLOTS,
    SUMMARY,
    Axis,
    Report,
    ReportError,
    ReportRow,
    finite,
    ties,
)


def write_report(report: Report, out: Path) -> list[Path]:
    """report.md, summary.json and the plots into the folder `out` (created if needed; files of
    an earlier report there are replaced). Returns the files written."""
    from ponder.bench.plots import plot_accuracy

    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} is a file; give --out a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for axis in AXES:
        if any(finite(row.x(axis)) for row in report.rows):
            path = out / PLOTS[axis]
            plot_accuracy(report, axis, path)
            written.append(path)
    markdown = out / MARKDOWN
    markdown.write_text(render_markdown(report, {p.name for p in written}), encoding="utf-8")
    summary = out / SUMMARY
    summary.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return [markdown, summary, *written]


def render_markdown(report: Report, plots: Collection[str] = tuple(PLOTS.values())) -> str:
    """The human report: what was run and how to run it again, where the budget is best spent,
    the frontier, then every number."""
    several = report.several_runs
    models = ", ".join(run.config.model for run in report.runs)
    lines = [f"# {report.dataset} · {models}", ""]
    lines += _header(report)
    lines += ["", "## Reproduce", "", "```sh", *report.reproduce, report.command, "```", ""]
    lines += _budget_section(report)
    lines += _pareto_section(report)
    lines += _planner_section(report)
    lines += ["## Results", ""]
    lines += [
        "Accuracy with its 95 % bootstrap interval over items; tokens, latency, samples and "
        "cost are means per item.",
        "",
    ]
    replayed = (row.strategy for row in report.rows if row.kind == "replay")
    for strategy in dict.fromkeys(name for name in replayed if name not in PLANNED):
        lines += [f"### {strategy}", ""]
        chosen = [r for r in report.rows if r.kind == "replay" and r.strategy == strategy]
        lines += _table(chosen, several, by_n=True)
    live = [row for row in report.rows if row.kind == "live"]
    if live:
        lines += ["### Live strategies (`ponder bench live`)", ""]
        lines += _table(live, several, by_n=False)
    shown = [name for name in PLOTS.values() if name in plots]
    if shown:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})\n" for name in shown]
    if report.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in report.notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def _planner_section(report: Report) -> list[str]:
    """The auto planner and the cascade: how they were made, the targets, their rows."""
    planned = [row for row in report.rows if row.strategy in PLANNED]
    if not planned and not report.planner:
        return []
    several = report.several_runs
    lines = ["## Planner and cascade", ""]
    lines += [f"- {line}" for line in report.planner]
    lines += [""]
    if report.targets:
        lines += ["| target | run | met | numbers |", "|---|---|---|---|"]
        lines += [
            f"| {check.target} | {check.run} | {'**yes**' if check.met else 'no'} | "
            f"{check.detail} |"
            for check in report.targets
        ]
        lines += [""]
    for strategy, title, by_n in (
        (AUTO_POLICY, "auto (the policy)", False),
        (AUTO, "auto at the token cost of N samples (compare majority N)", True),
        (CASCADE, "cascade", False),
        (CASCADE_ORACLE, "cascade with an oracle router (a bound, not a strategy)", False),
    ):
        chosen = [row for row in planned if row.strategy == strategy]
        if chosen:
            lines += [f"### {title}", ""]
            lines += _table(chosen, several, by_n=by_n)
    return lines


def _header(report: Report) -> list[str]:
    lines = [
        f"- **Dataset:** {report.dataset}",
        f"- **Generated:** {report.generated_at} by ponder {report.ponder_version}",
        f"- **Replay:** {report.orderings} random orderings of each item's samples (seed "
        f"{report.seed}), N = 1, 2, 4, ... S; accuracy intervals: 95 % percentile bootstrap "
        f"over items ({report.bootstrap} resamples); pass@k by the unbiased estimator; "
        f"DeepConf group window {report.window} tokens",
        "- **Latency:** the run's measured seconds per sample; N samples decoded together "
        "take as long as the slowest of them, rounds of an adaptive strategy add up",
        "- **Machine:** latencies are as measured where each run was sampled (its engine "
        "below); the run file does not record the machine, so compare latencies only between "
        f"runs made on the same one. Report made on {report.machine}",
        "- **Cost:** "
        + "; ".join(f"{run.label}: {run.price or 'unpriced'}" for run in report.runs)
        + (
            f" (from {report.prices_file})"
            if report.prices_file
            else f" (no --prices: the default machine cost, ${report.default_usd_per_hour:g} / "
            "hour of a small 2-core machine, for local models)"
        )
        + (
            ". A machine priced by the hour charges an item the machine time its generated "
            "tokens took (its tokens x the run's machine-seconds per token), not its latency: "
            "the samples decoded together share the machine"
            if any(run.machine_seconds_per_token is not None for run in report.runs)
            else ""
        ),
        "",
        "| run | model | engine | samples / item | items used / complete / in run | samples "
        "stored | max tokens | temperature | top-p | top-k |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in report.runs:
        config = run.config
        stored = config.items * config.samples
        lines.append(
            f"| `{Path(run.path).name}` | {config.model} | {config.engine} | {config.samples} | "
            f"{report.items_used} / {run.items_complete} / {config.items} | "
            f"{run.samples_stored} / {stored} | {config.max_tokens} | {config.temperature:g} | "
            f"{config.top_p:g} | {config.top_k} |"
        )
    partial = [run for run in report.runs if report.items_used < run.config.items]
    if partial:
        lines += [
            "",
            f"**Partial:** only the {report.items_used} items whose samples are all stored"
            + (" in every run" if report.several_runs else "")
            + " are used ("
            + "; ".join(
                f"{run.label}: {run.items_complete} of {run.config.items} complete"
                for run in partial
            )
            + ").",
        ]
    return lines


def _budget_section(report: Report) -> list[str]:
    if not report.budgets:
        return []
    lines = [
        "## Best per budget",
        "",
        f"Budgets of N samples drawn in parallel by {report.runs[0].label}; the most accurate "
        "point that costs no more (pass@k excluded, and live runs on only some of the items).",
        "",
        "| N | tokens ≤ | best | latency ≤ | best | cost ≤ (USD / 1k items) | best |",
        "|--:|--:|---|--:|---|--:|---|",
    ]
    for tier in report.budgets:
        cells = [str(tier.n)]
        for axis in AXES:
            pick = tier.best[axis]
            if pick is None:
                cells += ["-", "-"]
                continue
            cells += [_amount(axis, pick.budget), f"{pick.point} ({pick.accuracy:.1%})"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _pareto_section(report: Report) -> list[str]:
    lines = [
        "## Pareto-optimal points",
        "",
        "No other point (pass@k excluded, and live runs on only some of the items) is at least "
        "as accurate for no more cost (costs within "
        f"{COST_TOLERANCE:.1%} tie); a tie is listed once, with how many more points share it.",
        "",
    ]
    for axis in AXES:
        front = sorted(
            (row for row in report.rows if axis in row.pareto),
            key=lambda row: float(row.x(axis) or 0.0),
        )
        if not front:
            continue
        points = []
        for row in front:
            name = row.name(report.several_runs)
            same = len(ties(report.rows, row, axis))
            if same:
                name += f" (= {same} more)"
            points.append(f"{name}: {_amount(axis, row.x(axis))}, {row.accuracy:.1%}")
        lines.append(f"- **{axis}:** " + "; ".join(points))
    return [*lines, ""]


def _table(rows: Sequence[ReportRow], several: bool, *, by_n: bool) -> list[str]:
    first = "N" if by_n else "strategy"
    head = (["model"] if several else []) + [
        first,
        "accuracy [95 % CI]",
        "tokens",
        "latency",
        "samples",
        "cost (USD / 1k items)",
        "Pareto",
    ]
    align = (["---"] if several else []) + ["--:" if by_n else "---"] + ["--:"] * 5 + ["---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        name = str(row.n) if by_n else row.strategy
        if row.note and not by_n:
            name += f" ({row.note})"
        cells = ([row.run] if several else []) + [
            name,
            f"{row.accuracy:.1%} [{row.ci_low:.1%}, {row.ci_high:.1%}]",
            _amount("tokens", row.tokens),
            _amount("latency", row.latency_s),
            f"{row.samples:.2f}".rstrip("0").rstrip("."),
            _amount("cost", row.cost_usd),
            "oracle" if row.oracle else ", ".join(row.pareto) or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _amount(axis: Axis, value: float | None) -> str:
    """Tokens as whole numbers, seconds to 3 significant digits, cost per 1,000 items (a cost
    per item is a string of zeros)."""
    if value is None or not finite(value):
        return "-"
    if axis == "tokens":
        return f"{value:,.0f}"
    if axis == "latency":
        return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"
    return f"${value * 1000:.3g}"
