"""Streaming responses (``stream: true``), as server-sent events.

With a strategy, the stream has three parts:

1. progress while the strategy works, as SSE comments every `progress_interval_s`:
   ``: ponder-progress {"samples_started": 8, "samples_ended": 3, "completion_tokens": 412,
   "elapsed_s": 1.5}``. Comments are part of the SSE format and every client skips them (the
   official OpenAI clients do), so stock clients see a normal stream; they also keep proxies
   from timing the connection out;
2. the chosen answer, streamed in chunks, then a chunk with ``finish_reason`` and the ``ponder``
   field (the same figures a plain response carries);
3. with ``stream_options.include_usage``, a last chunk with no choices and the complete usage.

Without a strategy, the engine's deltas are relayed as they come (role first, then content, then
each choice's finish reason, then usage), with a keep-alive comment when the engine is quiet.

The status line and headers wait (up to `first_event_wait_s`) for the engine's first token, so an
upstream that fails at once still gets a real 502/504 rather than a 200 followed by an in-stream
error. Failures after that are sent as an ``{"error": {...}}`` event, which the OpenAI clients
raise as `APIError`. A client that disconnects cancels the work: the response's generator is
closed and its cleanup cancels every engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from ponder.engines.base import GenerationHandle
from ponder.engines.types import SampleDelta, SampleEvent, SampleFinished
from ponder.errors import EngineError, PonderError
from ponder.server.admission import Slot
from ponder.server.errors import ApiError, from_ponder_error
from ponder.server.execution import Meter, Outcome, answer_text, chosen_candidate
from ponder.server.service import Job, ServerState, until_disconnect
from ponder.server.wire import (
    completion_error,
    delta_chunk,
    envelope,
    finish_reason,
    ponder_info,
    split_text,
    sse,
    sse_comment,
    usage_chunk,
)

log = logging.getLogger("ponder.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_event(exc: BaseException, state: ServerState) -> str:
    """A failure after the status line went out, as the error event OpenAI clients raise."""
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, PonderError):
        error = from_ponder_error(exc)
    else:
        log.error("a stream failed", exc_info=exc)
        error = ApiError(500, "internal server error", type="server_error")
    if error.status in (502, 504):
        state.metrics.upstream_errors.inc()
    return sse(error.body())


class _Cleanup:
    """Runs once, whichever comes first: the stream ending, or the handler failing before the
    stream started. Must not await: it may run in a cancelled generator."""

    def __init__(self, *actions: Callable[[], object]) -> None:
        self._actions = list(actions)

    def __call__(self) -> None:
        actions, self._actions = self._actions, []
        for action in actions:
            action()


async def strategy_stream(
    state: ServerState, job: Job, slot: Slot, queued_s: float, receive: Any
) -> StreamingResponse:
    """Start the strategy, wait for its first token (or its failure), then stream."""
    meter = Meter()
    task = asyncio.get_running_loop().create_task(state.run_strategy(job, meter))
    cleanup = _Cleanup(task.cancel, slot.release)
    try:
        await until_disconnect(receive, _first(task, meter, state.config.first_event_wait_s))
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    except BaseException:
        cleanup()
        raise
    head = envelope(job.kind, job.id, job.created, job.model, chunk=True)
    started = time.perf_counter()

    async def events() -> AsyncIterator[str]:
        try:
            first = True  # one report at once, so clients and proxies see the stream start
            while not task.done():
                if not first:
                    await asyncio.wait({task}, timeout=state.config.progress_interval_s)
                first = False
                if not task.done():
                    yield sse_comment(
                        "ponder-progress",
                        {
                            "samples_started": meter.samples_started,
                            "samples_ended": meter.samples_ended,
                            "completion_tokens": meter.tokens_streamed,
                            "elapsed_s": round(time.perf_counter() - started, 3),
                        },
                    )
            exc = task.exception()
            if exc is not None:
                yield error_event(exc, state)
                yield sse("[DONE]")
                return
            outcome: Outcome = task.result()
            info = ponder_info(outcome, job.selection, queued_s)
            state.record_run(outcome)
            text = answer_text(outcome.result)
            chosen = chosen_candidate(outcome.result)
            if job.kind == "chat":
                yield sse(delta_chunk("chat", head, 0, "", role=True))
            for piece in split_text(text, state.config.stream_chunk_chars):
                yield sse(delta_chunk(job.kind, head, 0, piece))
            last = delta_chunk(
                job.kind,
                head,
                0,
                None,
                reason=finish_reason(chosen.finish_reason if chosen else "stop"),
            )
            last["ponder"] = info.model_dump(mode="json")
            yield sse(last)
            if job.include_usage:
                yield sse(usage_chunk(head, outcome.usage))
            yield sse("[DONE]")
        finally:
            cleanup()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _first(task: asyncio.Task[Outcome], meter: Meter, wait_s: float) -> None:
    token = asyncio.ensure_future(meter.first_token.wait())
    try:
        await asyncio.wait({task, token}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        token.cancel()


_END = object()


async def passthrough_stream(
    state: ServerState, job: Job, slot: Slot, receive: Any
) -> StreamingResponse:
    """Relay the engine's deltas as chunks, with usage last when asked for."""
    started = time.perf_counter()
    handle = job.engine.start(job.request)  # a request the engine rejects fails here, as a 4xx
    queue: asyncio.Queue[object] = asyncio.Queue()
    pump = asyncio.get_running_loop().create_task(_pump(handle, queue))
    timer = None
    if job.selection.deadline_s is not None:
        timer = asyncio.get_running_loop().call_later(job.selection.deadline_s, handle.cancel)
    cleanup = _Cleanup(
        lambda: handle.cancel() if not handle.done else None,
        pump.cancel,
        timer.cancel if timer is not None else (lambda: None),
        slot.release,
    )
    wait_s = state.config.first_event_wait_s
    first: object = None
    try:
        with contextlib.suppress(TimeoutError):
            first = await until_disconnect(receive, asyncio.wait_for(queue.get(), wait_s))
        if isinstance(first, BaseException):
            raise first
    except BaseException:
        cleanup()
        raise
    head = envelope(job.kind, job.id, job.created, job.model, chunk=True)
    wants_logprobs = job.request.params.wants_logprobs

    async def events() -> AsyncIterator[str]:
        # Events that have already arrived go out together, in one write: each piece yielded
        # costs a trip through the ASGI send chain and a socket write, and upstreams often send
        # several chunks at once. Nothing is held back to wait for more.
        offsets = [0] * job.request.params.n
        out: list[str] = []
        try:
            if job.kind == "chat":
                for i in range(job.request.params.n):
                    out.append(sse(delta_chunk("chat", head, i, "", role=True)))
            item = first
            while True:
                if item is None:  # nothing yet: keep the connection alive
                    out.append(": keep-alive\n\n")
                elif item is _END:
                    break
                elif isinstance(item, BaseException):
                    out += [error_event(item, state), sse("[DONE]")]
                    yield "".join(out)
                    return
                else:
                    out.append(sse(_relay(job, head, item, offsets, wants_logprobs)))  # type: ignore[arg-type]
                if not queue.empty():
                    item = queue.get_nowait()
                    continue
                yield "".join(out)
                out = []
                try:
                    async with asyncio.timeout(state.config.progress_interval_s):
                        item = await queue.get()  # (no task per event, unlike wait_for)
                except TimeoutError:
                    item = None
            generation = await handle.result()
            state.record_passthrough(job, generation.usage, started)
            failed = completion_error(generation)
            if failed is not None:
                error = EngineError(failed.error or "the engine failed")
                out += [error_event(error, state), sse("[DONE]")]
                yield "".join(out)
                return
            if job.include_usage:
                out.append(sse(usage_chunk(head, generation.usage)))
            out.append(sse("[DONE]"))
            yield "".join(out)
        finally:
            cleanup()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _relay(
    job: Job, head: dict[str, Any], event: SampleEvent, offsets: list[int], logprobs: bool
) -> dict[str, Any]:
    if isinstance(event, SampleDelta):
        chunk = delta_chunk(
            job.kind,
            head,
            event.index,
            event.text,
            logprobs=event.logprobs if logprobs else None,
            offset=offsets[event.index],
        )
        offsets[event.index] += len(event.text)
        return chunk
    assert isinstance(event, SampleFinished)
    completion = event.completion
    return delta_chunk(
        job.kind,
        head,
        completion.index,
        None,
        reason=finish_reason(completion.finish_reason),
    )


async def _pump(handle: GenerationHandle, queue: asyncio.Queue[object]) -> None:
    try:
        async for event in handle.events():
            queue.put_nowait(event)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        queue.put_nowait(exc)
