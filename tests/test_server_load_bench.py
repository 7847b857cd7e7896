"""The pass-through load test (`benchmarks/server_load.py`) runs end to end on a tiny load and
reports its numbers, and the upstream-connection reuse it measures holds: ponder keeps its
connections to the upstream alive between requests, without hanging on a server that leaves a
stream open after ``[DONE]``. The thresholds themselves are not asserted here: they need a
quiet machine and a real load, which a test suite cannot promise."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ponder.engines.remote import RemoteEngine
from ponder.engines.types import GenerationRequest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "server_load.py"
TINY = ["--clients", "2", "--requests", "12", "--rounds", "1", "--warmup", "4"]
KEYS = {
    "added_latency_p50_ms",
    "throughput_ratio",
    "direct_p50_ms",
    "direct_p95_ms",
    "ponder_p50_ms",
    "ponder_p95_ms",
    "direct_rps",
    "ponder_rps",
    "ponder_ponder_cpu_ms_per_request",
    "ponder_upstream_requests_per_request",
    "ponder_upstream_connections_opened",
    "load_avg_start",
    "load_avg_end",
}


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def listening(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_json_mode_prints_one_line_with_the_numbers_and_cleans_up() -> None:
    done = run_script("--stream", "--upstream-ms", "2", "--upstream-jitter-ms", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result.keys() >= KEYS
    assert result["stream"] is True and result["clients"] == 2
    assert result["upstream_ms"] == 2 and result["upstream_jitter_ms"] == 1
    assert result["direct_requests"] == result["ponder_requests"] == 12
    assert result["direct_errors"] == result["ponder_errors"] == 0
    assert result["direct_p50_ms"] > 0 and result["ponder_p50_ms"] > 0
    assert result["throughput_ratio"] > 0
    # Added latency: each request's latency less the stand-in's own delay, ponder against direct.
    for target in ("direct", "ponder"):
        assert 0 < result[f"{target}_overhead_p50_ms"] < result[f"{target}_p50_ms"]
    assert result["added_latency_p50_ms"] == pytest.approx(
        result["ponder_overhead_p50_ms"] - result["direct_overhead_p50_ms"], abs=0.01
    )
    assert result["ponder_upstream_requests_per_request"] == 1.0
    assert not listening(result["ponder_url"]) and not listening(result["upstream_url"])


def test_text_mode_prints_the_numbers() -> None:
    done = run_script("--no-stream", "--upstream-ms", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "added latency p50" in done.stdout and "throughput ratio" in done.stdout
    assert "load average" in done.stdout and "whole responses" in done.stdout


def test_bad_options_are_refused_before_anything_starts() -> None:
    done = run_script("--clients", "0")
    assert done.returncode == 2 and "--clients must be at least 1" in done.stderr
    done = run_script("--upstream-ms", "5", "--upstream-jitter-ms", "6")
    assert done.returncode == 2 and "between 0 and --upstream-ms" in done.stderr


def test_the_standin_draws_its_delays_within_the_jitter_repeatably() -> None:
    spec = importlib.util.spec_from_file_location("standin", SCRIPT.parent / "_standin_upstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    delays = [module.StandIn(0.05, 0.02, seed=3).next_delay() for _ in range(2)]
    assert delays[0] == delays[1]  # one seed, one sequence
    drawn = module.StandIn(0.05, 0.02, seed=3)
    many = [drawn.next_delay() for _ in range(500)]
    assert all(0.03 <= d <= 0.07 for d in many)
    assert max(many) - min(many) > 0.03  # spread over the range, not one value
    assert module.StandIn(0.05).next_delay() == 0.05


class _OpenAfterDone(httpx.AsyncByteStream):
    """A complete SSE stream whose response then never ends, as a misbehaving server's might."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        await asyncio.Event().wait()


async def test_a_stream_left_open_after_done_does_not_hold_the_request() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_OpenAfterDone(body.encode()),
        )

    engine = RemoteEngine(
        "http://upstream.test/v1",
        model="m",
        timeout_s=60,
        transport=httpx.MockTransport(handler),
    )
    async with engine:
        started = time.monotonic()
        request = GenerationRequest.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)
        generation = await asyncio.wait_for(engine.generate(request), timeout=10)
        assert time.monotonic() - started < 5  # bounded by the drain wait, not by timeout_s
    assert generation.completions[0].text == "hi"
    assert generation.completions[0].finish_reason == "stop"
    assert generation.usage.completion_tokens == 1 and not generation.warnings
