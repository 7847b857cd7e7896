"""`ponder serve`: an OpenAI-compatible HTTP server whose requests can run strategies.

Any OpenAI client works against it: pick a strategy with the model name
(``self-consistency:8/MODEL``), the body's ``ponder`` field or ``X-Ponder-*`` headers, or send a
plain request to pass straight through to the engine. See `ponder.server`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from ponder.cli.common import escalate_options, escalation, fail_cleanly
from ponder.errors import InvalidRequestError, MissingDependencyError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--engine",
    "-e",
    default="local",
    show_default=True,
    help="'local' (embedded llama.cpp) or OpenAI-compatible base URL(s), comma-separated.",
)
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="A model to serve (repeatable; the first is the default). Local: catalogue name, "
    ".gguf path or hf:owner/repo/f.gguf; remote: the upstream's name (discovered if omitted).",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="Require an API key: the environment variable VAR holds the accepted key(s), "
    "comma-separated. The keys are never printed or logged.",
)
@click.option(
    "--strategy",
    "default_strategy",
    default=None,
    help="Strategy for requests that name none (default: pass straight through).",
)
@click.option("--max-running", default=32, show_default=True, help="Requests worked on at once.")
@click.option("--max-waiting", default=128, show_default=True, help="Requests queued; beyond: 429.")
@click.option(
    "--max-body-bytes", default=4 * 1024 * 1024, show_default=True, help="Larger bodies: 413."
)
@click.option(
    "--deadline",
    "default_deadline_s",
    default=None,
    type=float,
    help="Deadline (s) of requests that give none: their budget's max_seconds.",
)
@click.option(
    "--max-deadline",
    "max_deadline_s",
    default=3600.0,
    show_default=True,
    type=float,
    help="Longest deadline (s) a request may ask for.",
)
@click.option(
    "--prices",
    default=None,
    type=click.Path(path_type=Path),
    help="Price file (JSON or TOML, as for `ponder ask --prices`) naming every served model: "
    "costs in responses and /metrics, and usd budgets; default: the embedded engine at the "
    "default machine cost per hour, a remote one unpriced.",
)
@click.option(
    "--policy",
    "auto_policy",
    default=None,
    type=click.Path(path_type=Path),
    help="The auto strategy's policy file (`ponder plan fit`); default: the shipped one. "
    "Requests may not name a policy file.",
)
@click.option(
    "--cascade-policy",
    default=None,
    type=click.Path(path_type=Path),
    help="The cascade's policy file (`ponder plan fit-cascade`); default: the cascade's own "
    "rule, which requests may set.",
)
@escalate_options
@click.option("--threads", default=None, type=int, help="llama.cpp threads (default: all cores).")
@click.option("--n-ctx", default=None, type=int, help="Embedded engine KV cache size (tokens).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="debug adds a line per request (method, path, status, time; never keys or bodies).",
)
def serve(
    host: str,
    port: int,
    engine: str,
    models: tuple[str, ...],
    api_key_env: str | None,
    default_strategy: str | None,
    max_running: int,
    max_waiting: int,
    max_body_bytes: int,
    default_deadline_s: float | None,
    max_deadline_s: float,
    prices: Path | None,
    auto_policy: Path | None,
    cascade_policy: Path | None,
    escalate_model: str | None,
    escalate_engine: str | None,
    threads: int | None,
    n_ctx: int | None,
    log_level: str,
) -> None:
    """Serve OpenAI-compatible /v1/chat/completions and /v1/completions with strategies."""
    with fail_cleanly():
        try:
            import uvicorn

            from ponder.server.app import create_app
            from ponder.server.config import ServerConfig
        except ImportError as exc:
            raise MissingDependencyError(
                f"`ponder serve` needs the server extra ({exc.name} is missing): "
                "pip install 'ponder[server]'"
            ) from exc
        from ponder.engines.base import Engine
        from ponder.engines.factory import open_engine
        from ponder.planning.pricing import load_prices
        from ponder.server.service import ROLES_NEEDED
        from ponder.strategies.registry import get_strategy

        keys: list[str] = []
        if api_key_env is not None:
            raw = os.environ.get(api_key_env, "")
            keys = [k.strip() for k in raw.split(",") if k.strip()]
            if not keys:
                raise InvalidRequestError(
                    f"--api-key-env {api_key_env}: that environment variable holds no key"
                )
        larger = escalation(engine, escalate_model, escalate_engine)
        if default_strategy is not None and default_strategy != "none":
            get_strategy(default_strategy)  # an unknown name fails now, not on every request
            if default_strategy in ROLES_NEEDED and larger is None:
                raise InvalidRequestError(
                    f"--strategy {default_strategy} needs {ROLES_NEEDED[default_strategy][1]}"
                )
        if cascade_policy is not None and larger is None:
            raise InvalidRequestError(
                f"--cascade-policy needs {ROLES_NEEDED['cascade'][1]} (the model it escalates to)"
            )
        options: dict[str, Any] = {}
        if default_deadline_s is not None:
            options["default_deadline_s"] = default_deadline_s
        config = ServerConfig.model_validate(
            {
                "api_keys": keys,
                "default_strategy": default_strategy,
                "max_running": max_running,
                "max_waiting": max_waiting,
                "max_body_bytes": max_body_bytes,
                "max_deadline_s": max_deadline_s,
                "prices": None if prices is None else load_prices(prices),
                "auto_policy": auto_policy,
                "cascade_policy": cascade_policy,
                **options,
            }
        )

        def open_engines() -> list[Engine]:
            return [
                open_engine(engine, model, n_threads=threads, n_ctx=n_ctx)
                for model in (models or (None,))
            ]

        def open_larger() -> Engine:
            assert larger is not None
            return open_engine(*larger, n_threads=threads, n_ctx=n_ctx)

        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        app = create_app(open_engines, config, escalate=None if larger is None else open_larger)
        auth = f"API keys from ${api_key_env}" if keys else "no API key"
        click.echo(f"ponder serving on http://{host}:{port}/v1 ({auth})", err=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
