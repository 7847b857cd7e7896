"""Pass-through to a remote upstream (`ponder.server.relay`): the upstream's answer is relayed as
it came, usage is counted and reported, failures are 502/504 before the answer starts and error
events after, a client that leaves cancels the upstream request, and requests that need the
engine's bookkeeping (n > 1, logprobs, a deadline, a strategy) still get it. The upstream is a
mock transport under a real `RemoteEngine`; `test_server_live.py` runs a real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from ponder.engines.remote import RemoteEngine
from ponder.planning.pricing import TokenPrice
from ponder.server.app import create_app
from ponder.server.config import ServerConfig
from tests.test_server_app import (
    QUESTION,
    asgi_scope,
    eventually,
    leaving_client,
    ledger_line,
    serve,
    sse_events,
    state_of,
)

UPSTREAM = "http://upstream.test/v1"
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
WHOLE: dict[str, Any] = {
    "id": "chatcmpl-upstream-1",
    "object": "chat.completion",
    "created": 7,
    "model": "served-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The answer is 4."},
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}
CHUNK = {"id": "chatcmpl-upstream-2", "object": "chat.completion.chunk", "model": "served-model"}
PIECES = ["The", " answer", " is", " 4."]


def sse_body(*, usage: bool = True, done: bool = True) -> bytes:
    chunks: list[dict[str, Any]] = [
        {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    chunks += [
        {**CHUNK, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in PIECES
    ]
    chunks.append({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append({**CHUNK, "choices": [], "usage": USAGE})
    text = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks)  # sse-starlette's framing
    return (text + ("data: [DONE]\r\n\r\n" if done else "")).encode()


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Upstream:
    """A mock OpenAI-compatible server that records the bodies it was sent."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._handler = handler

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.paths.append(request.url.path)
        if self._handler is not None:
            return await self._handler(request)
        if body.get("stream"):
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=sse_body()
            )
        return httpx.Response(200, json=WHOLE)

    def engine(self) -> RemoteEngine:
        engine = RemoteEngine(
            UPSTREAM, model="served-model", transport=httpx.MockTransport(self), max_retries=1
        )
        engine._backoff_s = 0.001
        return engine


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "served-model", "messages": QUESTION, "max_tokens": 16, **extra}


async def test_a_whole_answer_is_relayed_as_the_upstream_sent_it() -> None:
    upstream = Upstream()
    async with serve(upstream.engine()) as (client, app):
        response = await client.post("/v1/chat/completions", json=chat(seed=3, stop=["\n"]))
        assert response.status_code == 200, response.text
        assert response.json() == WHOLE  # its id, model and fields: nothing rebuilt
        assert response.headers["x-ponder-strategy"] == "none"
        assert response.headers["x-ponder-total-tokens"] == "17"
        text = await client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 4})
        assert text.status_code == 200
        metrics = (await client.get("/metrics")).text
    sent = upstream.bodies[0]
    assert upstream.paths == ["/v1/chat/completions", "/v1/completions"]
    assert sent["stream"] is False and "stream_options" not in sent
    assert sent["model"] == "served-model" and sent["messages"] == QUESTION
    assert (sent["max_tokens"], sent["seed"], sent["stop"]) == (16, 3, ["\n"])
    assert sent["temperature"] == state_of(app).config.default_temperature  # the same defaults
    assert upstream.bodies[1]["prompt"] == "Once"
    assert 'ponder_tokens_total{kind="completion"} 10' in metrics
    assert 'ponder_samples_total{strategy="none"} 2' in metrics
    for counter, value in (("requests", 2), ("prompt_tokens", 24), ("completion_tokens", 10)):
        assert ledger_line(metrics, counter, "passthrough", model="served-model") == value
    assert "ponder_ledger_usd_total{" not in metrics  # a remote model has no default price


async def test_relayed_requests_are_priced_in_the_ledger() -> None:
    upstream = Upstream()
    price = TokenPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
    async with serve(upstream.engine(), prices={"served-model": price}) as (client, _):
        await client.post("/v1/chat/completions", json=chat())
        await client.post("/v1/chat/completions", json=chat(stream=True))
        metrics = (await client.get("/metrics")).text
    assert ledger_line(metrics, "requests", "passthrough", model="served-model") == 2
    assert ledger_line(metrics, "usd", "passthrough", model="served-model") == pytest.approx(
        2 * price.cost(12, 5, 0.0)
    )


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_stream_is_relayed_event_by_event_with_usage_when_asked(
    include_usage: bool,
) -> None:
    upstream = Upstream()
    async with serve(upstream.engine()) as (client, app):
        options = {"include_usage": include_usage}
        response = await client.post(
            "/v1/chat/completions", json=chat(stream=True, stream_options=options)
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data, _ = sse_events(response.text)
        tokens = state_of(app).metrics.tokens
    assert upstream.bodies[0]["stream_options"] == {"include_usage": True}  # always asked for
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data if c["choices"])
    assert text == "The answer is 4." and all(c["id"] == CHUNK["id"] for c in data)
    assert (data[-1].get("usage") == USAGE) is include_usage
    assert [c for c in data if not c["choices"]] == ([data[-1]] if include_usage else [])
    assert tokens.get("completion") == 5 and tokens.get("prompt") == 12  # counted either way


async def test_a_stream_without_usage_gets_the_estimate_the_engine_would_give() -> None:
    async def no_usage(_: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=sse_body(usage=False))

    async with serve(Upstream(no_usage).engine()) as (client, app):
        options = {"include_usage": True}
        response = await client.post(
            "/v1/chat/completions", json=chat(stream=True, stream_options=options)
        )
        data, _ = sse_events(response.text)
        assert state_of(app).metrics.tokens.get("completion") == len(PIECES)
    usage = {"prompt_tokens": 0, "completion_tokens": len(PIECES), "total_tokens": len(PIECES)}
    assert data[-1]["choices"] == [] and data[-1]["usage"] == usage


async def test_requests_that_need_the_engine_are_not_relayed() -> None:
    upstream = Upstream()
    async with serve(upstream.engine()) as (client, _):
        for body, headers in [
            (chat(n=2), {}),
            (chat(logprobs=True, top_logprobs=1), {}),
            (chat(), {"X-Ponder-Deadline-S": "30"}),
            (chat(model="self-consistency:2/served-model"), {}),
        ]:
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["id"] != WHOLE["id"]  # built by ponder, not relayed
    assert all(b["stream"] is True for b in upstream.bodies)  # the engine's own requests


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_failure_before_the_answer_is_a_502_with_the_cause(
    stream: bool,
) -> None:
    async def failing(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "the GPU caught fire"}})

    upstream = Upstream(failing)
    async with serve(upstream.engine()) as (client, app):
        response = await client.post("/v1/chat/completions", json=chat(stream=stream))
        assert response.status_code == 502
        error = response.json()["error"]
        assert "the GPU caught fire" in error["message"] and error["type"] == "upstream_error"
        assert len(upstream.bodies) == 2  # retried once (max_retries=1), as the engine does
        assert state_of(app).metrics.upstream_errors.get() == 1
        assert state_of(app).admission.running == 0


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"error": {"message": "model is loading"}}, "model is loading"),
        ({**WHOLE, "choices": [{**WHOLE["choices"][0], "finish_reason": "abort"}]}, "abort"),
    ],
)
async def test_a_whole_answer_without_a_completion_is_a_502(
    answer: dict[str, Any], message: str
) -> None:
    async def odd(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    async with serve(Upstream(odd).engine()) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502 and message in response.json()["error"]["message"]


class _Broken(httpx.AsyncByteStream):
    """Some events, then the connection drops."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield sse_body(done=False)[:300]
        raise httpx.ReadError("connection reset by peer")


@pytest.mark.parametrize("how", ["broken", "no-done"])
async def test_a_stream_that_breaks_ends_with_an_error_event(how: str) -> None:
    async def breaking(_: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        if how == "broken":
            return httpx.Response(200, headers=headers, stream=_Broken())
        return httpx.Response(200, headers=headers, content=sse_body(done=False))

    async with serve(Upstream(breaking).engine()) as (client, app):
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
        assert response.status_code == 200
        data, _ = sse_events(response.text)
        expected = "connection reset by peer" if how == "broken" else "ended before [DONE]"
        assert expected in data[-1]["error"]["message"]
        assert state_of(app).metrics.upstream_errors.get() == 1
        assert state_of(app).admission.running == 0


async def test_a_client_that_disconnects_cancels_the_upstream_request() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(_: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return httpx.Response(200, json=WHOLE)

    app = create_app(Upstream(slow).engine(), ServerConfig())
    body = json.dumps(chat()).encode()
    gone = asyncio.Event()
    receive, send = leaving_client(body, gone)

    async with app.router.lifespan_context(app):
        call = asyncio.create_task(app(asgi_scope("/v1/chat/completions"), receive, send))  # type: ignore[arg-type]
        await asyncio.wait_for(started.wait(), 5)
        gone.set()
        await asyncio.wait_for(call, 5)
        assert cancelled.is_set()
        assert state_of(app).admission.running == 0
        assert state_of(app).metrics.disconnects.get() == 1


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b'{"model": "served-model", "messages": [', 400, "not valid JSON"),
        (chat(temprature=1), 422, "unknown field 'temprature'"),
        (chat(model="other"), 404, "served: served-model"),
        (chat(presence_penalty=1), 400, "presence_penalty is not supported"),
        (chat(ponder={"strategy": "nope"}), 400, "unknown strategy 'nope'"),
    ],
)
async def test_a_request_that_cannot_be_relayed_gets_the_routes_own_error(
    payload: dict[str, Any] | bytes, status: int, message: str
) -> None:
    upstream = Upstream()
    async with serve(upstream.engine()) as (client, _):
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = await client.post(
            "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert len(upstream.bodies) == 1


async def test_relayed_requests_keep_the_queue_limit_and_the_body_limit() -> None:
    release = asyncio.Event()

    async def held(_: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=WHOLE)

    settings: dict[str, Any] = {"max_running": 1, "max_waiting": 0, "max_body_bytes": 2048}
    async with serve(Upstream(held).engine(), **settings) as (client, app):
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
        await eventually(lambda: state_of(app).admission.running == 1)
        refused = await client.post("/v1/chat/completions", json=chat())
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        release.set()
        assert (await first).status_code == 200

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield json.dumps(chat(messages=[{"role": "user", "content": "x" * 5000}])).encode()

        big = await client.post(
            "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        assert state_of(app).metrics.rejected.get() == 1
