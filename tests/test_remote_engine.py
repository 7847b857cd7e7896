"""RemoteEngine: wire-level behaviour against mock transports (fast, deterministic: retries,
errors, balancing, `n` handling) and end to end against llama-cpp-python's real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ponder.engines import _openai_wire as wire
from ponder.engines.remote import RemoteEngine
from ponder.engines.types import (
    Generation,
    GenerationRequest,
    SampleDelta,
    SampleFinished,
    SamplingParams,
)
from ponder.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    InvalidRequestError,
)
from tests.llama_server import free_port

URL = "http://gpu-1.test:8000/v1"
STANDIN = Path(__file__).resolve().parents[1] / "benchmarks" / "_standin_upstream.py"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


# --- mock server helpers ---------------------------------------------------------------------
def chat_chunk(
    index: int = 0,
    content: str | None = None,
    finish: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"model": "mock-model", "object": "chat.completion.chunk", "choices": [choice]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def sse(*objects: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(o)}\n\n" for o in objects]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def sse_response(*objects: object, done: bool = True) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=sse(*objects, done=done)
    )


def one_sample(text: str, index: int = 0, usage: bool = True) -> httpx.Response:
    """A complete single-choice stream, one chunk per word."""
    words = text.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    chunks: list[object] = [chat_chunk(index, p) for p in pieces]
    chunks.append(chat_chunk(index, finish="stop"))
    if usage:
        chunks.append(usage_chunk(5, len(pieces)))
    return sse_response(*chunks)


def body_of(request: httpx.Request) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.content)
    return data


def make_engine(handler: Handler, urls: str | list[str] = URL, **kwargs: Any) -> RemoteEngine:
    kwargs.setdefault("model", "mock-model")
    engine = RemoteEngine(urls, transport=httpx.MockTransport(handler), **kwargs)
    engine._backoff_s = 0.001  # keep retry tests fast
    return engine


def chat(**params: Any) -> GenerationRequest:
    return GenerationRequest.chat([{"role": "user", "content": "Say hi."}], **params)


def raw(prompt: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, params=SamplingParams(**params))


# --- construction and request bodies ---------------------------------------------------------
def test_base_url_rule() -> None:
    assert wire.normalise_base_url("http://h:8000") == "http://h:8000/v1"
    assert wire.normalise_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert wire.normalise_base_url("https://host/api/v1") == "https://host/api/v1"
    for bad in ("localhost:8000/v1", "127.0.0.1:8080", "ftp://h/v1", ""):
        with pytest.raises(InvalidRequestError):
            RemoteEngine(bad)
    with pytest.raises(InvalidRequestError):
        RemoteEngine([])


async def test_api_key_from_env_is_sent_and_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    seen: list[str | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return one_sample("hi")

    async with make_engine(handler, api_key_env="MY_KEY") as engine:
        await engine.generate(chat(max_tokens=4))
        assert "sk-secret" not in repr(engine)
    assert seen == ["Bearer sk-secret-123"]


def test_request_bodies() -> None:
    req = chat(temperature=0.5, top_k=40, max_tokens=7, logprobs=True, top_logprobs=2, seed=3)
    path, body = wire.build_body(req, model="m", n=1, seed=3, openai=False)
    assert path == "/chat/completions"
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body
    assert body["top_k"] == 40 and "min_p" not in body and "top_p" not in body and "n" not in body
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["seed"] == 3
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "ignore_eos" not in body
    _, body = wire.build_body(chat(ignore_eos=True), model="m", n=1, seed=None, openai=False)
    assert body["ignore_eos"] is True
    _, body = wire.build_body(req, model="m", n=1, seed=None, openai=True)
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body
    path, body = wire.build_body(
        raw("1, 2,", top_logprobs=4), model="m", n=2, seed=None, openai=False
    )
    assert path == "/completions" and body["logprobs"] == 4 and body["n"] == 2
    assert body["prompt"] == "1, 2,"


def test_completion_logprobs_parsing() -> None:
    raw = {
        "tokens": [" 3", ","],
        "token_logprobs": [-0.1, -0.5],
        "top_logprobs": [{" 3": -0.1, " 4": -2.0, " 5": -3.0}, {",": -0.5}],
    }
    parsed = wire.parse_completion_logprobs(raw, top_k=2)
    assert parsed is not None and [t.token for t in parsed] == [" 3", ","]
    assert [a.token for a in parsed[0].top_logprobs] == [" 3", " 4"]
    with pytest.raises(wire.WireError):
        wire.parse_completion_logprobs({"tokens": ["a"], "token_logprobs": []}, top_k=1)


def test_sse_parser_takes_text_as_it_arrives() -> None:
    parser = wire.SseParser()
    stream = 'data: {"a": 1}\r\n\r\n: a comment\n\nevent: error\ndata: {"b":\ndata: "x\u2028y"}\n\n'
    events = [e for i in range(0, len(stream), 7) for e in parser.feed(stream[i : i + 7])]
    assert events == [("message", '{"a": 1}'), ("error", '{"b":\n"x\u2028y"}')]
    assert parser.feed("data: [DONE]") == [] and parser.close() == [("message", "[DONE]")]


async def test_relay_passes_the_upstream_answer_on_with_retries() -> None:
    calls: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(body_of(request))
        if len(calls) == 1:
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        return httpx.Response(200, json={"choices": [], "usage": {"completion_tokens": 2}})

    async with (
        make_engine(handler) as engine,
        engine.relay(chat(max_tokens=4, seed=2), stream=False) as answer,
    ):
        assert json.loads(await answer.read())["usage"]["completion_tokens"] == 2
    assert answer.url == URL
    assert len(calls) == 2 and calls[1] == calls[0]
    assert calls[0]["stream"] is False and calls[0]["seed"] == 2 and "n" not in calls[0]


async def test_relay_does_not_retry_a_refused_request() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "top_k is not supported"}})

    async with make_engine(handler) as engine:
        with pytest.raises(BackendResponseError, match="top_k is not supported"):
            async with engine.relay(chat(max_tokens=4), stream=True):
                pass
    assert calls == 1


@pytest.fixture(scope="module")
def standin_url() -> Iterator[str]:
    """The load test's stand-in upstream: a real socket, counting the connections it accepts."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_connections_are_kept_for_the_next_request(standin_url: str) -> None:
    stats = standin_url.removesuffix("/v1") + "/stats"
    async with httpx.AsyncClient() as http:
        before = (await http.get(stats)).json()
        async with RemoteEngine(standin_url, model="standin") as engine:
            for _ in range(3):
                result = await engine.generate(chat(max_tokens=4))
                assert result.completions[0].text == "The answer is 4."
            for stream in (False, True):
                async with engine.relay(chat(max_tokens=4), stream=stream) as answer:
                    if stream:
                        async for text in answer.chunks():
                            if "[DONE]" in text:
                                break
                        await answer.drain()
                    else:
                        assert b"The answer is 4." in await answer.read()
        after = (await http.get(stats)).json()
    assert after["completions"] - before["completions"] == 5
    assert after["connections"] - before["connections"] == 1


async def test_a_refused_connection_is_unavailable_not_a_timeout_on_either_transport() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    for transport in (None, httpx.AsyncHTTPTransport()):
        engine = RemoteEngine(url, model="m", max_retries=0, transport=transport)
        async with engine:
            with pytest.raises(BackendUnavailableError, match="gave up after 1") as info:
                await engine.generate(chat(max_tokens=4))
        assert not isinstance(info.value, BackendTimeoutError)


def test_proxies_from_the_environment_are_chosen_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from ponder.engines._aiohttp_transport import AiohttpTransport

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "inside.test")
    engine = RemoteEngine(["http://a.test/v1", "http://b.test/v1", "http://inside.test/v1"])
    a, b, inside = (engine._transports[u] for u in engine.base_urls)
    assert isinstance(a, AiohttpTransport) and isinstance(inside, AiohttpTransport)
    assert a is b and a._proxy == "http://proxy.test:3128"
    assert inside is not a and inside._proxy is None


async def test_model_discovered_from_models_endpoint() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "served-model"}]})
        assert body_of(request)["model"] == "served-model"
        return one_sample("ok")

    async with make_engine(handler, model=None) as engine:
        assert engine.model == ""
        result = await engine.generate(chat(max_tokens=4))
        assert engine.model == "served-model"
        assert result.completions[0].text == "ok"


# --- failures and retries --------------------------------------------------------------------
async def test_retries_503_then_succeeds() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        return one_sample("hello there")

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(max_tokens=8))
    assert calls == 2
    assert result.completions[0].text == "hello there"
    assert result.usage.completion_tokens == 2 and result.usage.prompt_tokens == 5
    assert result.warnings == []


async def test_429_respects_retry_after() -> None:
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return httpx.Response(429, headers={"retry-after": "1"}, json={"error": "slow down"})
        return one_sample("fine")

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(max_tokens=4))
    assert result.completions[0].text == "fine"
    assert len(times) == 2 and times[1] - times[0] >= 0.95


async def test_persistent_500_gives_up_after_max_retries() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, json={"error": {"message": "CUDA out of memory"}})

    async with make_engine(handler, max_retries=2) as engine:
        with pytest.raises(BackendUnavailableError, match="CUDA out of memory") as info:
            await engine.generate(chat(max_tokens=4))
    assert calls == 3
    assert URL in str(info.value) and "3 attempt" in str(info.value)


async def test_400_is_not_retried_and_keeps_the_server_message() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "top_k is not supported"}})

    async with make_engine(handler) as engine:
        with pytest.raises(BackendResponseError, match="top_k is not supported") as info:
            await engine.generate(chat(max_tokens=4, top_k=5))
    assert info.value.status_code == 400 and calls == 1


async def test_connection_refused_fails_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = RemoteEngine(url, model="m", max_retries=2, timeout_s=5)
    engine._backoff_s = 0.01
    started = time.monotonic()
    async with engine:
        with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1") as info:
            await engine.generate(chat(max_tokens=4))
    assert not isinstance(info.value, BackendTimeoutError)
    assert time.monotonic() - started < 5


async def test_stream_cut_without_done_is_a_clear_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(chat_chunk(0, "partial"), chat_chunk(0, " text"), done=False)

    async with make_engine(handler) as engine:
        handle = engine.start(chat(max_tokens=16))
        with pytest.raises(BackendResponseError, match="ended before the response was complete"):
            await asyncio.wait_for(handle.result(), 5)
        assert URL in str(handle._result.exception())


async def test_stream_broken_mid_way_is_not_retried() -> None:
    calls = 0

    async def broken() -> AsyncIterator[bytes]:
        yield sse(chat_chunk(0, "half"), done=False)
        raise httpx.ReadError("connection reset by peer")

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=broken())

    async with make_engine(handler) as engine:
        with pytest.raises(BackendUnavailableError, match="broke after 1 tokens"):
            await asyncio.wait_for(engine.generate(chat(max_tokens=16)), 5)
    assert calls == 1


async def test_error_event_mid_stream() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(chat_chunk(0, "a"), {"error": {"message": "engine died"}})

    async with make_engine(handler) as engine:
        with pytest.raises(BackendResponseError, match="engine died"):
            await engine.generate(chat(max_tokens=16))


# --- balancing and concurrency ---------------------------------------------------------------
async def test_least_outstanding_balancing() -> None:
    urls = ["http://a.test/v1", "http://b.test/v1"]
    hosts: list[str] = []
    gates: list[asyncio.Event] = []
    arrived = asyncio.Condition()

    async def handler(request: httpx.Request) -> httpx.Response:
        gate = asyncio.Event()
        async with arrived:
            hosts.append(request.url.host)
            gates.append(gate)
            arrived.notify_all()
        await gate.wait()
        return one_sample("x")

    async def dispatched(count: int) -> None:
        async with arrived:
            await arrived.wait_for(lambda: len(hosts) >= count)

    async with make_engine(handler, urls) as engine:
        first = engine.start(chat(max_tokens=2))
        await dispatched(1)
        second = engine.start(chat(max_tokens=2))
        await dispatched(2)
        assert hosts == ["a.test", "b.test"]  # a is busy, so b
        gates[1].set()
        await second.result()  # b is free again, a still busy
        third = engine.start(chat(max_tokens=2))
        await dispatched(3)
        fourth = engine.start(chat(max_tokens=2))  # one each in flight: a tie, a's turn
        await dispatched(4)
        assert hosts == ["a.test", "b.test", "b.test", "a.test"]
        for gate in gates:
            gate.set()
        await asyncio.gather(first.result(), third.result(), fourth.result())


async def test_max_concurrency_bounds_in_flight_requests() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return one_sample("x")

    async with make_engine(handler, max_concurrency=2) as engine:
        results = await asyncio.gather(*(engine.generate(chat(max_tokens=2)) for _ in range(6)))
    assert peak == 2
    assert max(r.timings.queued_s for r in results) > 0.01


# --- n, usage and length ---------------------------------------------------------------------
async def test_server_that_honours_n_gets_one_request() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(body_of(request))
        chunks: list[object] = []
        for word in ("a", "b"):
            chunks += [chat_chunk(i, f"{word}{i}") for i in range(3)]
        chunks += [chat_chunk(i, finish="stop") for i in range(3)]
        chunks.append(usage_chunk(7, 6))
        return sse_response(*chunks)

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(n=3, max_tokens=4, seed=9))
    assert len(bodies) == 1 and bodies[0]["n"] == 3 and bodies[0]["seed"] == 9
    assert [c.text for c in result.completions] == ["a0b0", "a1b1", "a2b2"]
    assert [c.completion_tokens for c in result.completions] == [2, 2, 2]
    assert result.usage.completion_tokens == 6 and result.usage.prompt_tokens == 7
    assert result.warnings == []


async def test_server_that_drops_n_is_fanned_out_and_remembered() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        bodies.append(body)
        return one_sample(f"seed {body.get('seed')}")

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(n=3, max_tokens=4, seed=10))
        assert [c.text for c in result.completions] == ["seed 10", "seed 11", "seed 12"]
        assert [b.get("n") for b in bodies] == [3, None, None]
        assert any("ignored n=3" in w for w in result.warnings)
        assert result.usage.completion_tokens == 6

        bodies.clear()
        again = await engine.generate(chat(n=2, max_tokens=4, seed=10))
        assert sorted(b["seed"] for b in bodies) == [10, 11]
        assert all("n" not in b for b in bodies)
        assert [c.text for c in again.completions] == ["seed 10", "seed 11"]
        assert any("ignored `n` on an earlier request" in w for w in again.warnings)


async def test_missing_usage_is_estimated_and_said() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return one_sample("three words here", usage=False)

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(max_tokens=8))
    assert result.usage.completion_tokens == 3 == result.completions[0].completion_tokens
    assert any("estimate" in w for w in result.warnings)


async def test_longer_than_max_tokens_is_warned() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return one_sample("one two three four five six")

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(max_tokens=3))
    assert result.completions[0].completion_tokens == 6
    assert any("more than max_tokens=3" in w for w in result.warnings)


async def test_non_streaming_json_answer_is_accepted() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "message": {"content": "whole"}, "finish_reason": "length"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            },
        )

    async with make_engine(handler) as engine:
        result = await engine.generate(chat(max_tokens=4))
    assert result.completions[0].text == "whole"
    assert result.completions[0].finish_reason == "length"
    assert result.usage.completion_tokens == 4


async def test_cancel_one_sample_of_a_shared_stream() -> None:
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield sse(chat_chunk(0, "a"), chat_chunk(1, "b"), done=False)
        await release.wait()
        yield sse(
            chat_chunk(0, " more"),
            chat_chunk(1, " more"),
            chat_chunk(0, finish="stop"),
            chat_chunk(1, finish="stop"),
            usage_chunk(4, 4),
        )

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    async with make_engine(handler) as engine:
        handle = engine.start(chat(n=2, max_tokens=4))
        async for event in handle.events():
            if isinstance(event, SampleDelta) and event.index == 0:
                handle.cancel(0)
                release.set()
        result = await handle.result()
    first, second = result.completions
    assert (first.finish_reason, first.text, first.completion_tokens) == ("cancelled", "a", 1)
    assert (second.finish_reason, second.text) == ("stop", "b more")
    assert result.usage.completion_tokens == 4  # the server's count: all tokens were paid for


async def test_cancel_all_stops_requests_and_keeps_tokens() -> None:
    async def endless() -> AsyncIterator[bytes]:
        for i in range(1000):
            yield sse(chat_chunk(0, f"t{i} "), done=False)
            await asyncio.sleep(0.005)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=endless())

    async with make_engine(handler) as engine:
        handle = engine.start(chat(max_tokens=1000))
        seen = 0
        async for event in handle.events():
            if isinstance(event, SampleDelta):
                seen += 1
                if seen == 3:
                    handle.cancel()
        result = await asyncio.wait_for(handle.result(), 2)
    completion = result.completions[0]
    assert completion.finish_reason == "cancelled" and completion.completion_tokens >= 3
    assert result.usage.completion_tokens >= completion.completion_tokens


# --- against llama-cpp-python's real server --------------------------------------------------
@pytest.fixture
async def real_engine(server_url: str) -> AsyncIterator[RemoteEngine]:
    async with RemoteEngine(server_url, timeout_s=60, max_retries=1) as engine:
        yield engine


def texts(result: Generation) -> list[str]:
    return [c.text for c in result.completions]


@pytest.mark.model
async def test_real_chat_n3_is_fanned_out(real_engine: RemoteEngine) -> None:
    result = await real_engine.generate(chat(n=3, max_tokens=8, seed=1))
    assert real_engine.model == "smollm2"  # discovered from /v1/models
    assert [c.index for c in result.completions] == [0, 1, 2]
    # a sample may legitimately be empty (the model can stop at once); none may be missing
    assert all(c.finish_reason in ("stop", "length") for c in result.completions)
    assert sum(c.completion_tokens for c in result.completions) > 0
    assert any("ignored n=3" in w for w in result.warnings)
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.completions)
    assert any("estimate" in w for w in result.warnings)  # this server streams no usage
    assert result.timings.total_s >= max(c.latency_s for c in result.completions) > 0


@pytest.mark.model
async def test_real_raw_prompt_with_stop_string(real_engine: RemoteEngine) -> None:
    prompt = "1, 2, 3, 4, 5,"
    plain = await real_engine.generate(raw(prompt, temperature=0.0, max_tokens=8))
    assert plain.completions[0].text.startswith(" 6, 7")
    assert plain.completions[0].finish_reason == "length"
    stopped = await real_engine.generate(raw(prompt, temperature=0.0, max_tokens=16, stop=(" 8",)))
    completion = stopped.completions[0]
    assert completion.finish_reason == "stop"
    assert completion.text.startswith(" 6, 7") and " 8" not in completion.text


@pytest.mark.model
async def test_real_logprobs_chat_and_completion(real_engine: RemoteEngine) -> None:
    for request in (
        chat(max_tokens=6, temperature=0.0, top_logprobs=3),
        raw("The sky is", max_tokens=6, temperature=0.0, top_logprobs=3),
    ):
        completion = (await real_engine.generate(request)).completions[0]
        assert completion.logprobs is not None
        assert len(completion.logprobs) == completion.completion_tokens > 0
        assert "".join(t.token for t in completion.logprobs) == completion.text
        for token in completion.logprobs:
            assert token.logprob <= 0 and len(token.top_logprobs) == 3
            assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
            # not necessarily equal: the server's default repeat penalty bends the choice
            assert token.logprob <= token.top_logprobs[0].logprob + 1e-6


@pytest.mark.model
async def test_real_streaming_deltas_match_final_text(real_engine: RemoteEngine) -> None:
    handle = real_engine.start(chat(n=2, max_tokens=10, seed=5))
    pieces: dict[int, list[str]] = {0: [], 1: []}
    finished: dict[int, SampleFinished] = {}
    tokens = {0: 0, 1: 0}
    async for event in handle.events():
        if isinstance(event, SampleDelta):
            assert event.index not in finished
            pieces[event.index].append(event.text)
            tokens[event.index] += event.tokens
        else:
            finished[event.completion.index] = event
    result = await handle.result()
    assert sorted(finished) == [0, 1]
    for completion in result.completions:
        assert "".join(pieces[completion.index]) == completion.text
        assert tokens[completion.index] == completion.completion_tokens
        assert finished[completion.index].completion == completion


@pytest.mark.model
async def test_real_seed_is_reproducible(real_engine: RemoteEngine) -> None:
    request = chat(max_tokens=12, temperature=0.8, seed=1234)
    first = await real_engine.generate(request)
    second = await real_engine.generate(request)
    assert texts(first) == texts(second) and first.completions[0].text


@pytest.mark.model
async def test_real_cancel_one_sample_mid_stream(real_engine: RemoteEngine) -> None:
    request = GenerationRequest.chat(
        [{"role": "user", "content": "Write a long story about a dragon."}],
        n=2,
        max_tokens=16,
        temperature=0.0,
    )
    handle = real_engine.start(request)
    after_cancel = 0
    cancelled = False
    async for event in handle.events():
        if isinstance(event, SampleDelta) and event.index == 0:
            if cancelled:
                after_cancel += 1
            else:
                handle.cancel(0)
                cancelled = True
    result = await handle.result()
    first, second = result.completions
    assert after_cancel == 0
    assert first.finish_reason == "cancelled" and first.completion_tokens >= 1 and first.text
    assert second.finish_reason in ("stop", "length") and second.completion_tokens > 0
    assert result.usage.completion_tokens >= first.completion_tokens + second.completion_tokens
