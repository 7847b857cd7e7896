"""`ponder tune`: how many samples to decode in parallel on this machine, and which quantization
of a model to run, measured rather than guessed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Column, Table

from ponder.cli.common import fail_cleanly, pull_progress
from ponder.models.store import ModelStore
from ponder.tuning import (
    ACCURACY_DATASET,
    DEFAULT_ACCURACY_MAX_TOKENS,
    DEFAULT_ANSWER_TOKENS,
    DEFAULT_N_CTX,
    DEFAULT_NS,
    DEFAULT_REPEATS,
    DEFAULT_TOKENS,
    THROUGHPUT_TOLERANCE,
    ModelTune,
    TuneReport,
    TuneSettings,
    parse_counts,
    tune,
)

BUSY_LOAD_PER_THREAD = 0.5
"""A load average above this share of the threads means something else was running."""


@click.command("tune")
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Catalogue name or .gguf path (repeatable; quantizations of one model are compared "
    "side by side). Default: the catalogue's default model.",
)
@click.option(
    "--ns",
    default=",".join(map(str, DEFAULT_NS)),
    show_default=True,
    help="Parallel sequences to measure, comma-separated (capped by what --n-ctx holds).",
)
@click.option(
    "--tokens",
    default=DEFAULT_TOKENS,
    show_default=True,
    help="New tokens per sample in each measurement (end-of-text ignored).",
)
@click.option(
    "--answer-tokens",
    default=DEFAULT_ANSWER_TOKENS,
    show_default=True,
    help="The answer length the latency is reported (and --latency judged) for.",
)
@click.option(
    "--latency",
    type=float,
    default=None,
    help="Target seconds per sample answer: recommend the largest n that meets it (default: "
    f"the smallest n within {THROUGHPUT_TOLERANCE:.0%} of the best throughput).",
)
@click.option(
    "--repeats", default=DEFAULT_REPEATS, show_default=True, help="Runs per n (best kept)."
)
@click.option(
    "--accuracy-items",
    default=0,
    show_default=True,
    help=f"Greedy accuracy on the first K {ACCURACY_DATASET} test items (0: skip).",
)
@click.option(
    "--accuracy-max-tokens",
    default=DEFAULT_ACCURACY_MAX_TOKENS,
    show_default=True,
    help="New tokens per accuracy answer.",
)
@click.option("--n-ctx", default=DEFAULT_N_CTX, show_default=True, help="KV cache cells.")
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: all cores).")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def tune_command(
    models: tuple[str, ...],
    ns: str,
    tokens: int,
    answer_tokens: int,
    latency: float | None,
    repeats: int,
    accuracy_items: int,
    accuracy_max_tokens: int,
    n_ctx: int,
    threads: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Measure the embedded engine's throughput and per-sample latency for n parallel samples,
    recommend n for a latency target, and compare quantizations of one model side by side.

    Every n draws n samples of one fixed prompt with exactly --tokens new tokens each, so all n
    do the same work per sample; the latency of an --answer-tokens answer is the time to the
    first token plus the rest at the measured decode speed.
    """
    console = Console(stderr=True)
    show_progress = not (quiet or as_json) and console.is_terminal
    with fail_cleanly():
        settings = TuneSettings(
            ns=parse_counts(ns),
            tokens=tokens,
            answer_tokens=answer_tokens,
            latency_s=latency,
            repeats=repeats,
            accuracy_items=accuracy_items,
            accuracy_max_tokens=accuracy_max_tokens,
            n_ctx=n_ctx,
            threads=threads,
        )
        store = ModelStore()
        for resolved in [store.resolve(ref) for ref in models]:  # every typo fails before a pull
            with pull_progress(console, quiet or as_json) as progress:
                store.ensure(resolved.ref, progress=progress)
        if show_progress:
            with console.status("loading the model") as status:
                report = asyncio.run(
                    tune(
                        models, settings, store=store, on_progress=lambda text: status.update(text)
                    )
                )
        else:
            report = asyncio.run(tune(models, settings, store=store))
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    _print_report(Console(), report)


def _print_report(console: Console, report: TuneReport) -> None:
    settings = report.settings
    for tuned in report.models:
        console.print(_model_table(tuned, settings))
        pick = tuned.recommendation
        verdict = f"n={pick.n}" if pick.n is not None else "no n"
        console.print(f"[bold]Recommended: {verdict}[/bold] — {pick.reason}.")
        if tuned.skipped_ns:
            console.print(
                f"Not measured: n={','.join(map(str, tuned.skipped_ns))} — their samples of "
                f"{max(settings.tokens, settings.answer_tokens)} tokens do not fit the "
                f"{settings.n_ctx}-cell KV cache (--n-ctx)."
            )
        if tuned.accuracy is not None:
            acc = tuned.accuracy
            console.print(
                f"Greedy accuracy: {acc.correct}/{acc.items} ({acc.accuracy:.0%}) on "
                f"{acc.dataset}, up to {acc.max_tokens} tokens, in {acc.wall_s:.1f} s."
            )
        console.print()
    by_name = {tuned.model.name: tuned for tuned in report.models}
    for group in report.quantization_groups:
        console.print(_quantization_table([by_name[name] for name in group], settings))
    busy = report.load_average_start > BUSY_LOAD_PER_THREAD * report.threads
    console.print(
        f"{report.threads} threads; load average {report.load_average_start:.2f} at the start, "
        f"{report.load_average_end:.2f} at the end"
        + (": the machine was busy, so these numbers understate it." if busy else ".")
    )


def _model_table(tuned: ModelTune, settings: TuneSettings) -> Table:
    facts = tuned.model
    table = Table(
        Column("n", justify="right"),
        Column("tok/s all", justify="right"),
        Column("tok/s each", justify="right"),
        Column("first token s", justify="right"),
        Column(f"{settings.answer_tokens}-token answer s", justify="right"),
        title=f"{_label(facts.name)}: {facts.base}, {facts.quantization}, "
        f"{decimal(facts.file_bytes)}",
        caption=f"{tuned.prompt_tokens}-token prompt, {settings.tokens} new tokens per sample, "
        f"best of {settings.repeats}",
    )
    if settings.latency_s is not None:
        table.add_column(f"≤ {settings.latency_s:g} s", justify="center")
    for point in tuned.points:
        m = point.measurement
        row = [
            str(m.n),
            f"{m.throughput_tok_s:.1f}",
            f"{m.decode_tok_s:.1f}",
            f"{m.first_token_s:.2f}",
            f"{point.answer_latency_s:.1f}",
        ]
        if point.within_target is not None:
            row.append("[green]yes[/green]" if point.within_target else "[red]no[/red]")
        table.add_row(*row, style="bold" if m.n == tuned.recommendation.n else None)
    return table


def _quantization_table(group: list[ModelTune], settings: TuneSettings) -> Table:
    """Speed and accuracy of several quantizations of one base model, side by side."""
    table = Table(
        "model",
        "quant",
        Column("size", justify="right"),
        Column("tok/s n=1", justify="right"),
        Column("best tok/s (n)", justify="right"),
        Column("rec. n", justify="right"),
        Column(f"{settings.answer_tokens}-tok s", justify="right"),
        Column("accuracy", justify="right"),
        title=f"Quantizations of {group[0].model.base}",
        caption="rec. n: the recommended n; the answer time is at that n",
    )
    for tuned in group:
        points = {p.measurement.n: p for p in tuned.points}
        best = max(tuned.points, key=lambda p: p.measurement.throughput_tok_s).measurement
        single = points.get(1)
        pick = tuned.recommendation.n
        acc = tuned.accuracy
        table.add_row(
            _label(tuned.model.name),
            tuned.model.quantization,
            decimal(tuned.model.file_bytes),
            "-" if single is None else f"{single.measurement.throughput_tok_s:.1f}",
            f"{best.throughput_tok_s:.1f} ({best.n})",
            "-" if pick is None else str(pick),
            "-" if pick is None else f"{points[pick].answer_latency_s:.1f}",
            "-" if acc is None else f"{acc.correct}/{acc.items} ({acc.accuracy:.0%})",
        )
    return table


def _label(name: str) -> str:
    """A catalogue name as it is; a local file by its file name (paths crowd the tables)."""
    return Path(name).name
