"""Turn a user's engine and model choice (CLI flags, server config) into an `Engine`."""

from __future__ import annotations

from typing import Any

from ponder.engines.base import Engine
from ponder.errors import InvalidRequestError
from ponder.models.sources import Progress
from ponder.models.store import ModelStore

LOCAL = "local"


def open_engine(
    engine: str = LOCAL,
    model: str | None = None,
    *,
    store: ModelStore | None = None,
    progress: Progress | None = None,
    **embedded_options: Any,
) -> Engine:
    """`engine` is "local" (embedded llama.cpp; the model is pulled on first use) or one or more
    OpenAI-compatible base URLs separated by commas (the model name is then the server's)."""
    if engine == LOCAL:
        from ponder.engines.embedded import EmbeddedEngine

        store = store or ModelStore()
        resolved = store.resolve(model or store.default_model)
        path = store.ensure(resolved.ref, progress=progress)
        options = {k: v for k, v in embedded_options.items() if v is not None}
        return EmbeddedEngine(path, name=resolved.name, **options)
    urls = [url.strip() for url in engine.split(",") if url.strip()]
    if urls and all(url.startswith(("http://", "https://")) for url in urls):
        from ponder.engines.remote import RemoteEngine

        return RemoteEngine(urls, model=model)
    raise InvalidRequestError(
        f"unknown engine {engine!r}: use 'local' or an OpenAI-compatible base URL such as "
        "http://127.0.0.1:8080/v1 (several URLs separated by commas)"
    )
