"""Building OpenAI response bodies, chunks and headers from ponder's results: pure functions
shared by the plain and the streaming paths, so both report the same figures."""

from __future__ import annotations

import json
from typing import Any, Literal

from ponder.engines.types import Completion, FinishReason, Generation, TokenLogprob, Usage
from ponder.server.execution import Outcome
from ponder.server.schemas import CandidateOut, EngineRequestOut, PonderInfo, UsageOut
from ponder.server.selection import Selection

Kind = Literal["chat", "text"]


def finish_reason(reason: FinishReason | None) -> str:
    """OpenAI knows stop and length; a sample cut short by cancellation (a deadline) is
    reported as "length": its text is a truncated answer, which is what that value means."""
    return "length" if reason in ("length", "cancelled") else "stop"


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def chat_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.token.encode()),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode())}
                    for t in e.top_logprobs
                ],
            }
            for e in entries
        ]
    }


def text_logprobs(entries: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    if entries is None:
        return None
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top_logprobs} for e in entries],
        "text_offset": offsets,
    }


def choice(
    kind: Kind, index: int, text: str, reason: str | None, logprobs: list[TokenLogprob] | None
) -> dict[str, Any]:
    """One choice of a whole (non-streamed) response."""
    if kind == "chat":
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reason,
            "logprobs": chat_logprobs(logprobs),
        }
    return {
        "index": index,
        "text": text,
        "finish_reason": reason,
        "logprobs": text_logprobs(logprobs),
    }


def envelope(kind: Kind, rid: str, created: int, model: str, *, chunk: bool) -> dict[str, Any]:
    obj = "text_completion" if kind == "text" else "chat.completion"
    if chunk and kind == "chat":
        obj = "chat.completion.chunk"
    return {"id": rid, "object": obj, "created": created, "model": model}


def passthrough_body(
    kind: Kind, rid: str, created: int, model: str, generation: Generation
) -> dict[str, Any]:
    body = envelope(kind, rid, created, model, chunk=False)
    body["choices"] = [
        choice(kind, c.index, c.text, finish_reason(c.finish_reason), c.logprobs)
        for c in generation.completions
    ]
    body["usage"] = usage_out(generation.usage).model_dump()
    return body


def ponder_info(outcome: Outcome, selection: Selection, queued_s: float) -> PonderInfo:
    result = outcome.result
    meter = outcome.meter
    requests = []
    for position, (model, request) in enumerate(meter.requests):
        generation = meter.generations.get(position)
        requests.append(
            EngineRequestOut(
                model=model,
                n=request.params.n,
                prompt_tokens=generation.usage.prompt_tokens if generation else 0,
                completion_tokens=generation.usage.completion_tokens if generation else 0,
                finish_reasons=[c.finish_reason for c in generation.completions]
                if generation
                else ["error" if position in meter.failures else "unknown"],
            )
        )
    return PonderInfo(
        strategy=result.strategy,
        source=selection.source,
        params=selection.params.model_dump(mode="json") if selection.params else {},
        model=result.model,
        answer=result.answer,
        vote_share=result.vote_share,
        votes=result.votes,
        samples=result.samples,
        stopped_by=result.stopped_by,
        deadline_reached=outcome.deadline_reached,
        cost_usd=result.cost_usd,
        candidates=[
            CandidateOut(
                index=c.index,
                answer=c.answer,
                finish_reason=c.finish_reason,
                completion_tokens=c.completion_tokens,
                latency_s=c.latency_s,
                scores={name: s.value for name, s in c.scores.items()},
                error=c.error,
            )
            for c in result.candidates
        ],
        requests=requests,
        usage=usage_out(result.usage),
        wall_s=outcome.wall_s,
        queued_s=queued_s,
        warnings=result.warnings,
    )


def ponder_headers(info: PonderInfo | None, usage: Usage, samples: int) -> dict[str, str]:
    """The response's figures as headers, for clients and proxies that do not read the body.
    Only ASCII-safe numbers and names go here; the answer itself stays in the body."""
    headers = {
        "X-Ponder-Strategy": info.strategy if info else "none",
        "X-Ponder-Samples": str(samples),
        "X-Ponder-Prompt-Tokens": str(usage.prompt_tokens),
        "X-Ponder-Completion-Tokens": str(usage.completion_tokens),
        "X-Ponder-Total-Tokens": str(usage.total_tokens),
    }
    if info is not None:
        headers["X-Ponder-Vote-Share"] = f"{info.vote_share:.4f}"
        headers["X-Ponder-Wall-S"] = f"{info.wall_s:.3f}"
        headers["X-Ponder-Queued-S"] = f"{info.queued_s:.3f}"
        if info.stopped_by:
            headers["X-Ponder-Stopped-By"] = info.stopped_by
        if info.cost_usd is not None:
            headers["X-Ponder-Cost-USD"] = f"{info.cost_usd:.8f}"
    return headers


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event carrying `data` (JSON unless already text)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


def sse_comment(name: str, data: dict[str, Any]) -> str:
    """An SSE comment (``: name {...}``): every SSE client, the official OpenAI ones included,
    skips comment lines, so progress reports cost stock clients nothing."""
    return f": {name} {json.dumps(data, separators=(',', ':'))}\n\n"


def delta_chunk(
    kind: Kind,
    head: dict[str, Any],
    index: int,
    text: str | None,
    *,
    role: bool = False,
    reason: str | None = None,
    logprobs: list[TokenLogprob] | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """One streamed chunk for one choice: new text, or the finish reason, or (chat) the role."""
    if kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        item: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "logprobs": chat_logprobs(logprobs),
            "finish_reason": reason,
        }
    else:
        item = {
            "index": index,
            "text": text or "",
            "logprobs": text_logprobs(logprobs, offset),
            "finish_reason": reason,
        }
    return {**head, "choices": [item]}


def usage_chunk(head: dict[str, Any], usage: Usage) -> dict[str, Any]:
    return {**head, "choices": [], "usage": usage_out(usage).model_dump()}


def split_text(text: str, size: int) -> list[str]:
    """Pieces of about `size` characters, cut after whitespace where possible, so a streamed
    answer reads naturally; joined they give `text` exactly."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end + 1)
            if space > start:
                end = space + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def completion_error(generation: Generation) -> Completion | None:
    """The first failed sample when every sample failed (the request as a whole failed)."""
    failed = [c for c in generation.completions if c.finish_reason == "error"]
    if failed and len(failed) == len(generation.completions):
        return failed[0]
    return None
