"""A fast stand-in for an OpenAI-compatible upstream, for `server_load.py`.

It answers ``POST /v1/chat/completions`` (whole or streamed, with usage), ``POST /v1/completions``
and ``GET /v1/models`` with one fixed short completion after an optional delay (fixed, or drawn
uniformly from delay +- jitter with a fixed seed, as a real server's times vary), and
``GET /stats`` with the completions answered and the connections accepted so far, so the load
test can check that ponder makes one upstream request per request and reuses its connections.

Why a raw asyncio protocol rather than uvicorn + FastAPI: the load test charges everything that is
not ponder to the "direct" baseline, so the stand-in must cost as little CPU per request as
possible (tens of microseconds here, against about a millisecond for a pure-Python ASGI stack)
or it would hide ponder's own overhead behind its own. It speaks just enough HTTP/1.1 for httpx
and the OpenAI clients: keep-alive, Content-Length request bodies, one request at a time per
connection (no pipelining), and responses with a Content-Length (a stream's SSE events are all
written at once, after the delay, as a fast server that generated them in one go would).

    python benchmarks/_standin_upstream.py --port 9000 [--delay-ms 20] [--jitter-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import time
from typing import Any

MODEL = "standin"
PIECES = ("The", " answer", " is", " 4", ".")
TEXT = "".join(PIECES)
PROMPT_TOKENS = 12
COMPLETION_TOKENS = len(PIECES)
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


def _response(status: str, content_type: str, body: bytes, *, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _json(status: str, obj: object, *, close: bool = False) -> bytes:
    return _response(
        status, "application/json", json.dumps(obj, separators=(",", ":")).encode(), close=close
    )


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def completion(request: dict[str, Any], *, chat: bool, rid: int, delay_s: float = 0.0) -> bytes:
    """The whole response (head and body) for one completion request, which says in
    `standin_delay_ms` (a field clients ignore) how long the stand-in holds it back, so a load
    test can take the upstream's own time out of each request's latency."""
    delay_ms = round(delay_s * 1000, 3)
    created = int(time.time())
    model = request.get("model") or MODEL
    ident = f"{'chatcmpl' if chat else 'cmpl'}-standin-{rid}"
    if not request.get("stream"):
        first: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": TEXT}}
            if chat
            else {"index": 0, "text": TEXT}
        )
        return _json(
            "200 OK",
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [{**first, "finish_reason": "stop", "logprobs": None}],
                "usage": _usage(),
                "standin_delay_ms": delay_ms,
            },
        )
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": ident, "object": obj, "created": created, "model": model}

    def choice(text: str | None, reason: str | None, role: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}

    chunks: list[dict[str, Any]] = []
    if chat:
        chunks.append({**head, "choices": [choice("", None, role=True)]})
    chunks.extend({**head, "choices": [choice(piece, None)]} for piece in PIECES)
    chunks[0]["standin_delay_ms"] = delay_ms
    chunks.append({**head, "choices": [choice(None, "stop")]})
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**head, "choices": [], "usage": _usage()})
    events = "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks)
    return _response("200 OK", "text/event-stream", (events + "data: [DONE]\n\n").encode())


def models() -> bytes:
    return _json(
        "200 OK",
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "standin"}],
        },
    )


def _error(status: str, message: str, *, close: bool = False) -> bytes:
    return _json(
        status, {"error": {"message": message, "type": "invalid_request_error"}}, close=close
    )


class _Connection(asyncio.Protocol):
    """One client connection: buffer bytes, answer each complete request in order."""

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed response is pending; later requests wait in the buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        """Parse one complete request off the buffer, if there is one, and answer it."""
        if self.busy or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._send(_error("431 Request Header Fields Too Large", "head", close=True), True)
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length > MAX_BODY:
            self._send(_error("413 Content Too Large", "body too large", close=True), True)
            return
        if len(self.buffer) < end + 4 + length:
            return  # the body is still arriving
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self._answer(method, path, body)

    def _answer(self, method: str, path: str, body: bytes) -> None:
        server = self.server
        if method == "GET" and path == "/stats":
            stats = {"completions": server.completions, "connections": server.connections}
            self._send(_json("200 OK", stats))
            return
        if method == "GET" and path == "/v1/models":
            self._send(models())
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(_error("404 Not Found", f"no route {method} {path}"))
            return
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._send(_error("400 Bad Request", f"bad JSON: {exc}"))
            return
        server.completions += 1
        delay = server.next_delay()
        chat = path.endswith("chat/completions")
        reply = completion(request, chat=chat, rid=server.completions, delay_s=delay)
        if delay <= 0:
            self._send(reply)
            return
        self.busy = True
        asyncio.get_running_loop().call_later(delay, self._send_later, reply)

    def _send_later(self, reply: bytes) -> None:
        self.busy = False
        self._send(reply)
        if self.buffer:
            self._next()

    def _send(self, reply: bytes, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(reply)
        if close:
            self.transport.close()


class StandIn:
    """The server: its settings and counters."""

    def __init__(self, delay_s: float, jitter_s: float = 0.0, seed: int = 0) -> None:
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.completions = 0
        self.connections = 0

    def next_delay(self) -> float:
        """Seconds before the next completion answers."""
        if self.jitter_s <= 0:
            return self.delay_s
        return max(0.0, self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s))

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"stand-in upstream on http://{host}:{port}/v1 (pid {os.getpid()})", flush=True)
        async with server:
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="time before each completion answers"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="each delay is drawn from delay +- jitter"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    args = parser.parse_args()
    standin = StandIn(args.delay_ms / 1000, args.jitter_ms / 1000, args.seed)
    asyncio.run(standin.serve(args.host, args.port))


if __name__ == "__main__":
    main()
