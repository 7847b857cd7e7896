"""The HTTP app: OpenAI-compatible routes over ponder's engines and strategies.

`create_app(engines, config, escalate=...)` takes the engines to serve (instances, or a function
that opens them, called at startup), the server's settings and, optionally, the larger model a
`cascade` escalates to (given to every strategy run as `engines={"large": ...}`). Engines are
opened and their model names resolved at startup, and closed at shutdown; a fast stand-in engine
(tests, the load test) plugs in the same way as the embedded or remote ones.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /v1/models/{model}``, ``GET /health`` (never authenticated, for load balancers),
``GET /metrics`` (Prometheus) and the OpenAPI schema at ``/openapi.json`` (``/docs`` to browse).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ponder import __version__
from ponder.engines.base import Engine
from ponder.errors import PonderError
from ponder.server.auth import check_key
from ponder.server.config import ServerConfig
from ponder.server.errors import ApiError, from_ponder_error
from ponder.server.execution import Meter, answer_text, chosen_candidate
from ponder.server.relay import relay_engine, relay_stream, relay_whole
from ponder.server.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    TextCompletion,
)
from ponder.server.service import ClientGone, Job, ServerState, until_disconnect
from ponder.server.streaming import passthrough_stream, strategy_stream
from ponder.server.wire import (
    Kind,
    choice,
    envelope,
    finish_reason,
    passthrough_body,
    ponder_headers,
    ponder_info,
    usage_out,
)
from ponder.strategies.cascade import LARGE
from ponder.strategies.registry import strategies

log = logging.getLogger("ponder.server")

EngineSource = Engine | Sequence[Engine] | Callable[[], Engine | Sequence[Engine]]
"""Engine instances, or a function that opens them (called at startup)."""

PROTECTED = ("/v1/", "/metrics")
OBSERVED = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON, an unknown strategy or parameter, a bad or unreachable budget",
        401: "missing or wrong API key",
        404: "a model that is not served",
        413: "request body over the size limit",
        422: "a field with the wrong type or out of range",
        429: "queue full; retry after Retry-After seconds",
        502: "the engine failed",
        504: "the engine did not answer in time",
    }.items()
}


def create_app(
    engines: EngineSource,
    config: ServerConfig | None = None,
    *,
    escalate: Engine | Callable[[], Engine] | None = None,
) -> FastAPI:
    """The app, ready for uvicorn (or httpx's ASGI transport, with its lifespan entered)."""
    settings = config or ServerConfig()
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        opened = await _open(engines)
        try:
            for engine in opened:
                state.serve(engine)
            if escalate is not None:
                (large,) = await _open(escalate)
                opened.append(large)
                state.add_role(LARGE, large)
                log.info("cascades escalate to %s", large.model)
            log.info("serving %s", ", ".join(state.engines))
            yield
        finally:
            state.engines.clear()
            state.roles.clear()
            await asyncio.gather(*(e.aclose() for e in opened), return_exceptions=True)

    app = FastAPI(
        title="ponder",
        version=__version__,
        summary="OpenAI-compatible chat and text completions with inference-time scaling.",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ponder = state
    app.add_middleware(_Relay, state=state)
    app.add_middleware(_Guard, state=state)
    app.add_middleware(_Observe, state=state)
    _add_error_handlers(app, state)
    _add_routes(app, state)
    return app


async def _open(source: EngineSource) -> list[Engine]:
    if isinstance(source, Engine):
        engines: list[Engine] = [source]
    elif callable(source):
        made = source()
        engines = [made] if isinstance(made, Engine) else list(made)
    else:
        engines = list(source)
    if not engines:
        raise ValueError("give at least one engine to serve")
    try:
        for engine in engines:
            resolve = getattr(engine, "resolve_model", None)  # a remote engine may discover it
            if callable(resolve):
                await resolve()
    except BaseException:
        await asyncio.gather(*(e.aclose() for e in engines), return_exceptions=True)
        raise
    return engines


_DESCRIPTION = """\
Choose a strategy in the model name (`self-consistency:8/MODEL`), in the body's `ponder` field
(`{"strategy": ..., "params": {...}, "budget": {"samples": 8, "tokens": 4000, "seconds": "10s",
"usd": "$0.01"}}`) or in `X-Ponder-Strategy` / `X-Ponder-Params` / `X-Ponder-Budget`
(`samples=8,seconds=10`) / `X-Ponder-Deadline-S` headers (precedence: header > body > model name >
server default). Without one, the request passes straight through to the engine. Responses carry
complete usage (every sample drawn, cancelled ones included), a `ponder` field with the votes,
per-candidate usage, the budget limit that stopped the strategy (`stopped_by`) and its cost in
dollars when the model has a price, and `X-Ponder-*` headers. Streams report progress as SSE
comments (`: ponder-progress {...}`). `/metrics` adds the ledger's counters (`ponder_ledger_*`:
tokens, samples, seconds and dollars by model and strategy).
"""


# --- middleware ---------------------------------------------------------------------------------


class _Observe:
    """Outermost: a request id on every response, one debug log line per request (method, path,
    status, duration: never headers or bodies, so keys cannot leak) and the request counters."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req-" + secrets.token_hex(8)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            route = path if path in OBSERVED else "other"
            metrics = self.state.metrics
            metrics.requests.inc(route, str(status))
            if route.endswith("completions"):
                metrics.duration.observe(elapsed, route)
            # Debug, not info: at a few hundred requests a second the line costs a few % of CPU.
            log.debug("%s %s %d %.3fs %s", scope["method"], path, status, elapsed, rid)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read; an HTTPException so FastAPI passes it through unchanged."""


class _Guard:
    """Before any body is read: the API key (for /v1/ and /metrics) and the body size limit
    (the declared Content-Length, then the bytes actually received, for chunked bodies)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        config = self.state.config
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["path"].startswith(PROTECTED):
                check_key(headers, config.api_keys)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > config.max_body_bytes:
                raise _too_large(config.max_body_bytes)
        except ApiError as exc:
            await _error_response(exc)(scope, receive, send)
            return
        limit = config.max_body_bytes
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(413, _too_large(limit).message)
            return message

        await self.app(scope, limited, send)


_RELAYABLE: dict[str, tuple[type[ChatCompletionRequest | CompletionRequest], Kind]] = {
    "/v1/chat/completions": (ChatCompletionRequest, "chat"),
    "/v1/completions": (CompletionRequest, "text"),
}


class _Relay:
    """Innermost: a completion that will be relayed to a remote upstream as it is (see
    `ponder.server.relay`) is planned and answered here, before FastAPI's routing, dependency
    and exception layers, which cost about as much CPU as the relay itself. Every other request,
    and any this layer would have to refuse (invalid, unknown model...), goes on to its FastAPI
    route with its body replayed, so validation errors, the OpenAPI schema and the engine paths
    each have one implementation, there."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _RELAYABLE.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or not self.state.relays:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left before it finished sending
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except _BodyTooLarge:
            await _error_response(_too_large(self.state.config.max_body_bytes))(
                scope, receive, send
            )
            return
        job = self._relayable(bytes(body), scope, *route)
        if job is None:
            await self.app(scope, _replay(bytes(body), receive), send)
            return
        try:
            response = await _respond(self.state, job, receive)
        except Exception as exc:
            answer = _answer_error(self.state, exc)
            if answer is None:
                raise
            response = answer
        await response(scope, receive, send)

    def _relayable(
        self,
        body: bytes,
        scope: Scope,
        model: type[ChatCompletionRequest | CompletionRequest],
        kind: Kind,
    ) -> Job | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return None
        try:
            job = self.state.plan(model.model_validate_json(body), headers, kind)
        except (ValidationError, ApiError, PonderError):
            return None
        return job if relay_engine(job) is not None else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body, already read, delivered again first."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body exceeds this server's limit of {limit} bytes",
        code="request_too_large",
    )


# --- errors ------------------------------------------------------------------------------------


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _answer_error(state: ServerState, exc: Exception) -> Response | None:
    """The response (and the metrics) for the errors a completion's work raises: refusals,
    engine failures, a client that left. None for anything else."""
    if isinstance(exc, ApiError):
        if exc.status == 429:
            state.metrics.rejected.inc()
        return _error_response(exc)
    if isinstance(exc, PonderError):
        error = from_ponder_error(exc)
        if error.status in (502, 504):
            state.metrics.upstream_errors.inc()
            log.warning("engine failure: %s", error.message)
        return _error_response(error)
    if isinstance(exc, ClientGone):
        state.metrics.disconnects.inc()
        return Response(status_code=499)  # nobody reads it: the client has gone
    return None


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    async def work_error(_: Request, exc: Exception) -> Response:
        response = _answer_error(state, exc)
        assert response is not None
        return response

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error_response(_describe_validation(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 413:
            return _error_response(ApiError(413, str(exc.detail), code="request_too_large"))
        message = {
            404: f"no route {request.method} {request.url.path}",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return _error_response(ApiError(exc.status_code, message))

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return _error_response(ApiError(500, "internal server error", type="server_error"))

    app.add_exception_handler(ApiError, work_error)
    app.add_exception_handler(PonderError, work_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientGone, work_error)
    app.add_exception_handler(Exception, unexpected)


def _describe_validation(exc: RequestValidationError) -> ApiError:
    """Malformed JSON is a 400; a well-formed body with a bad field is a 422 naming the field."""
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        where = detail.get("ctx", {}).get("error", "")
        return ApiError(
            400, f"the body is not valid JSON: {where}".rstrip(": "), code="invalid_json"
        )
    if any(isinstance(e.get("input"), bytes) and e.get("loc") == ("body",) for e in errors):
        return ApiError(
            400,
            "the body must be a JSON object sent with 'Content-Type: application/json'",
            code="invalid_json",
        )
    problems = []
    first_param = None
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        param = ".".join(loc) or "body"
        first_param = first_param or param
        if e.get("type") == "extra_forbidden":
            problems.append(f"unknown field {param!r}")
        elif e.get("type") == "missing":
            problems.append(f"{param}: required")
        else:
            problems.append(f"{param}: {e.get('msg')} (got {_short(e.get('input'))})")
    return ApiError(422, "invalid request: " + "; ".join(problems), param=first_param)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- routes ------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, state: ServerState) -> None:
    bearer = HTTPBearer(auto_error=False, description="an API key, when the server has any")
    secured = [Security(bearer)]  # documents the scheme; `_Guard` does the checking

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            **ERRORS,
            200: {"content": {"text/event-stream": {}}, "description": "a completion or a stream"},
        },
        dependencies=secured,
        tags=["completions"],
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """A chat completion, run through the chosen strategy (or passed straight through)."""
        return await _complete(state, body, request, "chat")

    @app.post(
        "/v1/completions",
        response_model=TextCompletion,
        responses={
            **ERRORS,
            200: {"content": {"text/event-stream": {}}, "description": "a completion or a stream"},
        },
        dependencies=secured,
        tags=["completions"],
    )
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """A text completion. With a strategy, the prompt is the question (as in `ponder ask`)."""
        return await _complete(state, body, request, "text")

    @app.get("/v1/models", response_model=ModelList, dependencies=secured, tags=["models"])
    async def list_models() -> ModelList:
        """The served models; any can be prefixed with a strategy ('best-of-n:4/MODEL')."""
        return ModelList(
            data=[_card(state, name) for name in state.engines], strategies=list(strategies())
        )

    @app.get(
        "/v1/models/{model:path}",
        response_model=ModelCard,
        responses={404: ERRORS[404]},
        dependencies=secured,
        tags=["models"],
    )
    async def get_model(model: str) -> ModelCard:
        state.engine_for(model)
        return _card(state, model)

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Up, with the served models and the queue's state. Never needs a key."""
        admission = state.admission
        return Health(
            models=list(state.engines), running=admission.running, waiting=admission.waiting
        )

    @app.get(
        "/metrics", response_class=PlainTextResponse, dependencies=secured, tags=["operations"]
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics (text exposition format 0.0.4)."""
        return PlainTextResponse(state.render_metrics(), media_type="text/plain; version=0.0.4")


def _card(state: ServerState, name: str) -> ModelCard:
    return ModelCard(id=name, created=state.started)


async def _complete(
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    request: Request,
    kind: Kind,
) -> Response:
    headers = {k.lower(): v for k, v in request.headers.items()}
    job = state.plan(body, headers, kind)  # every 4xx is raised here, before any queueing
    return await _respond(state, job, request.receive)


async def _respond(state: ServerState, job: Job, receive: Receive) -> Response:
    """Queue for a slot, then do the planned work and build its response."""
    kind = job.kind
    arrived = time.monotonic()
    admission = state.admission
    if admission.free:  # no wait, so no need to watch for the client leaving meanwhile
        slot = await admission.enter()
    else:
        slot = await until_disconnect(receive, admission.enter())
    queued = time.monotonic() - arrived
    streaming = False
    try:
        relay = relay_engine(job)
        if relay is not None:
            if job.stream:
                response = await relay_stream(state, job, relay, slot, receive)
                streaming = True  # the stream now owns the slot
                return response
            return await relay_whole(state, job, relay, receive)
        if job.stream:
            if job.selection.passthrough:
                response = await passthrough_stream(state, job, slot, receive)
            else:
                response = await strategy_stream(state, job, slot, queued, receive)
            streaming = True  # the stream now owns the slot
            return response
        if job.selection.passthrough:
            started = time.perf_counter()
            generation = await until_disconnect(receive, state.run_passthrough(job))
            state.record_passthrough(job, generation.usage, started)
            return JSONResponse(
                passthrough_body(kind, job.id, job.created, job.model, generation),
                headers=ponder_headers(None, generation.usage, job.request.params.n),
            )
        outcome = await until_disconnect(receive, state.run_strategy(job, Meter()))
        result = outcome.result
        state.record_run(outcome)
        info = ponder_info(outcome, job.selection, queued)
        chosen = chosen_candidate(result)
        reason = finish_reason(chosen.finish_reason if chosen else "stop")
        payload = envelope(kind, job.id, job.created, job.model, chunk=False)
        payload["choices"] = [choice(kind, 0, answer_text(result), reason, None)]
        payload["usage"] = usage_out(result.usage).model_dump()
        payload["ponder"] = info.model_dump(mode="json")
        return JSONResponse(payload, headers=ponder_headers(info, result.usage, result.samples))
    finally:
        if not streaming:
            slot.release()
