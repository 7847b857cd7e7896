"""`ponder strategies`: every strategy with its parameters, defaults and allowed ranges."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ponder.strategies.registry import strategies as all_strategies


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def strategies(as_json: bool) -> None:
    """List the strategies `ponder ask --strategy NAME --param KEY=VALUE` accepts."""
    listing: list[dict[str, Any]] = [
        {"name": s.name, "summary": s.summary, "params": s.describe_params()}
        for s in all_strategies().values()
    ]
    if as_json:
        click.echo(json.dumps(listing, default=str))
        return
    console = Console()
    for entry in listing:
        table = Table("parameter", "default", "range", "description", title_justify="left")
        table.title = f"[bold]{entry['name']}[/bold] — {entry['summary']}"
        for row in entry["params"]:
            table.add_row(row["name"], str(row["default"]), row["range"], row["description"])
        console.print(table)
