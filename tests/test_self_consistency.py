"""Self-consistency and its primitives on the scripted engine (no model needed)."""

from __future__ import annotations

import pytest

from ponder.engines.types import Message, SampleDelta, SampleEvent, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.strategies.primitives import MATH_SYSTEM_PROMPT, as_messages, majority_vote
from ponder.strategies.self_consistency import self_consistency
from tests.scripted_engine import ScriptedEngine


@pytest.mark.parametrize(
    ("answers", "winner", "table"),
    [
        (["3", "4", "3"], "3", {"3": 2, "4": 1}),
        (["4", "3", "3", "4"], "4", {"4": 2, "3": 2}),  # a tie goes to the first seen
        ([None, None, "7"], "7", {"7": 1}),
        ([None, None], None, {}),
        ([], None, {}),
    ],
)
def test_majority_vote(
    answers: list[str | None], winner: str | None, table: dict[str, int]
) -> None:
    assert majority_vote(answers) == (winner, table)
    assert list(majority_vote(answers)[1].items()) == list(table.items())


def test_a_bare_question_gets_the_math_prompt_and_a_conversation_is_kept() -> None:
    messages = as_messages("What is 2+2?")
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == MATH_SYSTEM_PROMPT
    chat = [Message(role="user", content="hi"), Message(role="assistant", content="yo")]
    assert as_messages(chat) == tuple(chat)
    with pytest.raises(InvalidRequestError, match="empty"):
        as_messages("   ")
    with pytest.raises(InvalidRequestError, match="no messages"):
        as_messages([])


SAMPLES = [
    "so the answer is \\boxed{1,000}",
    "I think it is $1000.",
    "The answer is 999",
    "no idea",
    "total = 1000.0",
]


async def test_majority_answer_with_votes_usage_and_candidates() -> None:
    engine = ScriptedEngine(SAMPLES)
    result = await self_consistency(engine, "How much?", SamplingParams(n=5, max_tokens=50))
    assert result.answer == "1000"
    assert result.votes == {"1000": 3, "999": 1}
    assert result.vote_share == pytest.approx(3 / 5)  # the answerless sample counts in the share
    assert [c.answer for c in result.candidates] == ["1000", "1000", "999", None, "1000"]
    assert result.usage.prompt_tokens == 10
    assert result.usage.completion_tokens == sum(len(t.split()) for t in SAMPLES)
    assert result.strategy == "self-consistency"
    (request,) = engine.requests
    assert request.params.n == 5
    assert request.messages is not None and request.messages[1].content == "How much?"


async def test_no_answer_anywhere_gives_none_and_zero_share() -> None:
    engine = ScriptedEngine(["hmm", "well"])
    result = await self_consistency(engine, "Q?", SamplingParams(n=2))
    assert result.answer is None
    assert result.vote_share == 0.0


async def test_progress_events_reach_the_callback() -> None:
    engine = ScriptedEngine(["one two three \\boxed{3}"])
    seen: list[SampleEvent] = []
    result = await self_consistency(engine, "Q?", SamplingParams(n=2), on_event=seen.append)
    deltas = [e for e in seen if isinstance(e, SampleDelta)]
    assert sum(d.tokens for d in deltas) == result.usage.completion_tokens == 8
    assert result.answer == "3"


async def test_truncated_samples_are_kept_and_marked() -> None:
    engine = ScriptedEngine(["a b c d e f \\boxed{5}", "\\boxed{5}"])
    result = await self_consistency(engine, "Q?", SamplingParams(n=2, max_tokens=3))
    assert [c.finish_reason for c in result.candidates] == ["length", "stop"]
    assert result.answer == "5"
    assert result.vote_share == 0.5
