"""Think longer: budget forcing (s1, Muennighoff et al. 2025).

The caller, not the model, decides how long the model reasons. A reply that ends before
`min_thinking_tokens` is not accepted as the end: "Wait," is appended to the same reply and the
model continues it (an assistant prefill), which tends to make it re-check its work. A reply that
reaches `max_thinking_tokens` is cut off and the model is made to answer at once, by continuing
"... The final answer is \\boxed{". With n > 1, n forced traces run concurrently and vote.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from ponder.answers import extract_answer, find_boxed_answer
from ponder.budget import BudgetExhausted
from ponder.engines.types import Completion, FinishReason, Message
from ponder.errors import PonderError
from ponder.strategies.primitives import Question, as_messages, group_answers, weighted_vote
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session

ANSWER_PREFILL = "\n\nTime is up. The final answer is \\boxed{"
_OPEN, _CLOSE = re.compile(r"(?<!\\)\{"), re.compile(r"(?<!\\)\}")


class ThinkLongerParams(StrategyParams):
    min_thinking_tokens: int = Field(
        default=512, ge=0, le=131072, description="keep the model reasoning until this many tokens"
    )
    max_thinking_tokens: int = Field(
        default=2048, ge=1, le=131072, description="reasoning tokens after which it must answer"
    )
    wait_text: str = Field(
        default="Wait,",
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="appended in place of an early end, to make the model go on",
    )
    max_extensions: int = Field(
        default=4, ge=0, le=64, description="most times an early end is suppressed per trace"
    )
    answer_tokens: int = Field(
        default=32, ge=1, le=1024, description="tokens for the forced final answer"
    )
    n: int = Field(default=1, ge=1, le=64, description="independent forced traces, majority-voted")

    @model_validator(mode="after")
    def _ordered(self) -> ThinkLongerParams:
        if self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(
                f"min_thinking_tokens ({self.min_thinking_tokens}) must not exceed "
                f"max_thinking_tokens ({self.max_thinking_tokens})"
            )
        return self


@dataclass
class _Trace:
    """One forced reasoning trace: the whole reply so far and what it cost."""

    index: int
    text: str
    thought: int
    finish: FinishReason
    error: str | None = None
    extensions: int = 0
    answer_tokens: int = 0
    forced: bool = False
    latency_s: float = 0.0


async def think_longer(session: Session, question: Question, p: ThinkLongerParams) -> Result:
    """think = generate(q); while it ended early: think += "Wait," + continue(think);
    if it ran out of room (or gave no boxed answer): answer = continue(think + "\\boxed{")."""
    messages = as_messages(question)
    first = session.samples
    opening = await session.generate(
        messages, p.n, step="think", max_tokens=max(1, _thinking_room(session, p, 0))
    )
    traces = [
        _Trace(first + i, c.text, c.completion_tokens, c.finish_reason, c.error)
        for i, c in enumerate(opening.completions)
    ]
    await asyncio.gather(*(_force(session, messages, p, t) for t in traces))
    candidates = [_candidate(session, t) for t in traces]
    answer, votes = weighted_vote(group_answers([c.answer for c in candidates]))
    session.record("vote", votes=votes)
    share = votes.get(answer, 0.0) / len(candidates) if answer is not None else 0.0
    return session.result(answer, candidates, votes, share=share)


async def _force(
    session: Session, messages: Sequence[Message], p: ThinkLongerParams, trace: _Trace
) -> None:
    """Extend the trace while it ends too early, then force its answer if it has none. A failure
    (the budget, an engine error) ends only this trace, keeping what it has."""
    try:
        while (
            trace.finish == "stop"
            and trace.thought < p.min_thinking_tokens
            and trace.extensions < p.max_extensions
        ):
            room = _thinking_room(session, p, trace.thought)
            if room < 1 or not _spare_samples(session, p):
                break
            reply = f"{trace.text}\n{p.wait_text}"
            segment = await _continue(session, messages, reply, "wait", max_tokens=room)
            trace.text = reply + segment.text
            trace.extensions += 1
            trace.thought += segment.completion_tokens
            trace.finish, trace.error = segment.finish_reason, segment.error
        if trace.finish != "error" and (
            trace.finish != "stop" or find_boxed_answer(trace.text) is None
        ):
            await _force_answer(session, messages, p, trace)
    except BudgetExhausted:
        pass
    except PonderError as exc:
        trace.error = str(exc)
    trace.latency_s = session.elapsed()
    session.record(
        "trace",
        index=trace.index,
        thinking_tokens=trace.thought,
        extensions=trace.extensions,
        forced=trace.forced,
    )


async def _force_answer(
    session: Session, messages: Sequence[Message], p: ThinkLongerParams, trace: _Trace
) -> None:
    """Close the reasoning and let the model write only the box. It stops at "}"; a "}" that
    closes an inner group (\\frac{1}{2}) is put back and the answer continued."""
    reply = trace.text + ANSWER_PREFILL
    depth = 1
    while depth > 0 and trace.answer_tokens < p.answer_tokens:
        left = p.answer_tokens - trace.answer_tokens
        segment = await _continue(session, messages, reply, "answer", max_tokens=left, stop=("}",))
        reply += segment.text
        trace.text, trace.forced = reply, True
        trace.answer_tokens += segment.completion_tokens
        trace.finish, trace.error = segment.finish_reason, segment.error
        depth += len(_OPEN.findall(segment.text)) - len(_CLOSE.findall(segment.text))
        if segment.finish_reason != "stop":
            break
        reply += "}"
        trace.text = reply
        depth -= 1
        if segment.completion_tokens == 0:
            break


async def _continue(
    session: Session, messages: Sequence[Message], reply: str, step: str, **options: Any
) -> Completion:
    """Continue the assistant reply `reply` (a prefill) with one sample."""
    generation = await session.generate(
        [*messages, Message(role="assistant", content=reply)],
        1,
        step=step,
        continue_final=True,
        **options,
    )
    return generation.completions[0]


def _thinking_room(session: Session, p: ThinkLongerParams, thought: int) -> int:
    """Tokens a trace may still reason: up to its cap, within its share of the token budget less
    the tokens its forced answer will need."""
    room = p.max_thinking_tokens - thought
    left = session.tokens_left
    if left is not None:
        room = min(room, left // p.n - p.answer_tokens)
    return room


def _spare_samples(session: Session, p: ThinkLongerParams) -> bool:
    """Whether an extension still leaves each trace a sample to answer with."""
    left = session.samples_left
    return left is None or left > p.n


def _candidate(session: Session, trace: _Trace) -> Candidate:
    return Candidate(
        index=trace.index,
        text=trace.text,
        answer=extract_answer(trace.text),
        finish_reason=trace.finish,
        completion_tokens=trace.thought + trace.answer_tokens,
        latency_s=trace.latency_s,
        error=trace.error,
    )


THINK_LONGER = Strategy(
    name="think-longer",
    summary="Budget forcing: suppress early ends with 'Wait,', force the answer at the cap (s1).",
    params=ThinkLongerParams,
    run=think_longer,
)
