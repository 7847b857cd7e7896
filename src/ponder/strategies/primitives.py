"""The few pieces strategies are made of: prompt, sample, extract, vote."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from ponder.answers import extract_answer
from ponder.engines.base import Engine
from ponder.engines.types import Generation, GenerationRequest, Message, SampleEvent, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.strategies.result import Candidate

MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

Question = str | Sequence[Message]
EventCallback = Callable[[SampleEvent], None]


def as_messages(question: Question, system: str = MATH_SYSTEM_PROMPT) -> tuple[Message, ...]:
    """A bare question gets the math system prompt; a conversation is passed on unchanged."""
    if isinstance(question, str):
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        return (Message(role="system", content=system), Message(role="user", content=question))
    if not question:
        raise InvalidRequestError("the conversation has no messages")
    return tuple(question)


async def sample(
    engine: Engine,
    messages: tuple[Message, ...],
    params: SamplingParams,
    on_event: EventCallback | None = None,
) -> Generation:
    """Draw `params.n` samples in one engine request, reporting progress as it happens."""
    handle = engine.start(GenerationRequest(messages=messages, params=params))
    if on_event is not None:
        async for event in handle.events():
            on_event(event)
    return await handle.result()


def candidates_of(generation: Generation) -> list[Candidate]:
    return [Candidate.from_completion(c, extract_answer(c.text)) for c in generation.completions]


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most frequent answer (ties go to the answer that appeared first) and the vote table.

    Samples without an answer do not vote, but still count in the vote share's denominator.
    """
    votes = Counter(a for a in answers if a is not None)
    table = dict(sorted(votes.items(), key=lambda kv: -kv[1]))  # stable: first seen wins ties
    winner = next(iter(table), None)
    return winner, table
