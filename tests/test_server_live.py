"""A real server on a loopback port (uvicorn in a thread) driven by the official `openai` client,
sync and async, streamed and not: what users will actually run. Scripted engines keep most tests
fast; one test serves the real SmolLM2 model through the embedded engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from ponder.engines.base import Engine
from ponder.server.app import EngineSource, create_app
from ponder.server.config import ServerConfig
from tests.llama_server import free_port
from tests.scripted_engine import ScriptedEngine
from tests.test_server_app import VOTES, FailingEngine, SpyEngine

KEY = "sk-live-test"


@contextmanager
def live_server(
    engines: EngineSource,
    config: ServerConfig | None = None,
    escalate: Callable[[], Engine] | None = None,
) -> Iterator[str]:
    """Serve `create_app(engines, config, escalate=escalate)` with uvicorn on a free loopback
    port in a thread; yield the base URL (``.../v1``); shut down (closing the engines) on exit."""
    port = free_port()
    app = create_app(engines, config or ServerConfig(), escalate=escalate)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    engines: list[Engine] = [
        ScriptedEngine(VOTES, step_s=0.002),
        FailingEngine(openai_unreachable()),
    ]
    config = ServerConfig(api_keys=[KEY], progress_interval_s=0.01, stream_chunk_chars=4)
    with live_server(engines, config) as url:
        yield url


def openai_unreachable() -> Exception:
    from ponder.errors import BackendUnavailableError

    return BackendUnavailableError("http://upstream/v1: connection refused")


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def async_client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


MESSAGES: Any = [{"role": "user", "content": "What is 2+2?"}]


def test_sync_chat_with_a_strategy_in_the_model_name(scripted_url: str) -> None:
    response = client(scripted_url).chat.completions.create(
        model="self-consistency:3/scripted", messages=MESSAGES, max_tokens=16
    )
    assert response.choices[0].message.content == "so \\boxed{4}"
    assert response.usage is not None and response.usage.completion_tokens == 6
    ponder = (response.model_extra or {})["ponder"]
    assert ponder["answer"] == "4" and ponder["samples"] == 3


def test_sync_stream_with_the_strategy_in_extra_body(scripted_url: str) -> None:
    stream = client(scripted_url).chat.completions.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ponder": {"strategy": "self-consistency", "params": {"n": 3}}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "so \\boxed{4}"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert (final[0].model_extra or {})["ponder"]["votes"] == {"4": 2.0, "5": 1.0}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 16


async def test_async_pass_through_and_header_choice(scripted_url: str) -> None:
    api = async_client(scripted_url)
    plain = await api.chat.completions.create(model="scripted", messages=MESSAGES, max_tokens=16)
    assert plain.choices[0].message.content in [v for v in VOTES]
    assert "ponder" not in (plain.model_extra or {})
    raw = await api.chat.completions.with_raw_response.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=16,
        extra_headers={"X-Ponder-Strategy": "self-consistency:3"},
    )
    assert raw.headers["x-ponder-strategy"] == "self-consistency"
    assert raw.headers["x-ponder-samples"] == "3"
    assert raw.parse().usage is not None
    await api.close()


async def test_async_streams(scripted_url: str) -> None:
    api = async_client(scripted_url)
    stream = await api.chat.completions.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in VOTES and chunks[-1].usage is not None
    voted = await api.completions.create(
        model="self-consistency:3/scripted", prompt="What is 2+2?", max_tokens=16, stream=True
    )
    pieces = [c async for c in voted]
    assert "".join(c.choices[0].text for c in pieces if c.choices).endswith("{4}")
    await api.close()


def test_text_completions_and_models(scripted_url: str) -> None:
    api = client(scripted_url)
    assert [m.id for m in api.models.list()] == ["scripted", "broken"]
    done = api.completions.create(model="scripted", prompt="Once", max_tokens=4)
    assert done.choices[0].text and done.usage is not None


def test_errors_reach_the_client_as_typed_exceptions(scripted_url: str) -> None:
    api = client(scripted_url)
    with pytest.raises(openai.BadRequestError, match="unknown strategy 'nope'"):
        api.chat.completions.create(
            model="scripted", messages=MESSAGES, extra_body={"ponder": {"strategy": "nope"}}
        )
    with pytest.raises(openai.NotFoundError, match="not served"):
        api.chat.completions.create(model="missing", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        client(scripted_url, key="wrong").chat.completions.create(
            model="scripted", messages=MESSAGES
        )
    with pytest.raises(openai.UnprocessableEntityError, match="temprature"):
        api.chat.completions.create(
            model="scripted", messages=MESSAGES, extra_body={"temprature": 1}
        )
    with pytest.raises(openai.InternalServerError, match="connection refused") as caught:
        api.chat.completions.create(model="self-consistency:2/broken", messages=MESSAGES)
    assert caught.value.status_code == 502
    ok = api.chat.completions.create(model="scripted", messages=MESSAGES, max_tokens=4)
    assert ok.choices[0].message.content


def test_a_budgeted_request_reports_the_limit_that_stopped_it(scripted_url: str) -> None:
    raw = client(scripted_url).chat.completions.with_raw_response.create(
        model="self-consistency:3/scripted",
        messages=MESSAGES,
        max_tokens=16,
        extra_headers={"X-Ponder-Budget": "samples=2"},
        extra_body={"ponder": {"budget": {"seconds": "30s", "tokens": 100}}},
    )
    assert raw.headers["x-ponder-stopped-by"] == "max_samples"
    reply = raw.parse()
    ponder = (reply.model_extra or {})["ponder"]
    assert (ponder["stopped_by"], ponder["samples"]) == ("max_samples", 2)
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError, match="unknown unit 'parsecs'"):
        client(scripted_url).chat.completions.create(
            model="self-consistency:3/scripted",
            messages=MESSAGES,
            extra_body={"ponder": {"budget": {"seconds": "3 parsecs"}}},
        )


def test_a_full_queue_is_a_rate_limit_error() -> None:
    config = ServerConfig(max_running=1, max_waiting=0)
    with live_server(ScriptedEngine(["word " * 200], step_s=0.01), config) as url:
        slow = threading.Thread(
            target=lambda: client(url).chat.completions.create(
                model="scripted", messages=MESSAGES, max_tokens=200
            )
        )
        slow.start()
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        for _ in range(500):
            if health["running"]:
                break
            time.sleep(0.01)
            health = httpx.get(url.removesuffix("/v1") + "/health").json()
        with pytest.raises(openai.RateLimitError) as caught:
            client(url).chat.completions.create(model="scripted", messages=MESSAGES)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        slow.join()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_the_engine_work(stream: bool) -> None:
    spy = SpyEngine(ScriptedEngine(["word " * 2000], step_s=0.005))
    with live_server(spy, ServerConfig(first_event_wait_s=0)) as url:
        body = {
            "model": "self-consistency:2/scripted",
            "messages": MESSAGES,
            "max_tokens": 2000,
            "stream": stream,
        }
        with httpx.Client(timeout=0.3) as http:
            if stream:
                with http.stream("POST", f"{url}/chat/completions", json=body) as response:
                    next(response.iter_lines())  # the stream has started; now hang up
            else:
                with pytest.raises(httpx.ReadTimeout):
                    http.post(f"{url}/chat/completions", json=body)
        for _ in range(500):
            if spy.cancels:
                break
            time.sleep(0.01)
        assert None in spy.cancels
        health = url.removesuffix("/v1") + "/health"
        for _ in range(500):  # and its slot is free again
            if httpx.get(health).json()["running"] == 0:
                break
            time.sleep(0.01)
        assert httpx.get(health).json()["running"] == 0


@pytest.mark.model
def test_the_real_model_through_the_official_client(smollm2_path: Path) -> None:
    from ponder.engines.embedded import EmbeddedEngine

    def open_engine(name: str = "smollm2") -> Engine:
        return EmbeddedEngine(smollm2_path, name=name, n_ctx=1024, max_sequences=4, n_threads=1)

    with live_server(open_engine, escalate=lambda: open_engine("smollm2-large")) as url:
        api = client(url, key="unused")
        voted = api.chat.completions.create(
            model="self-consistency:2/smollm2",
            messages=[
                {"role": "system", "content": "Answer with a number."},
                {"role": "user", "content": "What is 3+4?"},
            ],
            max_tokens=12,
            seed=1,
        )
        ponder = (voted.model_extra or {})["ponder"]
        assert voted.usage is not None and voted.usage.prompt_tokens > 0
        assert voted.usage.completion_tokens == sum(
            c["completion_tokens"] for c in ponder["candidates"]
        )
        assert ponder["samples"] == 2 and voted.choices[0].message.content
        assert ponder["cost_usd"] > 0  # the embedded engine's default machine price

        # A cascade that always escalates (threshold 2), cut short by its budget of 3 samples.
        cascaded = api.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is 3+4?"}],
            max_tokens=8,
            seed=1,
            extra_body={
                "ponder": {
                    "strategy": "cascade",
                    "params": {"probe": 2, "threshold": 2, "samples": 2},
                    "budget": {"samples": 3, "seconds": "2m"},
                }
            },
        )
        ponder = (cascaded.model_extra or {})["ponder"]
        assert [(r["model"], r["n"]) for r in ponder["requests"]] == [
            ("smollm2", 2),
            ("smollm2-large", 1),
        ]
        assert (ponder["model"], ponder["stopped_by"], ponder["samples"]) == (
            "smollm2-large",
            "max_samples",
            3,
        )
        assert cascaded.usage is not None
        assert cascaded.usage.completion_tokens == sum(
            r["completion_tokens"] for r in ponder["requests"]
        )

        async def stream() -> str:
            api_async = async_client(url, key="unused")
            chunks = await api_async.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
            seen = [c async for c in chunks]
            await api_async.close()
            assert seen[-1].usage is not None and 0 < seen[-1].usage.completion_tokens <= 8
            return "".join(c.choices[0].delta.content or "" for c in seen if c.choices)

        assert asyncio.run(stream())


# --- ponder serve --engine URL in front of llama-cpp-python's real server ----------------------


@pytest.fixture(scope="module")
def ponder_over_llama(server_url: str) -> Iterator[str]:
    from ponder.engines.remote import RemoteEngine

    with live_server(lambda: RemoteEngine(server_url, timeout_s=60, max_retries=1)) as url:
        yield url


ASK: Any = [{"role": "user", "content": "Name a colour."}]


@pytest.mark.model
def test_pass_through_to_a_real_upstream_answers_as_the_upstream_does(
    server_url: str, ponder_over_llama: str
) -> None:
    settings: Any = {
        "model": "smollm2",
        "messages": ASK,
        "max_tokens": 8,
        "temperature": 0.0,
        "seed": 1,  # this server's greedy choice still depends on its seed
    }
    upstream = client(server_url, key="unused").chat.completions
    upstream.create(**settings)  # its first answer to a prompt differs (no cached prefix yet)
    direct = upstream.create(**settings)
    through = client(ponder_over_llama, key="unused").chat.completions.create(**settings)
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage is not None and direct.usage is not None
    assert through.usage.completion_tokens == direct.usage.completion_tokens > 0
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens > 0  # relayed exactly

    stream = client(ponder_over_llama, key="unused").chat.completions.create(
        **settings, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct.choices[0].message.content
    # llama-cpp-python streams no usage: ponder counts the chunks with text, as its engine does
    assert chunks[-1].usage is not None
    assert 0 < chunks[-1].usage.completion_tokens <= direct.usage.completion_tokens


@pytest.mark.model
def test_a_strategy_over_a_real_upstream_counts_every_sample(ponder_over_llama: str) -> None:
    voted = client(ponder_over_llama, key="unused").chat.completions.create(
        model="self-consistency:3/smollm2",
        messages=[{"role": "user", "content": "What is 3+4? Answer with a number."}],
        max_tokens=8,
        seed=1,
    )
    ponder = (voted.model_extra or {})["ponder"]
    assert ponder["strategy"] == "self-consistency" and ponder["samples"] == 3
    assert voted.choices[0].message.content and voted.usage is not None
    # The server ignores `n`, so the samples were drawn as separate upstream requests; usage is
    # the sum over every one of them (and over every candidate), none left out.
    assert sum(r["n"] for r in ponder["requests"]) >= 3
    requested = sum(r["completion_tokens"] for r in ponder["requests"])
    assert voted.usage.completion_tokens == requested
    assert requested == sum(c["completion_tokens"] for c in ponder["candidates"]) > 0
    assert all(c["completion_tokens"] <= 8 for c in ponder["candidates"])
