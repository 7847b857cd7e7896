"""The OpenAI-compatible wire format: URLs, request bodies, SSE framing, chunk and error parsing.

Pure functions with no I/O, so `RemoteEngine` keeps only HTTP, retries and scheduling, and the
JSON shapes of the many compatible servers (vLLM, SGLang, llama.cpp, Ollama, OpenAI) can be
tested on their own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ponder.engines.types import FinishReason, GenerationRequest, TokenLogprob, TopLogprob, Usage
from ponder.errors import InvalidRequestError


class WireError(ValueError):
    """A response that does not have the OpenAI shape; the engine names the server and re-raises
    it as `BackendResponseError`."""


def normalise_base_url(url: str) -> str:
    """The API root that `/chat/completions` and `/models` are appended to.

    Rule: the URL must start with http:// or https://; a URL without a path (``http://h:8080``)
    gets ``/v1`` appended, any other path is used as given (``https://host/api/v1``), so both the
    common ``/v1`` servers and proxies mounted elsewhere work. A trailing slash is dropped.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(
            f"base URL {url!r} must be an absolute http:// or https:// URL, "
            "e.g. 'http://127.0.0.1:8080/v1'"
        )
    if parts.query or parts.fragment:
        raise InvalidRequestError(f"base URL {url!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def is_openai(base_url: str) -> bool:
    """OpenAI's own API, which wants `max_completion_tokens` (its reasoning models reject
    `max_tokens`) and rejects non-OpenAI sampling fields."""
    return urlsplit(base_url).hostname == "api.openai.com"


def build_body(
    request: GenerationRequest,
    *,
    model: str,
    n: int,
    seed: int | None,
    openai: bool,
    stream: bool = True,
) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body for one request drawing `n` samples: streamed with usage
    (what the engine reads), or with `stream=False` one whole response (what a relay passes on).

    Only non-default `top_k`/`min_p`/`top_p` are sent: OpenAI rejects the first two, while vLLM,
    SGLang, llama.cpp and Ollama accept them as extra fields.
    """
    p = request.params
    body: dict[str, Any] = {"model": model, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    body["temperature"] = p.temperature
    if n > 1:
        body["n"] = n
    if p.top_p != 1.0:
        body["top_p"] = p.top_p
    if p.top_k != 0:
        body["top_k"] = p.top_k
    if p.min_p != 0.0:
        body["min_p"] = p.min_p
    if seed is not None:
        body["seed"] = seed
    if p.stop:
        body["stop"] = list(p.stop)
    if p.ignore_eos:  # vLLM, SGLang and llama.cpp's server accept it; OpenAI does not need it
        body["ignore_eos"] = True
    if request.messages is not None:
        body["messages"] = [m.model_dump(mode="json") for m in request.messages]
        if request.continue_final:  # vLLM / SGLang names for an assistant prefill
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body["max_completion_tokens" if openai else "max_tokens"] = p.max_tokens
        if p.wants_logprobs:
            # llama.cpp's server returns no logprobs unless top_logprobs is given, even 0.
            body["logprobs"] = True
            body["top_logprobs"] = p.top_logprobs
        return "/chat/completions", body
    body["prompt"] = request.prompt
    body["max_tokens"] = p.max_tokens
    if p.wants_logprobs:
        body["logprobs"] = p.top_logprobs
    return "/completions", body


@dataclass(frozen=True)
class ChoiceChunk:
    """One choice's part of one streamed chunk (or of a whole non-streamed response)."""

    index: int
    text: str
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None

    @property
    def tokens(self) -> int:
        """Tokens this piece carries: exact when logprobs came with it, else one per non-empty
        chunk (most servers stream one token per chunk; some batch, so this can undercount)."""
        if self.logprobs:
            return len(self.logprobs)
        return 1 if self.text else 0


@dataclass(frozen=True)
class Chunk:
    choices: list[ChoiceChunk]
    usage: Usage | None
    model: str | None


def map_finish_reason(reason: str) -> FinishReason:
    """OpenAI reasons onto ponder's: tool calls and content filters end a sample like a stop."""
    if reason == "length":
        return "length"
    if reason in ("error", "abort"):
        return "error"
    return "stop"


def parse_chunk(obj: object, *, chat: bool, top_k: int) -> Chunk:
    """Parse a `chat.completion.chunk`/`text_completion` object (streamed or whole)."""
    if not isinstance(obj, dict):
        raise WireError(f"expected a JSON object, got {_preview(obj)}")
    raw_choices = obj.get("choices") or []
    if not isinstance(raw_choices, list):
        raise WireError(f"`choices` is not a list: {_preview(raw_choices)}")
    choices = [_parse_choice(c, chat=chat, top_k=top_k) for c in raw_choices]
    model = obj.get("model")
    return Chunk(
        choices=choices,
        usage=parse_usage(obj.get("usage")),
        model=model if isinstance(model, str) and model else None,
    )


def _parse_choice(raw: object, *, chat: bool, top_k: int) -> ChoiceChunk:
    if not isinstance(raw, dict):
        raise WireError(f"a choice is not an object: {_preview(raw)}")
    index = raw.get("index", 0)
    if not isinstance(index, int) or index < 0:
        raise WireError(f"bad choice index {index!r}")
    if chat:
        body = raw.get("delta")
        if body is None:
            body = raw.get("message")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise WireError(f"`delta` is not an object: {_preview(body)}")
        text = body.get("content")
        logprobs = parse_chat_logprobs(raw.get("logprobs"), top_k)
    else:
        text = raw.get("text")
        logprobs = parse_completion_logprobs(raw.get("logprobs"), top_k)
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise WireError(f"choice text is not a string: {_preview(text)}")
    finish = raw.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise WireError(f"bad finish_reason {finish!r}")
    return ChoiceChunk(index=index, text=text, logprobs=logprobs, finish_reason=finish)


def parse_chat_logprobs(raw: object, top_k: int) -> list[TokenLogprob] | None:
    """Chat format: ``{"content": [{"token", "logprob", "top_logprobs": [{...}]}]}``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise WireError(f"`logprobs` is not an object: {_preview(raw)}")
    content = raw.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise WireError(f"`logprobs.content` is not a list: {_preview(content)}")
    out: list[TokenLogprob] = []
    for entry in content:
        if not isinstance(entry, dict):
            raise WireError(f"a logprob entry is not an object: {_preview(entry)}")
        tops = entry.get("top_logprobs") or []
        if not isinstance(tops, list):
            raise WireError(f"`top_logprobs` is not a list: {_preview(tops)}")
        alternatives = [
            TopLogprob(token=_token(t.get("token")), logprob=_logprob(t.get("logprob")))
            for t in tops
            if isinstance(t, dict)
        ]
        out.append(
            TokenLogprob(
                token=_token(entry.get("token")),
                logprob=_logprob(entry.get("logprob")),
                top_logprobs=_best(alternatives, top_k),
            )
        )
    return out


def parse_completion_logprobs(raw: object, top_k: int) -> list[TokenLogprob] | None:
    """Completions format: parallel lists ``tokens``, ``token_logprobs`` and ``top_logprobs``
    (one ``{token: logprob}`` dict per token)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise WireError(f"`logprobs` is not an object: {_preview(raw)}")
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or []
    if not (isinstance(tokens, list) and isinstance(values, list) and isinstance(tops, list)):
        raise WireError(f"malformed completion logprobs: {_preview(raw)}")
    if len(values) != len(tokens):
        raise WireError(f"{len(tokens)} tokens but {len(values)} token_logprobs")
    out: list[TokenLogprob] = []
    for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
        top = tops[i] if i < len(tops) else None
        alternatives = (
            [TopLogprob(token=_token(t), logprob=_logprob(v)) for t, v in top.items()]
            if isinstance(top, dict)
            else []
        )
        out.append(
            TokenLogprob(
                token=_token(token),
                logprob=_logprob(value),
                top_logprobs=_best(alternatives, top_k),
            )
        )
    return out


def _best(alternatives: list[TopLogprob], top_k: int) -> list[TopLogprob]:
    """Most likely first, at most `top_k`: servers often add the sampled token as an extra."""
    return sorted(alternatives, key=lambda t: t.logprob, reverse=True)[:top_k]


def _token(value: object) -> str:
    if not isinstance(value, str):
        raise WireError(f"a logprob token is not a string: {_preview(value)}")
    return value


def _logprob(value: object) -> float:
    if value is None:  # the completions format's "no value" (e.g. the first echoed token)
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"a logprob is not a number: {_preview(value)}")
    return float(value)


def parse_usage(raw: object) -> Usage | None:
    """A response's ``usage`` object, or None when it has no usable completion count."""
    if not isinstance(raw, dict):
        return None
    completion = raw.get("completion_tokens")
    prompt = raw.get("prompt_tokens")
    if not isinstance(completion, int):
        return None
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else 0, completion_tokens=completion
    )


def error_message(body: bytes) -> str:
    """The human part of an error response: OpenAI's ``{"error": {"message"}}``, FastAPI's
    ``{"detail"}``, a bare ``{"message"}`` or ``{"error": "..."}``, else the text itself."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return _clip(text) or "(empty response body)"
    return _clip(error_from_object(obj) or text)


def error_from_object(obj: object) -> str | None:
    """The error message inside a JSON object, or None when it carries no error."""
    if not isinstance(obj, dict):
        return None
    for key in ("error", "detail", "message"):
        value = obj.get(key)
        if isinstance(value, dict):
            inner = value.get("message") or value.get("msg")
            if inner:
                return str(inner)
            return json.dumps(value)
        if value:
            return value if isinstance(value, str) else json.dumps(value)
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


class SseParser:
    """Server-sent events from text as it arrives: `feed` returns the events it completed, as
    ``(event, data)`` (data lines joined, comments skipped, an event dispatched at a blank line),
    and `close` the one the stream left unterminated. Lines end at ``\n`` (a ``\r`` before it is
    dropped); unlike `str.splitlines`, characters such as U+2028, which JSON may carry unescaped,
    stay inside their line."""

    def __init__(self) -> None:
        self._partial = ""
        self._event = "message"
        self._data: list[str] = []

    def feed(self, text: str) -> list[tuple[str, str]]:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        return self._parse(lines)

    def close(self) -> list[tuple[str, str]]:
        events = self._parse([self._partial] if self._partial else [])
        self._partial = ""
        if self._data:
            events.append((self._event, "\n".join(self._data)))
        self._event, self._data = "message", []
        return events

    def _parse(self, lines: list[str]) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.removesuffix("\r")
            if not line:
                if self._data:
                    events.append((self._event, "\n".join(self._data)))
                self._event, self._data = "message", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return events


async def iter_sse(chunks: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """The events of a stream of text chunks (see `SseParser`)."""
    parser = SseParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
    for event in parser.close():
        yield event


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _preview(value: object) -> str:
    return _clip(repr(value), 200)
