"""What every command shares: clean one-line errors, the model download progress bar, and the
options that name a cascade's larger model and the judge's model, and opening them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ponder.engines.base import Engine
from ponder.engines.factory import open_engine
from ponder.errors import InvalidRequestError, PonderError
from ponder.models.sources import Progress as PullProgress
from ponder.verifiers.base import Verifier
from ponder.verifiers.llm_judge import LLMJudgeVerifier

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def fail_cleanly() -> Iterator[None]:
    """Show ponder's own errors and invalid parameters as one line and exit 1, no traceback."""
    try:
        yield
    except PonderError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"invalid parameters: {problems}") from exc


@contextmanager
def pull_progress(console: Console, quiet: bool = False) -> Iterator[PullProgress | None]:
    """A download bar for model pulls (on stderr); nothing when quiet or not on a terminal."""
    if quiet or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("pulling model", total=None)

    def update(done: int, total: int | None, stage: str) -> None:
        bar.update(task, completed=done, total=total, description=stage)

    with bar:
        yield update


def judge_option(command: F) -> F:
    """``--judge-model``: a second model for llm-judge reviews (`ponder ask`, `bench live`)."""
    return click.option(
        "--judge-model",
        default=None,
        help="A second model for llm-judge and verify-refine reviews (e.g. a larger one).",
    )(command)


def escalate_options(command: F) -> F:
    """``--escalate-model`` and ``--escalate-engine``: the larger model `cascade` escalates to
    (`ponder ask`, `ponder serve`); `escalation` turns them into what to open."""
    command = click.option(
        "--escalate-engine",
        default=None,
        help="Where the escalation model runs: 'local' or base URL(s) (default: as --engine).",
    )(command)
    return click.option(
        "--escalate-model",
        default=None,
        help="The larger model `-s cascade` escalates to (on --escalate-engine).",
    )(command)


def escalation(engine: str, model: str | None, on: str | None) -> tuple[str, str] | None:
    """(engine spec, model) of a cascade's larger model, for `open_engine`: `model` on engine
    `on`, by default where the main model runs (`engine`); None when no model is given."""
    if model is None:
        if on is not None:
            raise InvalidRequestError("--escalate-engine needs --escalate-model (which model)")
        return None
    return (on or engine, model)


async def open_further(
    stack: AsyncExitStack,
    engine: str,
    judge_model: str | None,
    escalate: tuple[str, str] | None,
    *,
    progress: PullProgress | None,
    threads: int | None,
) -> tuple[dict[str, Verifier], dict[str, Engine]]:
    """The models a strategy draws from besides its own, opened on `stack` (closed with it):
    an llm-judge on `judge_model` (on `engine`), and the cascade's larger model (`escalation`),
    as `run_strategy`'s `verifiers` and `engines`."""
    verifiers: dict[str, Verifier] = {}
    engines: dict[str, Engine] = {}
    if judge_model is not None:
        judge = open_engine(engine, judge_model, progress=progress, n_threads=threads)
        verifiers["llm-judge"] = LLMJudgeVerifier(engine=await stack.enter_async_context(judge))
    if escalate is not None:
        large = open_engine(*escalate, progress=progress, n_threads=threads)
        engines["large"] = await stack.enter_async_context(large)
    return verifiers, engines
