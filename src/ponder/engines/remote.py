"""`RemoteEngine`: samples from any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server,
Ollama, OpenAI) over streamed HTTP, so a strategy written against the local engine scales out to
a GPU fleet unchanged.

What a caller must know:

* Base URLs follow `normalise_base_url`: ``http://host:8000`` means ``http://host:8000/v1``;
  any other path is used as given. An engine belongs to the event loop that first uses it.
* `n > 1` is sent as one request. Many servers silently drop `n` (llama.cpp's does); when fewer
  choices come back the missing samples are drawn as concurrent single requests (sample i with
  seed+i), the URL is remembered as not honouring `n`, and `Generation.warnings` says so.
* Every shortfall is reported, never hidden: missing usage (token counts then come from the
  stream and are flagged as estimates), completions longer than `max_tokens`, fan-outs.
* One failing HTTP request fails the whole generation (`result()` raises); retries happen only
  before anything was streamed for that request.
* Connections are kept alive between requests (a stream is read to its end after ``[DONE]``),
  through aiohttp's pool when it is installed (see `_aiohttp_transport`).
* `relay` sends one request and hands its answer back unparsed, for a proxy's pass-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ponder import __version__
from ponder.engines import _openai_wire as wire
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Capabilities,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    SampleDelta,
    SampleEvent,
    SampleFinished,
    Timings,
    TokenLogprob,
    Usage,
)
from ponder.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    EngineError,
    InvalidRequestError,
)

_CAPABILITIES = Capabilities(
    parallel_n=True,
    logprobs=True,
    max_top_logprobs=20,
    streaming=True,
    prefix_caching=False,
    cancel_sample=True,
)

_AGENT = f"ponder/{__version__}"

DRAIN_S = 1.0
"""How long a stream may go on after ``[DONE]`` before its connection is dropped instead of
being kept for the next request."""


class RemoteEngine(Engine):
    """An engine backed by one or more OpenAI-compatible servers.

    Each HTTP request goes to the base URL with the fewest requests in flight (ties take turns),
    and at most `max_concurrency` requests are in flight at once. `timeout_s` bounds connecting
    and each wait for data, not a whole (possibly long) generation. Failed connections, 429 and
    5xx are retried up to `max_retries` times with exponential backoff and jitter, honouring
    `Retry-After`. The API key (argument, else `$api_key_env`) is sent as a bearer token and
    never logged or shown in `repr`.
    """

    capabilities = _CAPABILITIES

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120,
        max_retries: int = 3,
        max_concurrency: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        raw = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not raw:
            raise InvalidRequestError("give at least one base URL")
        urls = list(dict.fromkeys(wire.normalise_base_url(u) for u in raw))
        if not timeout_s > 0:
            raise InvalidRequestError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise InvalidRequestError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise InvalidRequestError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if model is not None and not model:
            raise InvalidRequestError("model must not be empty; pass None to discover it")

        self.base_urls: tuple[str, ...] = tuple(urls)
        #: The served model's name; "" until discovered from `GET /models` on first use.
        self.model = model or ""
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency

        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {
            "Accept": "application/json, text/event-stream",
            "Accept-Encoding": "gzip, deflate",  # what httpx decodes without optional packages
            "User-Agent": _AGENT,
        }
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeouts = {"timeout": httpx.Timeout(self.timeout_s).as_dict()}
        limits = httpx.Limits(
            max_connections=max_concurrency + len(urls),
            max_keepalive_connections=max_concurrency,
        )
        self._transports = (
            dict.fromkeys(urls, transport) if transport is not None else _transports(urls, limits)
        )
        self._endpoints: dict[str, httpx.URL] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._outstanding = dict.fromkeys(urls, 0)
        self._turn = 0
        self._honours_n: dict[str, bool] = {}  # absent: not known yet
        self._model_lock = asyncio.Lock()
        self._runs: set[asyncio.Task[None]] = set()
        self._closed = False
        self._rng = random.Random()
        self._backoff_s = 0.5  # first retry delay; doubles per attempt (tests shorten it)
        self._backoff_cap_s = 30.0

    def __repr__(self) -> str:
        return f"RemoteEngine(base_urls={list(self.base_urls)!r}, model={self.model!r})"

    # --- Engine API ----------------------------------------------------------------------------
    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self._closed:
            raise EngineError("this RemoteEngine is closed; create a new one")
        run = _Run(self, request)
        task = asyncio.get_running_loop().create_task(run.drive())
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return run.handle

    async def __aenter__(self) -> RemoteEngine:
        return self

    async def aclose(self) -> None:
        """Stop running requests (their handles fail) and close the HTTP connections."""
        self._closed = True
        runs = list(self._runs)
        for task in runs:
            task.cancel()
        if runs:
            await asyncio.gather(*runs, return_exceptions=True)
        for each in {id(t): t for t in self._transports.values()}.values():
            await each.aclose()

    @contextlib.asynccontextmanager
    async def relay(self, request: GenerationRequest, *, stream: bool) -> AsyncIterator[Relayed]:
        """Send `request` as one upstream request (`n` as given, never fanned out) and yield the
        upstream's 2xx answer unread, for a proxy to pass on as it is: one whole completion, or
        with `stream` its SSE stream (usage included). URL choice, the concurrency bound,
        retries and errors are those of `start`."""
        if self._closed:
            raise EngineError("this RemoteEngine is closed; create a new one")
        model = await self.resolve_model()
        params = request.params
        attempt = 0
        avoid: str | None = None
        while True:
            async with self._slots:
                url = self._acquire_url(wants_n=params.n > 1, avoid=avoid)
                try:
                    path, body = wire.build_body(
                        request,
                        model=model,
                        n=params.n,
                        seed=params.seed,
                        openai=wire.is_openai(url),
                        stream=stream,
                    )
                    response = await self._open(url, path, body)
                except _Retry as retry:
                    failure = retry
                else:
                    try:
                        yield Relayed(self, url, response)
                    finally:
                        await response.aclose()
                    return
                finally:
                    self._release_url(url)
            await self._before_retry(url, attempt, failure)
            attempt += 1
            avoid = url

    async def resolve_model(self) -> str:
        """The model name, asking the first base URL's `GET /models` if none was given."""
        if self.model:
            return self.model
        async with self._model_lock:
            if not self.model:
                self.model = await self._discover_model()
        return self.model

    # --- internals -----------------------------------------------------------------------------
    async def _discover_model(self) -> str:
        attempt = 0
        while True:
            url = self.base_urls[attempt % len(self.base_urls)]
            try:
                response = await self._send("GET", url, "/models")
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                failure = _Retry(f"timed out listing models ({type(exc).__name__})", timeout=True)
            except httpx.TransportError as exc:
                failure = _Retry(_describe(exc))
            else:
                status = response.status_code
                if status < 400:
                    return _first_model(url, response)
                message = wire.error_message(response.content)
                if status != 429 and status < 500:
                    raise BackendResponseError(
                        f"{url}/models answered HTTP {status}: {message}", status_code=status
                    )
                failure = _Retry(
                    f"HTTP {status}: {message}",
                    retry_after=wire.parse_retry_after(response.headers.get("retry-after")),
                )
            await self._before_retry(url, attempt, failure)
            attempt += 1

    async def _before_retry(self, url: str, attempt: int, failure: _Retry) -> None:
        """Sleep before retry number `attempt + 1`, or raise the final error when out of tries."""
        attempts = attempt + 1
        if attempt >= self.max_retries:
            raise failure.final(url, attempts)
        if failure.retry_after is not None:
            if failure.retry_after > self.timeout_s:
                raise failure.final(
                    url, attempts, f"; it asked to retry after {failure.retry_after:g}s"
                )
            delay = failure.retry_after
        else:
            delay = min(self._backoff_cap_s, self._backoff_s * 2**attempt)
            delay *= self._rng.uniform(0.5, 1.0)
        await asyncio.sleep(delay)

    def _acquire_url(self, *, wants_n: bool, avoid: str | None) -> str:
        """Least outstanding requests, ties in turn; prefers URLs not known to drop `n` for a
        multi-sample request and, on a retry, a URL other than the one that just failed."""
        candidates = list(self.base_urls)
        if wants_n:
            candidates = [u for u in candidates if self._honours_n.get(u, True)] or candidates
        if avoid is not None and len(candidates) > 1:
            candidates = [u for u in candidates if u != avoid]
        low = min(self._outstanding[u] for u in candidates)
        count = len(self.base_urls)
        chosen = candidates[0]
        for step in range(count):
            url = self.base_urls[(self._turn + step) % count]
            if url in candidates and self._outstanding[url] == low:
                chosen = url
                self._turn = (self._turn + step + 1) % count
                break
        self._outstanding[chosen] += 1
        return chosen

    async def _send(
        self, method: str, url: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """One request straight to the URL's transport, its response unread. httpx's client
        layer is skipped on purpose: its URL merging, cookie jar and redirect and auth machinery
        cost more CPU per request than aiohttp's whole exchange, and an API client needs none
        of them (the key is a header; proxies are chosen per URL in `_transports`)."""
        target = url + path
        endpoint = self._endpoints.get(target)
        if endpoint is None:
            endpoint = self._endpoints[target] = httpx.URL(target)
        request = httpx.Request(
            method, endpoint, headers=self._headers, json=body, extensions=self._timeouts
        )
        return await self._transports[url].handle_async_request(request)

    async def _open(self, url: str, path: str, body: dict[str, Any]) -> httpx.Response:
        """Send one request and return its 2xx response, unread (the caller closes it). An error
        status raises `_Retry` (429, 5xx) or `BackendResponseError` (the rest); no answer at all
        raises what `_failure` says."""
        try:
            response = await self._send("POST", url, path, body)
        except httpx.TransportError as exc:
            raise self._failure(url, exc, False, 0) from exc
        status = response.status_code
        if status < 400:
            return response
        try:
            message = wire.error_message(await response.aread())
        except httpx.TransportError as exc:
            message = f"(the error body could not be read: {_describe(exc)})"
        finally:
            await response.aclose()
        if status == 429 or status >= 500:
            raise _Retry(
                f"HTTP {status}: {message}",
                retry_after=wire.parse_retry_after(response.headers.get("retry-after")),
            )
        hint = "; is the base URL the API root (usually ending in /v1)?" if status == 404 else ""
        raise BackendResponseError(
            f"{url}{path} rejected the request (HTTP {status}): {message}{hint}",
            status_code=status,
        )

    def _failure(
        self, url: str, exc: httpx.TransportError, started: bool, tokens: int | None
    ) -> Exception:
        """What a transport failure means: before anything was streamed, a failed connection
        is worth retrying (`_Retry`); a server that stops answering is a timeout, never retried
        (it would only add load); a stream that breaks after it started is unavailability.
        `tokens` is how many were streamed, where the caller counts them."""
        so_far = "" if tokens is None else f" after {tokens} tokens"
        if isinstance(exc, httpx.TimeoutException):
            if not started and isinstance(exc, httpx.ConnectTimeout):
                return _Retry(_describe(exc), timeout=True)
            return BackendTimeoutError(
                f"{url} sent nothing for {self.timeout_s:g}s"
                + ("" if tokens is None else f" ({tokens} tokens streamed so far)")
                + "; raise timeout_s if the server is just slow"
            )
        if not started:
            return _Retry(_describe(exc))
        return BackendUnavailableError(f"the stream from {url} broke{so_far}: {_describe(exc)}")

    def _release_url(self, url: str) -> None:
        self._outstanding[url] -= 1

    def _may_honour_n(self) -> bool:
        return any(self._honours_n.get(u, True) for u in self.base_urls)


class Relayed:
    """The upstream's 2xx answer to `RemoteEngine.relay`, to read once: whole (`read`), or as
    it arrives (`chunks`, then `drain` after ``[DONE]`` so the connection serves the next
    request). A transport failure while reading is `BackendUnavailableError` or
    `BackendTimeoutError`."""

    def __init__(self, engine: RemoteEngine, url: str, response: httpx.Response) -> None:
        self.url = url
        self._engine = engine
        self._response = response
        self._text = response.aiter_text()

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TransportError as exc:
            raise self._engine._failure(self.url, exc, True, None) from exc

    async def chunks(self) -> AsyncIterator[str]:
        try:
            async for text in self._text:
                yield text
        except httpx.TransportError as exc:
            raise self._engine._failure(self.url, exc, True, None) from exc

    async def drain(self) -> None:
        await drain(self._text)


def _transports(urls: Sequence[str], limits: httpx.Limits) -> dict[str, httpx.AsyncBaseTransport]:
    """A transport per base URL, shared by the URLs that reach the network the same way:
    directly, or through the proxy the environment names for them (``HTTP(S)_PROXY``,
    ``NO_PROXY``, as `urllib.request` reads them)."""
    proxies = urllib.request.getproxies()
    by_proxy: dict[str | None, httpx.AsyncBaseTransport] = {}
    chosen: dict[str, httpx.AsyncBaseTransport] = {}
    for url in urls:
        parts = urlsplit(url)
        proxy = None
        if not urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = proxies.get(parts.scheme) or proxies.get("all")
        if proxy not in by_proxy:
            by_proxy[proxy] = _transport(limits, proxy)
        chosen[url] = by_proxy[proxy]
    return chosen


def _transport(limits: httpx.Limits, proxy: str | None) -> httpx.AsyncBaseTransport:
    """aiohttp's pool where installed (far less CPU per request; see `_aiohttp_transport`; the
    server extra brings it), else httpx's own."""
    try:
        from ponder.engines._aiohttp_transport import AiohttpTransport
    except ImportError:
        return httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
    return AiohttpTransport(limits, proxy=proxy)


def _first_model(url: str, response: httpx.Response) -> str:
    try:
        data = response.json()["data"]
        name = data[0]["id"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendResponseError(
            f"{url}/models listed no usable model ({type(exc).__name__}); "
            "pass model= to RemoteEngine",
            status_code=response.status_code,
        ) from exc
    if not isinstance(name, str) or not name:
        raise BackendResponseError(f"{url}/models gave a model without a name; pass model=")
    return name


def _describe(exc: httpx.TransportError) -> str:
    detail = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {detail}"


class _Retry(Exception):
    """A failure worth retrying because nothing has been streamed yet."""

    def __init__(
        self, detail: str, *, retry_after: float | None = None, timeout: bool = False
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.timeout = timeout

    def final(self, url: str, attempts: int, extra: str = "") -> BackendUnavailableError:
        message = (
            f"{url} failed: {self.detail}{extra}; gave up after {attempts} attempt(s). "
            "Check that the server is running and reachable."
        )
        return BackendTimeoutError(message) if self.timeout else BackendUnavailableError(message)


@dataclass(eq=False)
class _Sample:
    index: int
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    pending_reason: str | None = None  # the server's finish_reason, applied at finalisation
    finish_reason: FinishReason | None = None  # set once the sample is final
    latency_s: float = 0.0
    call: _Call | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class _Call:
    """One HTTP request; its choice j is sample `indices[j]`."""

    indices: list[int]
    seed: int | None
    task: asyncio.Task[None] | None = None
    url: str | None = None
    answered: bool = False  # a 2xx response arrived, so the server did (some) work
    started: bool = False  # a choice was streamed: no more retries
    streamed_tokens: int = 0  # every token streamed, including those of cancelled samples
    usage: Usage | None = None
    seen: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    sent_at: float = 0.0
    queued_s: float = 0.0

    @property
    def shared(self) -> bool:
        return len(self.indices) > 1


class _Run:
    """The state of one `start()`: samples, the HTTP calls drawing them, and the handle."""

    def __init__(self, engine: RemoteEngine, request: GenerationRequest) -> None:
        self.engine = engine
        self.request = request
        self.params = request.params
        self.chat = request.messages is not None
        self.handle = GenerationHandle(self.params.n, self._on_cancel)
        self.samples = [_Sample(i) for i in range(self.params.n)]
        self.calls: list[_Call] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.warnings: list[str] = []
        self.t0 = time.monotonic()
        self.prompt_s: float | None = None
        self.reported_model: str | None = None

    # --- orchestration -------------------------------------------------------------------------
    async def drive(self) -> None:
        try:
            model = await self.engine.resolve_model()
            self._plan()
            while self.tasks:
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self.tasks.discard(task)
                    if not task.cancelled() and (exc := task.exception()) is not None:
                        raise exc
            self.handle.finish(self._generation(model))
        except asyncio.CancelledError:
            await self._abort()
            self.handle.fail(EngineError("the RemoteEngine was closed during this request"))
            raise
        except Exception as exc:
            await self._abort()
            self.handle.fail(exc)

    async def _abort(self) -> None:
        """Stop every request and collect every outcome (no "exception never retrieved")."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _plan(self) -> None:
        todo = [s.index for s in self.samples if not s.done]
        if not todo:
            return
        if len(todo) > 1 and self.engine._may_honour_n():
            self._spawn(todo, self.params.seed)
            return
        if len(todo) > 1:
            dropped = [u for u in self.engine.base_urls if not self.engine._honours_n.get(u, True)]
            self.warnings.append(
                f"{', '.join(dropped)} ignored `n` on an earlier request, so the {len(todo)} "
                "samples were drawn as separate requests, each evaluating the prompt again"
                + ("; sample i used seed+i" if self.params.seed is not None else "")
            )
        self._fan_out(todo)

    def _fan_out(self, indices: list[int]) -> None:
        seed = self.params.seed
        for i in indices:
            self._spawn([i], None if seed is None else seed + i)

    def _spawn(self, indices: list[int], seed: int | None) -> None:
        call = _Call(indices=indices, seed=seed)
        self.calls.append(call)
        for i in indices:
            self.samples[i].call = call
        call.task = asyncio.get_running_loop().create_task(self._run_call(call))
        self.tasks.add(call.task)

    def _on_cancel(self, index: int | None) -> None:
        targets = range(self.params.n) if index is None else (index,)
        events: list[SampleEvent] = []
        calls: list[_Call] = []
        for i in targets:
            sample = self.samples[i]
            if sample.done:
                continue
            events.append(self._finalise(sample, "cancelled"))
            if sample.call is not None and sample.call not in calls:
                calls.append(sample.call)
        self.handle.emit(events)
        for call in calls:
            if call.task is not None and all(self.samples[i].done for i in call.indices):
                call.task.cancel()

    # --- one HTTP request ----------------------------------------------------------------------
    async def _run_call(self, call: _Call) -> None:
        engine = self.engine
        attempt = 0
        avoid: str | None = None
        while True:
            waited = time.monotonic()
            async with engine._slots:
                call.queued_s += time.monotonic() - waited
                url = engine._acquire_url(wants_n=call.shared, avoid=avoid)
                call.url = url
                call.sent_at = time.monotonic()
                try:
                    await self._stream(call, url)
                    failure = None
                except _Retry as retry:
                    failure = retry
                finally:
                    engine._release_url(url)
            if failure is None:
                break
            await engine._before_retry(url, attempt, failure)
            attempt += 1
            avoid = url
        self._complete(call, url)

    async def _stream(self, call: _Call, url: str) -> None:
        engine = self.engine
        path, body = wire.build_body(
            self.request,
            model=engine.model,
            n=len(call.indices),
            seed=call.seed,
            openai=wire.is_openai(url),
        )
        response = await engine._open(url, path, body)
        try:
            call.answered = True
            if "text/event-stream" in response.headers.get("content-type", ""):
                await self._read_events(call, url, response)
            else:  # a server that ignored `stream: true` and sent the whole response
                await self._read_whole(call, url, response)
        except httpx.TransportError as exc:
            raise engine._failure(url, exc, call.started, call.streamed_tokens) from exc
        finally:
            await response.aclose()

    async def _read_events(self, call: _Call, url: str, response: httpx.Response) -> None:
        got_done = False
        chunks = response.aiter_text()
        async for event, data in wire.iter_sse(chunks):
            if data.strip() == "[DONE]":
                got_done = True
                break
            self._apply(call, url, _loads(url, data), error_event=event == "error")
        if got_done:
            await drain(chunks)
            return
        unfinished = call.seen - call.finished
        if not call.seen or unfinished:
            raise BackendResponseError(
                f"the stream from {url} ended before the response was complete "
                f"(no [DONE] and {len(unfinished) or len(call.indices)} sample(s) unfinished, "
                f"{call.streamed_tokens} tokens received); the server may have crashed"
            )

    async def _read_whole(self, call: _Call, url: str, response: httpx.Response) -> None:
        self._apply(call, url, _loads(url, (await response.aread()).decode("utf-8", "replace")))

    def _apply(self, call: _Call, url: str, obj: object, *, error_event: bool = False) -> None:
        """Turn one parsed chunk into per-sample state and events."""
        message = (
            wire.error_from_object(obj) if isinstance(obj, dict) and "choices" not in obj else None
        )
        if error_event or message is not None:
            raise BackendResponseError(f"{url} reported an error mid-stream: {message or obj!r}")
        try:
            chunk = wire.parse_chunk(obj, chat=self.chat, top_k=self.params.top_logprobs)
        except wire.WireError as exc:
            raise BackendResponseError(f"{url} sent a malformed response: {exc}") from exc
        if chunk.model and self.reported_model is None:
            self.reported_model = chunk.model
        if chunk.usage is not None:
            call.usage = chunk.usage
        wants_logprobs = self.params.wants_logprobs
        events: list[SampleEvent] = []
        for choice in chunk.choices:
            if choice.index >= len(call.indices):
                raise BackendResponseError(
                    f"{url} returned choice {choice.index} for a request of n={len(call.indices)}"
                )
            call.started = True
            call.seen.add(choice.index)
            tokens = choice.tokens
            call.streamed_tokens += tokens
            if choice.finish_reason is not None:
                call.finished.add(choice.index)
            sample = self.samples[call.indices[choice.index]]
            if sample.done:  # cancelled while the shared stream goes on
                continue
            if choice.text or tokens:
                if self.prompt_s is None:
                    self.prompt_s = time.monotonic() - call.sent_at
                sample.parts.append(choice.text)
                sample.tokens += tokens
                logprobs = choice.logprobs if wants_logprobs else None
                if logprobs:
                    sample.logprobs.extend(logprobs)
                events.append(
                    SampleDelta(
                        index=sample.index, text=choice.text, tokens=tokens, logprobs=logprobs
                    )
                )
            if choice.finish_reason is not None:
                sample.pending_reason = choice.finish_reason
                if call.shared:  # no per-sample usage will follow; finish it now
                    events.append(self._finalise(sample, None))
        self.handle.emit(events)

    def _complete(self, call: _Call, url: str) -> None:
        """After a stream ended normally: finish its samples and draw any the server dropped."""
        events: list[SampleEvent] = []
        for j, i in enumerate(call.indices):
            sample = self.samples[i]
            if sample.done or j not in call.seen:
                continue
            if not call.shared and call.usage is not None:
                sample.tokens = call.usage.completion_tokens
            events.append(self._finalise(sample, None))
        self.handle.emit(events)
        unseen = [j for j in range(len(call.indices)) if j not in call.seen]
        if not call.shared:
            if unseen:
                raise BackendResponseError(f"{url} answered with no choices")
            return
        if not unseen:
            self.engine._honours_n[url] = True
            return
        self.engine._honours_n[url] = False
        missing = [call.indices[j] for j in unseen if not self.samples[call.indices[j]].done]
        got = len(call.indices) - len(unseen)
        drawn = (
            f"the missing {len(missing)} sample(s) were drawn as separate requests"
            + ("; sample i used seed+i" if self.params.seed is not None else "")
            if missing
            else "the missing samples had been cancelled"
        )
        self.warnings.append(
            f"{url} ignored n={len(call.indices)} (returned {got} choice(s)); {drawn}. "
            "Later multi-sample requests to it are split into single-sample requests."
        )
        self._fan_out(missing)

    def _finalise(self, sample: _Sample, reason: FinishReason | None) -> SampleFinished:
        if reason is None:
            reason = wire.map_finish_reason(sample.pending_reason or "stop")
        sample.finish_reason = reason
        sample.latency_s = time.monotonic() - self.t0
        limit = self.params.max_tokens
        if sample.tokens > limit:
            self.warnings.append(
                f"sample {sample.index} has {sample.tokens} tokens, more than max_tokens={limit}: "
                "the server did not enforce the limit"
            )
        return SampleFinished(completion=self._completion(sample))

    def _completion(self, sample: _Sample) -> Completion:
        assert sample.finish_reason is not None
        error = None
        if sample.finish_reason == "error":
            error = f"the server ended this sample with finish_reason={sample.pending_reason!r}"
        return Completion(
            index=sample.index,
            text="".join(sample.parts),
            finish_reason=sample.finish_reason,
            completion_tokens=sample.tokens,
            logprobs=sample.logprobs if self.params.wants_logprobs else None,
            latency_s=sample.latency_s,
            error=error,
        )

    def _generation(self, model: str) -> Generation:
        usage = Usage()
        estimated = 0
        for call in self.calls:
            if call.usage is not None:
                usage = usage + call.usage
            else:
                usage = usage + Usage(completion_tokens=call.streamed_tokens)
                estimated += call.answered
        warnings = list(self.warnings)
        if estimated:
            answered = sum(c.answered for c in self.calls)
            warnings.append(
                f"usage is an estimate: {estimated} of {answered} request(s) reported no usage "
                "(server without stream usage, or the stream was cancelled), so their completion "
                "tokens were counted from the stream and their prompt tokens are not included"
            )
        return Generation(
            model=self.reported_model or model,
            completions=[self._completion(s) for s in self.samples],
            usage=usage,
            timings=Timings(
                queued_s=max((c.queued_s for c in self.calls), default=0.0),
                prompt_s=self.prompt_s,
                total_s=time.monotonic() - self.t0,
            ),
            warnings=warnings,
        )


async def drain(rest: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (usually nothing but the body's end), so httpx returns the
    connection to its pool instead of closing it: a new TCP connection per request costs more
    than the request itself against a fast server. The data is complete, so a server that ends
    the body badly (llama-cpp-python's closes the connection mid-chunk) or keeps it open only
    costs the connection, never the response."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in rest:
                pass


def _loads(url: str, data: str) -> object:
    try:
        return json.loads(data)
    except ValueError as exc:
        preview = data if len(data) <= 200 else data[:200] + "..."
        raise BackendResponseError(f"{url} sent malformed JSON: {preview!r}") from exc
