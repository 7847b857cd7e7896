"""`ponder ask`: the main job. Sample n answers in parallel and answer by majority vote."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.cli.common import fail_cleanly, pull_progress
from ponder.engines.factory import open_engine
from ponder.engines.types import SampleDelta, SampleEvent, SampleFinished, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.strategies.result import Result
from ponder.strategies.self_consistency import self_consistency


@click.command()
@click.argument("question")
@click.option(
    "--model", "-m", default=None, help="Catalogue name, .gguf path or hf:owner/repo/f.gguf."
)
@click.option(
    "--engine",
    "-e",
    default="local",
    show_default=True,
    help="'local' (embedded llama.cpp) or OpenAI-compatible base URL(s), comma-separated.",
)
@click.option("--n", "-n", "n", default=8, show_default=True, help="Samples to draw in parallel.")
@click.option("--max-tokens", default=512, show_default=True, help="New tokens per sample.")
@click.option("--temperature", "-t", default=0.8, show_default=True)
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--top-k", default=0, show_default=True, help="0 disables top-k.")
@click.option("--seed", default=None, type=int, help="Reproducible sampling (embedded engine).")
@click.option("--threads", default=None, type=int, help="llama.cpp threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a report.")
def ask(
    question: str,
    model: str | None,
    engine: str,
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Answer QUESTION with self-consistency: n reasoning paths, majority vote.

    QUESTION '-' reads the question from standard input.
    """
    if question == "-":
        question = sys.stdin.read()
    console = Console(stderr=True)
    with fail_cleanly():
        if not question.strip():
            raise InvalidRequestError("the question is empty: pass it as an argument or on stdin")
        params = SamplingParams.model_validate(
            {
                "n": n,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "seed": seed,
            }
        )
        result = asyncio.run(_run(question, model, engine, params, threads, console, as_json))
    if as_json:
        click.echo(result.model_dump_json())
    else:
        _report(result, Console())


async def _run(
    question: str,
    model: str | None,
    engine_spec: str,
    params: SamplingParams,
    threads: int | None,
    console: Console,
    quiet: bool,
) -> Result:
    with pull_progress(console, quiet) as progress:
        engine = open_engine(engine_spec, model, progress=progress, n_threads=threads)
    async with engine:
        if quiet or not console.is_terminal:
            return await self_consistency(engine, question, params)
        with _SampleProgress(console, params) as live:
            return await self_consistency(engine, question, params, on_event=live.update)


class _SampleProgress:
    """A live bar per sample: tokens generated so far, and how each sample ended."""

    def __init__(self, console: Console, params: SamplingParams) -> None:
        self._progress = Progress(
            TextColumn("sample {task.fields[index]:>2}"),
            BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total:.0f} tokens {task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks = [
            self._progress.add_task("", total=params.max_tokens, index=i, status="")
            for i in range(params.n)
        ]

    def __enter__(self) -> _SampleProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, event: SampleEvent) -> None:
        if isinstance(event, SampleDelta):
            self._progress.advance(self._tasks[event.index], event.tokens)
        elif isinstance(event, SampleFinished):
            self._progress.update(
                self._tasks[event.completion.index], status=event.completion.finish_reason
            )


def _report(result: Result, console: Console) -> None:
    answer = result.answer if result.answer is not None else "(no answer found)"
    total = len(result.candidates)
    console.print(
        f"[bold]Answer:[/bold] {answer}   "
        f"({result.votes.get(result.answer or '', 0)}/{total} votes, {result.vote_share:.0%})"
    )
    table = Table("answer", "votes", "share", title=f"{result.strategy} on {result.model}")
    for value, count in result.votes.items():
        table.add_row(value, str(count), f"{count / total:.0%}")
    unanswered = sum(c.answer is None for c in result.candidates)
    if unanswered:
        table.add_row("[dim](none)[/dim]", str(unanswered), f"{unanswered / total:.0%}")
    console.print(table)
    usage = result.usage
    console.print(
        f"{total} samples, {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
        f"tokens in {result.latency_s:.1f} s ({result.tokens_per_s:.1f} tokens/s)"
    )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
