"""`ponder models`: see which models ponder knows, download them, find and delete their files."""

from __future__ import annotations

import click
from pydantic import TypeAdapter
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from ponder.cli.common import fail_cleanly, pull_progress
from ponder.models.store import ModelStatus, ModelStore


@click.group()
def models() -> None:
    """List, download, locate and delete models (stored under $PONDER_HOME/models)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_models(as_json: bool) -> None:
    """Show the catalogue and which models are pulled."""
    with fail_cleanly():
        statuses = ModelStore().list()
    if as_json:
        click.echo(TypeAdapter(list[ModelStatus]).dump_json(statuses, indent=2).decode())
        return
    table = Table("name", "size", "installed", "description")
    for status in statuses:
        name = f"{status.name} [dim](default)[/dim]" if status.default else status.name
        installed = "[green]yes[/green]" if status.installed else "no"
        table.add_row(name, decimal(status.size), installed, status.description)
    Console().print(table)


@models.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if already pulled.")
def pull(name: str, force: bool) -> None:
    """Download a model (catalogue name, or hf:OWNER/REPO/FILE.gguf) and print its path."""
    with fail_cleanly():
        store = ModelStore()
        store.resolve(name)  # a typo fails here, before a progress bar is drawn
        with pull_progress(Console(stderr=True)) as progress:
            path = store.pull(name, progress=progress, force=force)
    click.echo(path)


@models.command()
@click.argument("name")
def path(name: str) -> None:
    """Print the path of a pulled model (exit code 1 if it is not pulled)."""
    with fail_cleanly():
        click.echo(ModelStore().path(name))


@models.command("rm")
@click.argument("name")
def remove(name: str) -> None:
    """Delete a pulled model's file."""
    with fail_cleanly():
        store = ModelStore()
        resolved = store.resolve(name)
        removed = store.remove(name)
    if removed:
        click.echo(f"Removed {resolved.name} ({resolved.path})")
    else:
        click.echo(f"{resolved.name} was not pulled; nothing to remove")
