"""Pass-through to a remote upstream without the engine's per-sample bookkeeping.

A request that runs no strategy, has no deadline, asks for one sample and no logprobs, and is
served by a `RemoteEngine` is sent upstream as one request, and the upstream's answer is passed on
as it came: the whole JSON body, or the SSE events as they arrive. The engine's own path would
parse every streamed chunk into samples, events and a `Generation`, then build the response again
from those; for a short completion from a fast server that costs more CPU than everything else
the server does for the request (`benchmarks/server_load.py` measures it). The request is still
validated and normalised exactly as any other (`ServerState.plan`), and its upstream body is built
by the engine's own `build_body`, so defaults and field mapping are the same on both paths.

What a client gets is what the upstream said (its id, model name and fields), with:

* usage as the upstream reported it, counted in the metrics and the ledger (in plain numbers,
  `ponder.server.accounting`) and, for a whole response, in the ``X-Ponder-*`` headers; a stream
  asks the upstream for usage always and passes the usage chunk on only when the client asked
  for it (``stream_options.include_usage``). An upstream that streams no usage (llama.cpp's)
  gets the engine path's estimate: one token per chunk with text, prompt tokens unknown (0);
* an upstream failure before its answer starts as a 502/504 with the cause (retries and URL
  choice are the engine's), and one after a stream started as an ``{"error": ...}`` event;
* a response that every sample failed (finish reason ``error``/``abort``) as a 502, like the
  engine path;
* a client that disconnects cancels the upstream request (its connection is closed).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from ponder.engines import _openai_wire as wire
from ponder.engines.remote import RemoteEngine
from ponder.engines.types import Usage
from ponder.errors import BackendResponseError, EngineError
from ponder.server.admission import Slot
from ponder.server.service import Job, ServerState, until_disconnect
from ponder.server.streaming import SSE_HEADERS, error_event
from ponder.server.wire import envelope, ponder_headers, sse, usage_chunk

_DONE = "data: [DONE]\n\n"
_TEXT = re.compile(r'"(?:content|text)":\s*"(?!")')
"""A chunk that carries text (the role chunk's empty content does not count)."""


def relay_engine(job: Job) -> RemoteEngine | None:
    """The engine to relay `job` to, or None when it needs the engine's own path."""
    engine = job.engine
    params = job.request.params
    if (
        isinstance(engine, RemoteEngine)
        and job.selection.passthrough
        and job.selection.deadline_s is None
        and params.n == 1
        and not params.wants_logprobs
    ):
        return engine
    return None


async def relay_whole(state: ServerState, job: Job, engine: RemoteEngine, receive: Any) -> Response:
    """One whole completion, passed on as the upstream sent it."""
    started = time.perf_counter()
    body, usage = await until_disconnect(receive, _fetch(engine, job))
    state.record_passthrough(job, usage, started)
    return Response(body, media_type="application/json", headers=ponder_headers(None, usage, 1))


async def _fetch(engine: RemoteEngine, job: Job) -> tuple[bytes, Usage]:
    async with engine.relay(job.request, stream=False) as answer:
        body = await answer.read()
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise BackendResponseError(
            f"{answer.url} sent malformed JSON: {body[:200]!r}", status_code=200
        ) from exc
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    if not isinstance(choices, list) or not choices:
        message = wire.error_from_object(parsed) or "no choices"
        raise BackendResponseError(f"{answer.url} answered without a completion: {message}")
    reasons = [c.get("finish_reason") if isinstance(c, dict) else None for c in choices]
    if all(isinstance(r, str) and wire.map_finish_reason(r) == "error" for r in reasons):
        raise EngineError(f"{answer.url} ended the request with finish_reason={reasons[0]!r}")
    return body, wire.parse_usage(parsed.get("usage")) or Usage()


async def relay_stream(
    state: ServerState, job: Job, engine: RemoteEngine, slot: Slot, receive: Any
) -> StreamingResponse:
    """The upstream's events as they arrive, from the moment it answered with a 2xx."""
    started = time.perf_counter()
    upstream = contextlib.AsyncExitStack()
    try:
        answer = await until_disconnect(
            receive, upstream.enter_async_context(engine.relay(job.request, stream=True))
        )
    except BaseException:
        await upstream.aclose()
        slot.release()
        raise

    head = envelope(job.kind, job.id, job.created, job.model, chunk=True)

    async def events() -> AsyncIterator[str]:
        # Each piece of text the upstream sent goes out as one write, whatever events it holds.
        parser = wire.SseParser()
        usage: Usage | None = None
        streamed = 0  # chunks with text: the token count when the upstream reports no usage
        done = False
        try:
            async with upstream:
                async for text in answer.chunks():
                    out: list[str] = []
                    for _, data in parser.feed(text):
                        if data.strip() == "[DONE]":
                            done = True
                            break
                        streamed += _TEXT.search(data) is not None
                        if '"usage"' in data:
                            usage, keep = _usage_of(data, usage, job.include_usage)
                            if not keep:
                                continue
                        out.append(_event(data))
                    if done:
                        if usage is None:  # estimated, as the engine's path does
                            usage = Usage(completion_tokens=streamed)
                            if job.include_usage:
                                out.append(sse(usage_chunk(head, usage)))
                        state.record_passthrough(job, usage, started)
                        yield "".join(out) + _DONE
                        await answer.drain()
                        return
                    if out:
                        yield "".join(out)
                state.record_passthrough(job, usage or Usage(completion_tokens=streamed), started)
                error = BackendResponseError(
                    f"the stream from {answer.url} ended before [DONE]; the server may have crashed"
                )
                yield error_event(error, state) + _DONE
        except EngineError as exc:  # the upstream failed mid-stream
            state.record_passthrough(job, usage or Usage(completion_tokens=streamed), started)
            yield error_event(exc, state) + _DONE
        finally:
            slot.release()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _event(data: str) -> str:
    """`data` as one SSE event (a multi-line payload as several data lines)."""
    if "\n" not in data:
        return sse(data)
    return "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


def _usage_of(data: str, usage: Usage | None, include_usage: bool) -> tuple[Usage | None, bool]:
    """(the usage this event reports, else `usage`; whether to pass the event on). The upstream
    is always asked for usage; its usage-only chunk goes on only if the client asked too."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return usage, True  # not ours to judge: the client sees what the upstream sent
    if not isinstance(chunk, dict):
        return usage, True
    reported = wire.parse_usage(chunk.get("usage"))
    usage_only = not chunk.get("choices")
    return reported or usage, include_usage or not usage_only
