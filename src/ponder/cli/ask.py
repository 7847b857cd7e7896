"""`ponder ask`: the main job. Answer a question with a strategy (self-consistency by default:
n answers sampled in parallel, majority vote) and show what it cost."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.budget import Budget
from ponder.cli.common import (
    escalate_options,
    escalation,
    fail_cleanly,
    judge_option,
    open_further,
    pull_progress,
)
from ponder.engines.factory import open_engine
from ponder.engines.types import SampleDelta, SampleEvent, SampleFinished, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.planning.ledger import LedgerEntry
from ponder.planning.pricing import Price, engine_price, load_prices
from ponder.strategies.registry import StrategyParams, get_strategy, run_strategy
from ponder.strategies.result import Result


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
@click.option(
    "--strategy",
    "-s",
    default="self-consistency",
    show_default=True,
    help="See `ponder strategies`.",
)
@click.option(
    "--param",
    "-p",
    "raw_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy parameter (repeatable).",
)
@click.option("--n", "-n", "n", default=None, type=int, help="Samples (the strategy's n; 8).")
@click.option("--max-tokens", default=512, show_default=True, help="New tokens per sample.")
@click.option("--temperature", "-t", default=0.8, show_default=True)
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--top-k", default=0, show_default=True, help="0 disables top-k.")
@click.option("--seed", default=None, type=int, help="Reproducible sampling (embedded engine).")
@click.option("--threads", default=None, type=int, help="llama.cpp threads (default: all cores).")
@judge_option
@escalate_options
@click.option(
    "--budget",
    "-b",
    "budget_spec",
    default=None,
    metavar="SPEC",
    help="Limits for the whole question, any of: samples=N,tokens=N,seconds=10|500ms|2m,"
    "usd=0.01 (the strategy answers from what it has when one is reached).",
)
@click.option("--max-samples", default=None, type=int, help="Same as --budget samples=N.")
@click.option("--budget-tokens", default=None, type=int, help="Same as --budget tokens=N.")
@click.option(
    "--prices",
    default=None,
    type=click.Path(path_type=Path),
    help="Price file (JSON or TOML, as for `bench report`); default: the embedded engine at "
    "the default machine cost per hour, a remote one unpriced.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a report.")
def ask(
    question: str,
    model: str | None,
    engine: str,
    strategy: str,
    raw_params: tuple[str, ...],
    n: int | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int | None,
    threads: int | None,
    judge_model: str | None,
    escalate_model: str | None,
    escalate_engine: str | None,
    budget_spec: str | None,
    max_samples: int | None,
    budget_tokens: int | None,
    prices: Path | None,
    as_json: bool,
) -> None:
    """Answer QUESTION with a test-time compute strategy (default: self-consistency, n reasoning
    paths and a majority vote).

    QUESTION '-' reads the question from standard input.
    """
    if question == "-":
        question = sys.stdin.read()
    console = Console(stderr=True)
    with fail_cleanly():
        if not question.strip():
            raise InvalidRequestError("the question is empty: pass it as an argument or on stdin")
        sampling = SamplingParams.model_validate(
            {
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "seed": seed,
            }
        )
        chosen = get_strategy(strategy)
        params = parse_key_values(raw_params)
        if n is not None:
            params.setdefault("n", n)
        budget = Budget.from_mapping({"samples": max_samples, "tokens": budget_tokens})
        if budget_spec is not None:
            budget = budget.merged(Budget.parse(budget_spec))
        plan = Plan(
            strategy=chosen.name,
            params=chosen.parse_params(params),
            sampling=sampling,
            budget=budget,
            judge_model=judge_model,
            prices=None if prices is None else load_prices(prices),
            escalate=escalation(engine, escalate_model, escalate_engine),
        )
        result, price = asyncio.run(_run(question, model, engine, plan, threads, console, as_json))
    entry = LedgerEntry.from_result(result)
    if as_json:
        out = result.model_dump(mode="json")
        out["ledger"] = entry.model_dump(mode="json")
        out["price"] = None if price is None else price.describe()
        click.echo(json.dumps(out))
    else:
        _report(result, entry, price, plan.budget, Console())


@dataclass(frozen=True)
class Plan:
    strategy: str
    params: StrategyParams
    sampling: SamplingParams
    budget: Budget
    judge_model: str | None = None
    prices: dict[str, Price] | None = None
    escalate: tuple[str, str] | None = None
    """(engine spec, model) of the cascade's larger model."""


async def _run(
    question: str,
    model: str | None,
    engine_spec: str,
    plan: Plan,
    threads: int | None,
    console: Console,
    quiet: bool,
) -> tuple[Result, Price | None]:
    async with AsyncExitStack() as stack:
        with pull_progress(console, quiet) as progress:
            engine = open_engine(engine_spec, model, progress=progress, n_threads=threads)
            await stack.enter_async_context(engine)
            verifiers, engines = await open_further(
                stack,
                engine_spec,
                plan.judge_model,
                plan.escalate,
                progress=progress,
                threads=threads,
            )
        price = engine_price(engine, plan.prices)
        live = None if quiet or not console.is_terminal else _SampleProgress(console, plan)
        with live or nullcontext():
            result = await run_strategy(
                plan.strategy,
                engine,
                question,
                plan.params,
                budget=plan.budget,
                sampling=plan.sampling,
                on_event=live.update if live else None,
                verifiers=verifiers,
                prices=plan.prices,
                engines=engines,
            )
        return result, price


def parse_key_values(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`--param k=v` pairs; values stay strings and the strategy's parameter model converts them."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"--param takes KEY=VALUE, got {pair!r}")
        parsed[key.strip().replace("-", "_")] = value.strip()
    return parsed


class _SampleProgress:
    """Live progress while the strategy works: samples drawn, tokens generated, samples ended."""

    def __init__(self, console: Console, plan: Plan) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>6.0f} tokens · {task.fields[ended]} samples ended"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(plan.strategy, total=plan.budget.max_tokens, ended=0)
        self._ended = 0

    def __enter__(self) -> _SampleProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, event: SampleEvent) -> None:
        if isinstance(event, SampleDelta):
            self._progress.advance(self._task, event.tokens)
        elif isinstance(event, SampleFinished):
            self._ended += 1
            self._progress.update(self._task, ended=self._ended)


def _report(
    result: Result, entry: LedgerEntry, price: Price | None, budget: Budget, console: Console
) -> None:
    answer = result.answer if result.answer is not None else "(no answer found)"
    console.print(f"[bold]Answer:[/bold] {answer}   ({result.vote_share:.0%} of the vote)")
    table = Table("answer", "votes", "share", title=f"{result.strategy} on {result.model}")
    total = sum(result.votes.values())
    for value, weight in result.votes.items():
        table.add_row(value, f"{weight:g}", f"{weight / total:.0%}")
    unanswered = sum(c.answer is None for c in result.candidates)
    if unanswered:
        table.add_row("[dim](no answer)[/dim]", str(unanswered), "")
    console.print(table)
    console.print(f"ledger: {entry.describe()}", highlight=False, soft_wrap=True)
    priced = f"priced at {price.describe()}" if price else "unpriced (give --prices FILE)"
    console.print(
        f"        {priced}; {result.tokens_per_s:.1f} tokens/s", highlight=False, soft_wrap=True
    )
    if result.stopped_by:
        console.print(f"stopped by the budget's {result.stopped_by} (budget: {budget.describe()})")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
