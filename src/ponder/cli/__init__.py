"""The `ponder` command. Each command group lives in its own module; this one wires them up."""

from __future__ import annotations

import click

from ponder import __version__
from ponder.cli.ask import ask
from ponder.cli.bench import bench
from ponder.cli.models import models
from ponder.cli.plan import plan
from ponder.cli.serve import serve
from ponder.cli.strategies import strategies
from ponder.cli.tune import tune_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ponder")
def main() -> None:
    """ponder: better answers from a language model by spending more compute at inference."""


main.add_command(ask)
main.add_command(bench)
main.add_command(models)
main.add_command(plan)
main.add_command(serve)
main.add_command(strategies)
main.add_command(tune_command)
