"""The HTTP app end to end in-process (httpx's ASGI transport, lifespan entered) over scripted
engines: every route, strategy choice and pass-through, streaming, the queue, disconnects,
deadlines, authentication, limits and error bodies. `test_server_live.py` covers a real server
with the official client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import Generation, GenerationRequest, Message
from ponder.errors import BackendTimeoutError, BackendUnavailableError, ContextOverflowError
from ponder.planning.cascade import fit_cascade
from ponder.planning.policy import PolicyError, save_policy
from ponder.planning.pricing import PriceError, TokenPrice
from ponder.server.app import create_app
from ponder.server.config import ServerConfig
from ponder.server.service import ServerState
from tests.plan_runs import Kind, plan_run, replay_data
from tests.scripted_engine import ScriptedEngine

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
VOTES = ["so \\boxed{4}", "maybe \\boxed{5}", "surely \\boxed{4}"]
SMALL_EASY = Kind([0, 0, 0, 0], 50, 9.0)
SMALL_HARD = Kind([1, 2, 3, 4], 50, 9.0)
LARGE_RIGHT = Kind([0, 0, 0, 0], 1000, 9.0)
"""Fitting data for a cascade policy (as in test_cascade.py)."""


class SpyEngine(Engine):
    """Forwards to a scripted engine, keeping every handle, the cancels it received and the
    most requests it ever had in flight at once."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model = inner.model
        self.capabilities = inner.capabilities
        self.handles: list[GenerationHandle] = []
        self.cancels: list[int | None] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._watchers: set[asyncio.Task[None]] = set()

    def start(self, request: GenerationRequest) -> GenerationHandle:
        handle = self.inner.start(request)
        original = handle.cancel

        def cancel(index: int | None = None) -> None:
            self.cancels.append(index)
            original(index)

        setattr(handle, "cancel", cancel)  # noqa: B010 - spying on one instance's method
        self.handles.append(handle)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        task = asyncio.get_running_loop().create_task(self._watch(handle))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return handle

    async def _watch(self, handle: GenerationHandle) -> None:
        try:
            await handle.result()
        except Exception:
            pass
        finally:
            self.in_flight -= 1

    async def generations(self) -> list[Generation]:
        return [await h.result() for h in self.handles]


class FailingEngine(Engine):
    """Every request fails like an unreachable upstream would: asynchronously, after a moment;
    or at once, as an engine that rejects the request outright."""

    def __init__(self, error: Exception, *, at_start: bool = False) -> None:
        self.model = "broken"
        self.capabilities = ScriptedEngine(["x"]).capabilities
        self.error = error
        self.at_start = at_start

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self.at_start:
            raise self.error
        handle = GenerationHandle(request.params.n, lambda _index: None)
        asyncio.get_running_loop().call_later(0.01, handle.fail, self.error)
        return handle


@asynccontextmanager
async def serve(
    *engines: Engine, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(list(engines), ServerConfig(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app


def state_of(app: FastAPI) -> ServerState:
    state: ServerState = app.state.ponder
    return state


def chat(model: str = "scripted", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": QUESTION, "max_tokens": 16, **extra}


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


def asgi_scope(path: str) -> dict[str, Any]:
    """The scope of a JSON POST to `path`, for driving the app by hand (disconnects)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


def leaving_client(
    body: bytes, gone: asyncio.Event
) -> tuple[Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]]:
    """ASGI receive/send for a client that sends `body`, ignores the answer and disconnects
    once `gone` is set."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    return receive, send


def sse_events(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The data events (parsed, without [DONE]) and the comment lines of an SSE body."""
    data, comments = [], []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            data.append(json.loads(line[len("data: ") :]))
        elif line.startswith(":"):
            comments.append(line)
    assert text.rstrip().endswith("data: [DONE]")
    return data, comments


# --- routes ------------------------------------------------------------------------------------


async def test_models_health_openapi_and_metrics() -> None:
    async with serve(ScriptedEngine(VOTES)) as (client, _):
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["scripted"]
        assert models["object"] == "list" and "self-consistency" in models["strategies"]
        assert (await client.get("/v1/models/scripted")).json()["id"] == "scripted"
        assert (await client.get("/v1/models/other")).status_code == 404
        health = (await client.get("/health")).json()
        assert health == {"status": "ok", "models": ["scripted"], "running": 0, "waiting": 0}
        schema = (await client.get("/openapi.json")).json()
        assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(
            schema["paths"]
        )
        assert "ChatCompletionRequest" in schema["components"]["schemas"]
        await client.post("/v1/chat/completions", json=chat("self-consistency:3/scripted"))
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'ponder_requests_total{route="/v1/chat/completions",status="200"} 1' in text
        assert 'ponder_samples_total{strategy="self-consistency"} 3' in text
        assert 'ponder_tokens_total{kind="completion"} 6' in text
        assert "# TYPE ponder_request_duration_seconds histogram" in text
        assert "ponder_requests_waiting 0" in text


async def test_strategy_in_model_name_answers_with_the_winner_and_complete_usage() -> None:
    async with serve(ScriptedEngine(VOTES)) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat("self-consistency:3/scripted")
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "so \\boxed{4}"}
        assert body["choices"][0]["finish_reason"] == "stop"
        ponder = body["ponder"]
        assert ponder["strategy"] == "self-consistency" and ponder["source"] == "model"
        assert ponder["answer"] == "4" and ponder["votes"] == {"4": 2.0, "5": 1.0}
        assert ponder["samples"] == 3 and len(ponder["candidates"]) == 3
        assert [c["completion_tokens"] for c in ponder["candidates"]] == [2, 2, 2]
        assert ponder["requests"] == [
            {
                "model": "scripted",
                "n": 3,
                "prompt_tokens": 10,
                "completion_tokens": 6,
                "finish_reasons": ["stop"] * 3,
            }
        ]
        assert ponder["stopped_by"] is None and not ponder["deadline_reached"]
        assert ponder["cost_usd"] is None  # a scripted engine has no default price
        assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
        assert ponder["usage"] == body["usage"]
        headers = response.headers
        assert headers["x-ponder-strategy"] == "self-consistency"
        assert headers["x-ponder-samples"] == "3"
        assert headers["x-ponder-completion-tokens"] == "6"
        assert headers["x-ponder-total-tokens"] == "16"
        assert float(headers["x-ponder-vote-share"]) == pytest.approx(2 / 3, abs=1e-3)
        assert float(headers["x-ponder-wall-s"]) >= 0 and headers["x-request-id"]


async def test_precedence_header_over_body_over_model_over_default() -> None:
    async with serve(ScriptedEngine(VOTES), default_strategy="best-of-n") as (client, _):

        async def chosen(
            headers: dict[str, str] | None = None, **extra: Any
        ) -> tuple[str, str, int]:
            response = await client.post(
                "/v1/chat/completions", json=chat(**extra), headers=headers or {}
            )
            assert response.status_code == 200, response.text
            ponder = response.json()["ponder"]
            return ponder["strategy"], ponder["source"], ponder["params"].get("n")

        everything: dict[str, Any] = {
            "model": "self-consistency:2/scripted",
            "ponder": {"strategy": "adaptive-consistency", "params": {"max_samples": 3}},
        }
        header = {"X-Ponder-Strategy": "self-consistency", "X-Ponder-Params": "n=4"}
        assert await chosen(header, **everything) == ("self-consistency", "header", 4)
        strategy, source, _ = await chosen(**everything)
        assert (strategy, source) == ("adaptive-consistency", "body")
        assert await chosen(model="self-consistency:2/scripted") == ("self-consistency", "model", 2)
        strategy, source, _ = await chosen(
            ponder={"params": {"n": 2, "verifier": "self-certainty", "top_logprobs": 0}}
        )
        assert (strategy, source) == ("best-of-n", "default")


async def test_a_request_without_a_strategy_passes_straight_through() -> None:
    engine = ScriptedEngine(["one two three", "four five"])
    async with serve(engine) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat(n=2, temperature=0.3, top_p=0.9, seed=7, stop=["five"], top_k=5),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "ponder" not in body
        assert [c["message"]["content"] for c in body["choices"]] == ["one two three", "four "]
        assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        assert response.headers["x-ponder-strategy"] == "none"
        params = engine.requests[0].params
        assert (params.n, params.temperature, params.top_p, params.seed) == (2, 0.3, 0.9, 7)
        assert (params.stop, params.top_k, params.max_tokens) == (("five",), 5, 16)


async def test_pass_through_returns_logprobs_in_openai_shape() -> None:
    engine = ScriptedEngine(["a b"], logprobs=lambda _k, i, _w: -0.5 * (i + 1))
    async with serve(engine) as (client, _):
        body = (
            await client.post("/v1/chat/completions", json=chat(logprobs=True, top_logprobs=1))
        ).json()
        content = body["choices"][0]["logprobs"]["content"]
        assert [(t["token"], t["logprob"]) for t in content] == [("a", -0.5), (" b", -1.0)]
        assert content[0]["top_logprobs"][0]["logprob"] == -0.5
        text = (
            await client.post(
                "/v1/completions", json={"prompt": "x", "logprobs": 1, "max_tokens": 4}
            )
        ).json()
        assert text["choices"][0]["logprobs"]["token_logprobs"] == [-0.5, -1.0]
        assert text["choices"][0]["logprobs"]["text_offset"] == [0, 1]


async def test_the_whole_conversation_reaches_the_strategy_unchanged() -> None:
    conversation = [
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": "What is 6*7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "name": "sam", "content": [{"type": "text", "text": "So?"}]},
    ]
    for model in ("self-consistency:2/scripted", "scripted"):
        engine = ScriptedEngine(["\\boxed{42}"])
        async with serve(engine) as (client, _):
            response = await client.post(
                "/v1/chat/completions", json={"model": model, "messages": conversation}
            )
            assert response.status_code == 200, response.text
            sent = engine.requests[0].messages
            assert sent is not None
            assert [m.model_dump() for m in sent] == [
                Message.model_validate(m).model_dump() for m in conversation
            ]


async def test_text_completions_pass_through_and_with_a_strategy() -> None:
    engine = ScriptedEngine(VOTES)
    async with serve(engine) as (client, _):
        plain = await client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 8})
        assert plain.status_code == 200, plain.text
        assert plain.json()["object"] == "text_completion"
        assert plain.json()["choices"][0]["text"] == "so \\boxed{4}"
        assert engine.requests[-1].prompt == "Once"
        voted = await client.post(
            "/v1/completions",
            json={"model": "self-consistency:3", "prompt": "What is 2+2?", "max_tokens": 8},
        )
        body = voted.json()
        assert body["ponder"]["answer"] == "4" and body["choices"][0]["text"].endswith("{4}")
        assert body["usage"]["completion_tokens"] == 6
        assert engine.requests[-1].messages is not None  # a question, as in `ponder ask`


# --- streaming ---------------------------------------------------------------------------------


async def test_strategy_stream_reports_progress_then_the_answer_then_usage() -> None:
    engine = ScriptedEngine(VOTES, step_s=0.05)
    async with serve(engine, progress_interval_s=0.02, stream_chunk_chars=3) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat(
                "self-consistency:3/scripted",
                stream=True,
                stream_options={"include_usage": True},
            ),
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data, comments = sse_events(response.text)
    progress = [json.loads(c.split(" ", 2)[2]) for c in comments if "ponder-progress" in c]
    assert progress and progress[-1]["samples_started"] == 3
    assert max(p["completion_tokens"] for p in progress) > 0
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(d["choices"][0]["delta"].get("content", "") for d in data if d["choices"])
    assert text == "so \\boxed{4}"
    assert len([d for d in data if d["choices"] and d["choices"][0]["delta"].get("content")]) > 1
    final = [d for d in data if d["choices"] and d["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["ponder"]["answer"] == "4"
    assert data[-1]["choices"] == []
    assert data[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
    assert all(d["object"] == "chat.completion.chunk" for d in data)


async def test_pass_through_stream_relays_deltas_and_usage() -> None:
    async with serve(ScriptedEngine(["one two", "three"])) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat(n=2, stream=True, stream_options={"include_usage": True}),
        )
        data, _ = sse_events(response.text)
        texts = ["", ""]
        reasons: list[str | None] = [None, None]
        for chunk in data[:-1]:
            (item,) = chunk["choices"]
            texts[item["index"]] += item["delta"].get("content", "")
            reasons[item["index"]] = item["finish_reason"] or reasons[item["index"]]
        assert texts == ["one two", "three"] and reasons == ["stop", "stop"]
        assert data[-1]["usage"]["completion_tokens"] == 3
        plain = await client.post(
            "/v1/completions", json={"prompt": "p", "max_tokens": 1, "stream": True}
        )
        chunks, _ = sse_events(plain.text)
        assert [c["choices"][0]["text"] for c in chunks] == ["one", ""]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all("usage" not in c for c in chunks)  # not asked for


# --- serving many users --------------------------------------------------------------------


async def test_concurrent_requests_share_the_engine() -> None:
    spy = SpyEngine(ScriptedEngine(VOTES, step_s=0.02))
    async with serve(spy) as (client, _):
        responses = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=chat("self-consistency:3/scripted"))
                for _ in range(4)
            )
        )
    assert [r.status_code for r in responses] == [200] * 4
    assert spy.most_in_flight == 4


async def test_a_full_queue_answers_429_with_retry_after_then_recovers() -> None:
    engine = ScriptedEngine(["a " * 30], step_s=0.01)
    async with serve(engine, max_running=1, max_waiting=1) as (client, app):
        admission = state_of(app).admission
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat(max_tokens=30)))
        second = asyncio.create_task(client.post("/v1/chat/completions", json=chat(max_tokens=30)))
        await eventually(lambda: admission.running + admission.waiting == 2)
        refused = await client.post("/v1/chat/completions", json=chat())
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert [(await first).status_code, (await second).status_code] == [200, 200]
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        assert "ponder_rejected_total 1" in (await client.get("/metrics")).text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_disconnects_cancels_its_work(stream: bool) -> None:
    spy = SpyEngine(ScriptedEngine(["word " * 500], step_s=0.01))
    app = create_app(spy, ServerConfig(first_event_wait_s=0))
    body = json.dumps(chat("self-consistency:2/scripted", max_tokens=500, stream=stream)).encode()
    gone = asyncio.Event()
    receive, send = leaving_client(body, gone)

    async with app.router.lifespan_context(app):
        call = asyncio.create_task(app(asgi_scope("/v1/chat/completions"), receive, send))  # type: ignore[arg-type]
        await eventually(lambda: bool(spy.handles))
        await asyncio.sleep(0.05)  # some tokens are generated
        gone.set()
        await asyncio.wait_for(call, 5)
        generations = await asyncio.wait_for(spy.generations(), 5)
        assert None in spy.cancels
        finishes = [c.finish_reason for g in generations for c in g.completions]
        assert finishes == ["cancelled", "cancelled"]
        assert 0 < sum(g.usage.completion_tokens for g in generations) < 1000
        assert state_of(app).admission.running == 0
        if not stream:
            assert state_of(app).metrics.disconnects.get() == 1


# --- deadlines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "budget"),
    [
        ({"X-Ponder-Deadline-S": "0.3"}, None),
        ({"X-Ponder-Budget": "seconds=300ms"}, None),
        ({}, {"seconds": "300ms"}),
    ],
)
async def test_a_deadline_returns_the_best_answer_so_far_with_honest_usage(
    headers: dict[str, str], budget: dict[str, Any] | None
) -> None:
    # Two samples answer at once; two would talk for a long time and are cut off at the deadline,
    # by the strategy's session (the budget's max_seconds), in time for it to answer.
    engine = ScriptedEngine(["\\boxed{4}", "word " * 400 + "\\boxed{9}"], step_s=0.01)
    extra = {} if budget is None else {"ponder": {"budget": budget}}
    async with serve(engine, deadline_grace_s=5) as (client, app):
        response = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:4/scripted", max_tokens=500, **extra),
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert state_of(app).metrics.deadlines.get() == 1
        ledger = (await client.get("/metrics")).text
    body = response.json()
    ponder = body["ponder"]
    assert ponder["deadline_reached"] and ponder["stopped_by"] == "max_seconds"
    assert ponder["answer"] == "4" and body["choices"][0]["message"]["content"] == "\\boxed{4}"
    assert response.headers["x-ponder-stopped-by"] == "max_seconds"
    assert not any("had not answered" in w for w in ponder["warnings"])  # no cut-off needed
    finishes = [c["finish_reason"] for c in ponder["candidates"]]
    assert finishes == ["stop", "cancelled", "stop", "cancelled"]
    spent = sum(c["completion_tokens"] for c in ponder["candidates"])
    assert body["usage"]["completion_tokens"] == spent > 2  # the cut-off samples' tokens count
    assert ponder["wall_s"] < 3  # generous: the deadline is 0.3 s, the grace period 5 s
    stopped = 'ponder_ledger_stopped_total{model="scripted",strategy="self-consistency"'
    assert f'{stopped},limit="max_seconds"}} 1' in ledger


class StubbornEngine(Engine):
    """Streams a token, then ignores cancellation for a long time (a stuck upstream)."""

    model = "stubborn"
    capabilities = ScriptedEngine(["x"]).capabilities

    def start(self, request: GenerationRequest) -> GenerationHandle:
        return GenerationHandle(request.params.n, lambda _index: None)


async def test_an_engine_that_ignores_cancellation_is_not_waited_for() -> None:
    async with serve(StubbornEngine(), deadline_grace_s=0.1, first_event_wait_s=0) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "self-consistency:2/stubborn",
                "messages": QUESTION,
                "ponder": {"budget": {"max_seconds": 0.1}},
            },
        )
    assert response.status_code == 200, response.text
    ponder = response.json()["ponder"]
    assert ponder["deadline_reached"] and ponder["answer"] is None
    assert any("did not hand the samples back" in w for w in ponder["warnings"])  # the session
    assert any("did not report their usage" in w for w in ponder["warnings"])


class SlowToCancel(ScriptedEngine):
    """Honours cancellation only after `delay_s`, as a busy upstream might."""

    delay_s = 0.4

    def start(self, request: GenerationRequest) -> GenerationHandle:
        handle = super().start(request)
        original = handle.cancel

        def cancel(index: int | None = None) -> None:
            asyncio.get_running_loop().call_later(self.delay_s, original, index)

        setattr(handle, "cancel", cancel)  # noqa: B010
        return handle


async def test_samples_given_up_at_the_deadline_still_count_in_usage() -> None:
    engine = SlowToCancel(["\\boxed{4}", "word " * 400], step_s=0.01)
    async with serve(engine, deadline_grace_s=0.2) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:2/scripted", max_tokens=400),
            headers={"X-Ponder-Deadline-S": "0.2"},
        )
    body = response.json()
    ponder = body["ponder"]
    assert any("did not hand the samples back" in w for w in ponder["warnings"])
    assert not any("had not answered" in w for w in ponder["warnings"])
    assert ponder["answer"] == "4"  # a vote of what the samples had streamed by the deadline
    assert [c["finish_reason"] for c in ponder["candidates"]] == ["stop", "cancelled"]
    long_one = ponder["candidates"][1]["completion_tokens"]
    assert long_one >= 1  # what it streamed by the deadline: how much depends on the machine's load
    # The tokens made until the late cancel took effect are counted too (the server's meter).
    assert body["usage"]["completion_tokens"] > 1 + long_one
    assert body["usage"]["prompt_tokens"] == 10


async def test_a_strategy_busy_outside_the_engine_is_cut_off_after_the_grace_period() -> None:
    # The samples' code loops forever in the sandbox, which a deadline does not interrupt.
    hang = "```python\ndef add(a, b):\n    while True:\n        pass\n```\n"
    params = {"group_by": "code", "probe_inputs": ["add(1, 2)"], "code_timeout_s": 30}
    async with serve(ScriptedEngine([hang], verbatim=True), deadline_grace_s=0.2) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "self-consistency:2/scripted",
                "messages": QUESTION,
                "ponder": {"params": params, "budget": {"max_seconds": 0.5}},
            },
        )
    assert response.status_code == 200, response.text
    ponder = response.json()["ponder"]
    assert ponder["deadline_reached"] and ponder["wall_s"] < 5
    assert any("had not answered" in w for w in ponder["warnings"])
    assert [c["finish_reason"] for c in ponder["candidates"]] == ["stop", "stop"]


async def test_a_pass_through_deadline_returns_the_text_so_far() -> None:
    async with serve(ScriptedEngine(["word " * 400], step_s=0.01)) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat(max_tokens=400),
            headers={"X-Ponder-Deadline-S": "0.1"},
        )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert 0 < len(choice["message"]["content"].split()) < 400


# --- budgets, prices and the ledger ------------------------------------------------------------

PRICES = {"scripted": TokenPrice(input_usd_per_mtok=100.0, output_usd_per_mtok=1000.0)}
"""10 prompt tokens: $0.001; each generated token: $0.001."""


@pytest.mark.parametrize(
    ("headers", "extra", "stopped_by", "samples"),
    [
        ({"X-Ponder-Budget": "samples=2"}, {}, "max_samples", 2),
        ({"X-Ponder-Budget": '{"max_samples": 2}'}, {}, "max_samples", 2),
        ({}, {"ponder": {"budget": {"tokens": "3"}}}, "max_tokens", 4),
        ({"X-Ponder-Budget": "samples=8"}, {"ponder": {"budget": {"samples": 3}}}, None, 4),
    ],
)
async def test_budget_forms_reach_the_strategy(
    headers: dict[str, str], extra: dict[str, Any], stopped_by: str | None, samples: int
) -> None:
    async with serve(ScriptedEngine(VOTES)) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:4/scripted", **extra),
            headers=headers,
        )
    assert response.status_code == 200, response.text
    ponder = response.json()["ponder"]
    assert (ponder["stopped_by"], ponder["samples"]) == (stopped_by, samples)
    assert response.headers.get("x-ponder-stopped-by") == stopped_by


@pytest.mark.parametrize(
    ("headers", "message", "param"),
    [
        ({"X-Ponder-Budget": "samples=many"}, "X-Ponder-Budget: max_samples:", "X-Ponder-Budget"),
        ({"X-Ponder-Budget": "usd=1eur"}, "expected dollars such as 0.01", "X-Ponder-Budget"),
        ({"X-Ponder-Deadline-S": "-1"}, "max_seconds: Input should be greater than 0", None),
        ({"X-Ponder-Deadline-S": "2h"}, "exceeds this server's limit of 3600s", None),
    ],
)
async def test_bad_budget_headers_get_400_with_the_budget_error(
    headers: dict[str, str], message: str, param: str | None
) -> None:
    engine = ScriptedEngine(VOTES)
    async with serve(engine) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat("self-consistency:2/scripted"), headers=headers
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["param"] == (param or "X-Ponder-Deadline-S")
    assert not engine.requests  # refused before anything was spent


async def test_a_dollar_budget_at_the_served_prices() -> None:
    engine = ScriptedEngine(["word " * 30 + "\\boxed{4}"])
    async with serve(engine, prices=PRICES) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:4/scripted", max_tokens=64),
            headers={"X-Ponder-Budget": "usd=$0.004"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        ponder, usage = body["ponder"], body["usage"]
        assert ponder["stopped_by"] == "max_usd"
        assert usage["completion_tokens"] < 4 * 31  # stopped long before the samples ended
        cost = PRICES["scripted"].cost(usage["prompt_tokens"], usage["completion_tokens"], 0.0)
        assert ponder["cost_usd"] == pytest.approx(cost)
        assert float(response.headers["x-ponder-cost-usd"]) == pytest.approx(cost, abs=1e-8)

        # One generated token cannot be afforded after the prompt: refused, nothing spent.
        drawn = len(engine.requests)
        refused = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:4/scripted", ponder={"budget": {"usd": 1e-6}}),
        )
        assert refused.status_code == 400, refused.text
        assert (
            "max_usd=$1e-06 cannot be met: the prompt alone" in refused.json()["error"]["message"]
        )
        assert len(engine.requests) == drawn


class Tokenizing(ScriptedEngine):
    """Counts a prompt's tokens exactly, as the embedded engine does."""

    def tokenize_request(self, request: GenerationRequest) -> list[int]:
        return [0] * 30


async def test_a_dollar_budget_counts_the_prompt_with_the_engines_own_tokenizer() -> None:
    engine = Tokenizing(VOTES)
    async with serve(engine, prices=PRICES) as (client, _):
        refused = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency/scripted", ponder={"budget": {"usd": 0.003}}),
        )
    assert refused.status_code == 400, refused.text
    assert "the prompt alone (30 tokens)" in refused.json()["error"]["message"]  # exact, not about
    assert not engine.requests


def ledger_line(metrics: str, counter: str, strategy: str, model: str = "scripted") -> float:
    prefix = f'ponder_ledger_{counter}_total{{model="{model}",strategy="{strategy}"}} '
    (line,) = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


@pytest.mark.parametrize("stream", [False, True])
async def test_metrics_carry_the_ledger_of_strategy_and_pass_through_requests(
    stream: bool,
) -> None:
    async with serve(ScriptedEngine(VOTES), prices=PRICES) as (client, _):
        usage_asked: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        voted = await client.post(
            "/v1/chat/completions",
            json=chat("self-consistency:3/scripted", stream=stream, **usage_asked),
        )
        plain = [
            await client.post("/v1/chat/completions", json=chat(stream=stream, **usage_asked))
            for _ in range(2)
        ]
        metrics = (await client.get("/metrics")).text
        again = (await client.get("/metrics")).text  # reading the ledger does not count twice

    def usage_of(response: httpx.Response) -> dict[str, int]:
        if not stream:
            found: dict[str, int] = response.json()["usage"]
            return found
        data, _ = sse_events(response.text)
        return data[-1]["usage"]  # type: ignore[no-any-return]

    voted_usage = usage_of(voted)
    assert ledger_line(metrics, "requests", "self-consistency") == 1
    assert ledger_line(metrics, "samples", "self-consistency") == 3
    assert ledger_line(metrics, "prompt_tokens", "self-consistency") == voted_usage["prompt_tokens"]
    assert (
        ledger_line(metrics, "completion_tokens", "self-consistency")
        == voted_usage["completion_tokens"]
    )
    assert ledger_line(metrics, "usd", "self-consistency") == pytest.approx(
        PRICES["scripted"].cost(voted_usage["prompt_tokens"], voted_usage["completion_tokens"], 0)
    )
    plain_usage = [usage_of(r) for r in plain]
    assert ledger_line(metrics, "requests", "passthrough") == 2
    assert ledger_line(metrics, "samples", "passthrough") == 2
    completion = sum(u["completion_tokens"] for u in plain_usage)
    prompt = sum(u["prompt_tokens"] for u in plain_usage)
    assert ledger_line(metrics, "completion_tokens", "passthrough") == completion
    assert ledger_line(metrics, "prompt_tokens", "passthrough") == prompt
    assert ledger_line(metrics, "usd", "passthrough") == pytest.approx(
        PRICES["scripted"].cost(prompt, completion, 0)
    )
    assert ledger_line(metrics, "seconds", "passthrough") > 0
    assert "# TYPE ponder_ledger_usd_total counter" in metrics
    assert 'ponder_samples_total{strategy="none"} 2' in metrics  # the server's own, as before
    assert ledger_line(again, "requests", "passthrough") == 2


async def test_a_served_model_missing_from_the_price_file_fails_at_startup() -> None:
    app = create_app(ScriptedEngine(VOTES), ServerConfig(prices={"other": PRICES["scripted"]}))
    with pytest.raises(PriceError, match="no entry for model 'scripted'"):
        async with app.router.lifespan_context(app):
            pass


# --- cascade -----------------------------------------------------------------------------------


def named(engine: ScriptedEngine, model: str) -> ScriptedEngine:
    engine.model = model
    return engine


async def test_a_cascade_escalates_to_the_servers_larger_model() -> None:
    small = ScriptedEngine(["\\boxed{4}", "\\boxed{5}"])  # split: not sure, so escalate
    large = named(ScriptedEngine(["so \\boxed{7}"]), "big")
    app = create_app(small, ServerConfig(), escalate=lambda: large)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            escalated = await client.post(
                "/v1/chat/completions",
                json=chat(ponder={"strategy": "cascade", "params": {"probe": 2, "samples": 3}}),
            )
            assert (await client.get("/v1/models")).json()["data"][0]["id"] == "scripted"
            metrics = (await client.get("/metrics")).text
    assert escalated.status_code == 200, escalated.text
    body = escalated.json()
    ponder = body["ponder"]
    assert ponder["answer"] == "7" and ponder["model"] == "big"
    assert body["choices"][0]["message"]["content"] == "so \\boxed{7}"
    assert [(r["model"], r["n"]) for r in ponder["requests"]] == [("scripted", 2), ("big", 3)]
    assert ponder["samples"] == 5 and len(large.requests) == 1
    assert body["usage"]["completion_tokens"] == 2 * 1 + 3 * 2  # both models' samples count
    # /metrics splits the request by model: each its samples, the one that answered the request
    assert ledger_line(metrics, "samples", "cascade", model="big") == 3
    assert ledger_line(metrics, "samples", "cascade", model="scripted") == 2
    assert ledger_line(metrics, "completion_tokens", "cascade", model="scripted") == 2
    assert ledger_line(metrics, "requests", "cascade", model="big") == 1
    assert ledger_line(metrics, "requests", "cascade", model="scripted") == 0


@asynccontextmanager
async def cascade_server(
    small: Engine, large: Engine, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(small, ServerConfig(**settings), escalate=lambda: large)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_an_escalated_reply_is_the_large_models_text_and_price() -> None:
    # The small model's first sample already says 4: the reply is still the large model's.
    small = ScriptedEngine(["\\boxed{4}", "\\boxed{5}"])
    large = named(ScriptedEngine(["large: \\boxed{4}"]), "big")
    prices = {
        "scripted": TokenPrice(input_usd_per_mtok=1e3, output_usd_per_mtok=1e4),
        "big": TokenPrice(input_usd_per_mtok=1e4, output_usd_per_mtok=1e5),
    }
    async with cascade_server(small, large, prices=prices) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json=chat(ponder={"strategy": "cascade", "params": {"probe": 2, "samples": 2}}),
        )
        metrics = (await client.get("/metrics")).text
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "large: \\boxed{4}"
    # 10 prompt + 2 x 1 tokens at the small price, 10 prompt + 2 x 2 at the large one
    small_cost, large_cost = 10 * 0.001 + 2 * 0.01, 10 * 0.01 + 4 * 0.1
    assert body["ponder"]["cost_usd"] == pytest.approx(small_cost + large_cost)
    # /metrics charges each model its own part
    assert ledger_line(metrics, "usd", "cascade", model="big") == pytest.approx(large_cost)
    assert ledger_line(metrics, "usd", "cascade", model="scripted") == pytest.approx(small_cost)


async def test_an_unpriced_large_model_refuses_only_dollar_budgeted_cascades() -> None:
    small = ScriptedEngine(VOTES)
    large = named(ScriptedEngine(["so \\boxed{7}"]), "big")
    prices = {"scripted": PRICES["scripted"], "big": PRICES["scripted"]}
    app = create_app(small, ServerConfig(prices=prices), escalate=lambda: large)
    async with app.router.lifespan_context(app):
        state_of(app).prices["big"] = None  # as an unpriced remote model would be
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            budget = {"usd": 1}
            voted = await client.post(
                "/v1/chat/completions",
                json=chat(ponder={"strategy": "self-consistency:3", "budget": budget}),
            )
            cascade = await client.post(
                "/v1/chat/completions", json=chat(ponder={"strategy": "cascade", "budget": budget})
            )
    assert voted.status_code == 200, voted.text  # the large model is not this strategy's
    assert cascade.status_code == 400
    assert "max_usd needs a price for model 'big'" in cascade.json()["error"]["message"]
    assert not large.requests


def cascade_policy(tmp_path: Path) -> Path:
    """A fitted cascade policy: probe 2 samples by vote share, escalate to 1 large sample."""
    small = plan_run(replay_data([SMALL_EASY] * 10 + [SMALL_HARD] * 10, confidence=False))
    large = plan_run(replay_data([LARGE_RIGHT] * 20), model="big")
    path = tmp_path / "cascade.json"
    save_policy(fit_cascade(small, large, orderings=5), path)
    return path


async def test_the_operators_cascade_policy_rules_and_requests_may_not_name_files(
    tmp_path: Path,
) -> None:
    path = cascade_policy(tmp_path)
    small = ScriptedEngine(["\\boxed{4}", "\\boxed{5}"])
    large = named(ScriptedEngine(["so \\boxed{7}"]), "big")
    async with cascade_server(small, large, cascade_policy=path) as client:
        ruled = await client.post("/v1/chat/completions", json=chat("cascade/scripted"))
        named_file = await client.post(
            "/v1/chat/completions",
            json=chat(ponder={"strategy": "cascade", "params": {"policy": str(path)}}),
        )
        in_header = await client.post(
            "/v1/chat/completions",
            json=chat(),
            headers={"X-Ponder-Strategy": "auto", "X-Ponder-Params": "policy=/etc/passwd"},
        )
    assert ruled.status_code == 200, ruled.text
    assert [r.params.n for r in small.requests] == [2] and [r.params.n for r in large.requests] == [
        1
    ]
    assert ruled.json()["ponder"]["params"]["policy"] == str(path)
    for refused, param in ((named_file, "ponder.params"), (in_header, "X-Ponder-Params")):
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert "a request may not name a policy file" in error["message"]
        assert "--cascade-policy FILE" in error["message"] and error["param"] == param
    assert len(small.requests) == 1  # the refused requests drew nothing


async def test_an_operators_policy_of_the_wrong_kind_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="is a cascade policy"):
        create_app(ScriptedEngine(VOTES), ServerConfig(auto_policy=cascade_policy(tmp_path)))


# --- security and limits -------------------------------------------------------------------


async def test_api_keys_are_required_compared_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-test-very-secret"
    async with serve(ScriptedEngine(VOTES), api_keys=["other-key", secret]) as (client, _):
        missing = await client.post("/v1/chat/completions", json=chat())
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = await client.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {secret}x"}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert secret not in wrong.text
        good = {"Authorization": f"Bearer {secret}"}
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=good)
        ).status_code == 200
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers={"X-Api-Key": secret})
        ).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=good)).status_code == 200
        assert (await client.get("/health")).status_code == 200
    assert "POST /v1/chat/completions 401" in caplog.text
    assert secret not in caplog.text


async def test_oversized_bodies_get_413_declared_or_streamed() -> None:
    async with serve(ScriptedEngine(VOTES), max_body_bytes=2048) as (client, _):
        big = chat(messages=[{"role": "user", "content": "x" * 5000}])
        response = await client.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert "2048 bytes" in response.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            payload = json.dumps(big).encode()
            for start in range(0, len(payload), 1000):
                yield payload[start : start + 1000]

        streamed = await client.post(
            "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "request_too_large"
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "message", "param"),
    [
        (b'{"model": "scripted", "messages": [', 400, "not valid JSON", None),
        (chat("nope:3/scripted"), 404, "model 'nope:3/scripted' is not served", "model"),
        (chat(ponder={"strategy": "nope"}), 400, "unknown strategy 'nope'", "ponder.strategy"),
        (
            chat("self-consistency:temperature=1/scripted"),
            400,
            "unknown parameter 'temperature'",
            "model",
        ),
        (
            chat(ponder={"strategy": "self-consistency", "budget": {"max_tokens": 0}}),
            400,
            "max_tokens: Input should be greater than or equal to 1",
            "ponder.budget",
        ),
        (
            chat(ponder={"strategy": "self-consistency", "budget": {"seconds": "soon"}}),
            400,
            "ponder.budget: max_seconds: expected a duration such as 10s or 500ms, got 'soon'",
            "ponder.budget",
        ),
        (
            chat(ponder={"strategy": "self-consistency", "budget": {"money": 1}}),
            400,
            "ponder.budget: unknown budget limit 'money'",
            "ponder.budget",
        ),
        (
            chat(ponder={"budget": {"samples": 2}}),
            400,
            "max_samples budget a strategy, and this request passes straight through",
            "ponder.budget",
        ),
        (
            chat(ponder={"strategy": "self-consistency", "budget": {"usd": "$0.01"}}),
            400,
            "max_usd needs a price for model 'scripted'",
            None,
        ),
        (
            chat("cascade/scripted"),
            400,
            "start it with `ponder serve --escalate-model M [--escalate-engine URL]`",
            "model",
        ),
        (chat(temprature=1), 422, "unknown field 'temprature'", "temprature"),
        (chat(max_tokens="ten"), 422, "max_tokens: Input should be a valid integer", "max_tokens"),
        (chat(temperature=9), 422, "temperature: Input should be less than or equal to 2", None),
        ({"model": "scripted"}, 422, "messages: required", "messages"),
        (chat(messages=[]), 422, "messages: List should have at least 1 item", "messages"),
        (chat(tools=[{"type": "function"}]), 400, "function calling", "tools"),
        (chat(presence_penalty=1), 400, "presence_penalty is not supported", "presence_penalty"),
        (chat("self-consistency/scripted", n=2), 400, "n must be 1 with a strategy", "n"),
        (chat(stop=[""]), 400, "stop strings must not be empty", None),
        (chat("other-model"), 404, "served: scripted", "model"),
    ],
)
async def test_bad_input_gets_a_4xx_with_a_clear_message(
    payload: dict[str, Any] | bytes, status: int, message: str, param: str | None
) -> None:
    async with serve(ScriptedEngine(VOTES)) as (client, _):
        if isinstance(payload, bytes):
            response = await client.post(
                "/v1/chat/completions",
                content=payload,
                headers={"Content-Type": "application/json"},
            )
        else:
            response = await client.post("/v1/chat/completions", json=payload)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert message in error["message"]
        assert set(error) == {"message", "type", "param", "code"}
        if param is not None:
            assert error["param"] == param
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


async def test_unknown_routes_and_methods_get_openai_error_bodies() -> None:
    async with serve(ScriptedEngine(VOTES)) as (client, _):
        missing = await client.get("/v1/nothing")
        assert missing.status_code == 404 and "no route GET /v1/nothing" in missing.text
        wrong = await client.get("/v1/chat/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["message"]
        form = await client.post("/v1/chat/completions", content=b"a=b")
        assert form.status_code == 400 and "Content-Type: application/json" in form.text


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (BackendUnavailableError("http://up/v1: connection refused"), 502, "connection refused"),
        (BackendTimeoutError("http://up/v1 did not answer"), 504, "did not answer"),
    ],
)
@pytest.mark.parametrize("model", ["broken", "self-consistency:2/broken"])
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_failures_are_502_or_504_with_the_cause(
    error: Exception, status: int, text: str, model: str, stream: bool
) -> None:
    async with serve(FailingEngine(error), ScriptedEngine(VOTES)) as (client, app):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": QUESTION, "stream": stream},
        )
        assert response.status_code == status, response.text
        body = response.json()["error"]
        assert text in body["message"] and body["type"] == "upstream_error"
        ok = await client.post("/v1/chat/completions", json=chat())
        assert ok.status_code == 200  # the server keeps serving
        assert state_of(app).admission.running == 0
        assert state_of(app).metrics.upstream_errors.get() == 1


async def test_an_engine_that_rejects_a_request_gives_a_400() -> None:
    engine = FailingEngine(ContextOverflowError("the prompt is too long"), at_start=True)
    async with serve(engine) as (client, app):
        for stream in (False, True):
            response = await client.post(
                "/v1/chat/completions", json={"messages": QUESTION, "stream": stream}
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "context_length_exceeded"
        assert state_of(app).admission.running == 0


async def test_a_failure_after_the_stream_started_is_an_error_event() -> None:
    class LateFailure(ScriptedEngine):
        def start(self, request: GenerationRequest) -> GenerationHandle:
            handle = super().start(request)
            asyncio.get_running_loop().call_later(
                0.05, handle.fail, BackendUnavailableError("gone")
            )
            return handle

    async with serve(LateFailure(["word " * 200], step_s=0.01)) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat(max_tokens=200, stream=True))
        assert response.status_code == 200
        data, _ = sse_events(response.text)
        assert "gone" in data[-1]["error"]["message"]


# --- lifecycle ---------------------------------------------------------------------------------


class Closing(ScriptedEngine):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_engines_are_opened_at_startup_and_closed_at_shutdown() -> None:
    opened: list[Closing] = []

    def open_engines() -> list[Engine]:
        opened.append(Closing(VOTES))
        return list(opened)

    app = create_app(open_engines)
    assert not opened  # nothing is loaded until the server starts
    async with app.router.lifespan_context(app):
        assert len(opened) == 1 and not opened[0].closed
    assert opened[0].closed
    clash = create_app([Closing(VOTES), Closing(VOTES)])
    with pytest.raises(ValueError, match="two engines serve the model name 'scripted'"):
        async with clash.router.lifespan_context(clash):
            pass
