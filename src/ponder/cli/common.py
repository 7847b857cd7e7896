"""What every command shares: clean one-line errors and the model download progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

from ponder.errors import PonderError
from ponder.models.sources import Progress as PullProgress


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
