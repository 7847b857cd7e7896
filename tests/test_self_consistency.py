"""Self-consistency, the session's budget accounting and the shared primitives, on the scripted
engine (no model needed)."""

from __future__ import annotations

import pytest

from ponder.budget import Budget, BudgetExhausted
from ponder.engines.base import GenerationHandle
from ponder.engines.types import (
    GenerationRequest,
    Message,
    SampleDelta,
    SampleEvent,
    SamplingParams,
)
from ponder.errors import InvalidRequestError
from ponder.strategies.primitives import (
    MATH_SYSTEM_PROMPT,
    as_messages,
    group_answers,
    majority_vote,
    math_equivalent,
    weighted_vote,
)
from ponder.strategies.registry import get_strategy, run_strategy, strategies
from ponder.strategies.session import Session
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
    answers: list[str | None], winner: str | None, table: dict[str, float]
) -> None:
    assert majority_vote(answers) == (winner, table)
    assert list(majority_vote(answers)[1].items()) == list(table.items())


def test_weighted_vote_lets_confident_minorities_win() -> None:
    assert weighted_vote(["3", "3", "5"], [0.1, 0.1, 0.5]) == ("5", {"5": 0.5, "3": 0.2})
    with pytest.raises(ValueError, match="weights"):
        weighted_vote(["3"], [0.1, 0.2])


def test_math_equivalent_answers_vote_together() -> None:
    assert math_equivalent("1/2", "0.5")
    assert math_equivalent("3\\sqrt{13}", "\\sqrt{117}")
    assert not math_equivalent("18", "17")
    assert not math_equivalent("}{", "1")  # unparsable: not equal, and no exception
    assert group_answers(["0.5", None, "1/2", "2", "\\frac{1}{2}"]) == [
        "0.5",
        None,
        "0.5",
        "2",
        "0.5",
    ]


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
    result = await run_strategy("self-consistency", engine, "How much?", {"n": 5})
    assert result.answer == "1000"
    assert result.votes == {"1000": 3, "999": 1}
    assert result.vote_share == pytest.approx(3 / 5)  # the answerless sample counts in the share
    assert [c.answer for c in result.candidates] == ["1000", "1000", "999", None, "1000"]
    assert result.usage.prompt_tokens == 10
    assert result.usage.completion_tokens == sum(len(t.split()) for t in SAMPLES)
    assert result.samples == 5 and result.stopped_by is None
    assert [step.step for step in result.trace] == ["sample", "vote"]
    (request,) = engine.requests
    assert request.params.n == 5
    assert request.messages is not None and request.messages[1].content == "How much?"


async def test_equivalent_answers_are_one_group() -> None:
    engine = ScriptedEngine(["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{2}"])
    result = await run_strategy("self-consistency", engine, "Q?", {"n": 3})
    assert result.votes == {"1/2": 2, "2": 1}


async def test_no_answer_anywhere_gives_none_and_zero_share() -> None:
    result = await run_strategy("self-consistency", ScriptedEngine(["hmm", "well"]), "Q?", {"n": 2})
    assert result.answer is None
    assert result.vote_share == 0.0


async def test_progress_events_reach_the_callback() -> None:
    engine = ScriptedEngine(["one two three \\boxed{3}"])
    seen: list[SampleEvent] = []
    result = await run_strategy("self-consistency", engine, "Q?", {"n": 2}, on_event=seen.append)
    deltas = [e for e in seen if isinstance(e, SampleDelta)]
    assert sum(d.tokens for d in deltas) == result.usage.completion_tokens == 8
    assert result.answer == "3"


async def test_truncated_samples_are_kept_and_marked() -> None:
    engine = ScriptedEngine(["a b c d e f \\boxed{5}", "\\boxed{5}"])
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 2}, sampling=SamplingParams(max_tokens=3)
    )
    assert [c.finish_reason for c in result.candidates] == ["length", "stop"]
    assert result.answer == "5"
    assert result.vote_share == 0.5


async def test_sample_budget_clips_n_and_says_so() -> None:
    engine = ScriptedEngine(["\\boxed{4}"])
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 8}, budget=Budget(max_samples=3)
    )
    assert result.samples == 3 and len(result.candidates) == 3
    assert result.stopped_by == "max_samples"
    assert engine.requests[0].params.n == 3


async def test_token_budget_cancels_running_samples_and_counts_their_tokens() -> None:
    engine = ScriptedEngine(["w " * 30 + "\\boxed{1}"], step_s=0.001)
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 4}, budget=Budget(max_tokens=20)
    )
    assert result.stopped_by == "max_tokens"
    assert {c.finish_reason for c in result.candidates} == {"cancelled"}
    spent = sum(c.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == spent
    assert 20 <= spent <= 20 + 4  # at most one token in flight per running sample


async def test_session_refuses_to_sample_once_exhausted_and_seeds_advance() -> None:
    engine = ScriptedEngine(["a"])
    session = Session(
        engine,
        strategy="test",
        budget=Budget(max_samples=3),
        sampling=SamplingParams(seed=100),
    )
    messages = as_messages("Q?")
    await session.sample(messages, 2)
    await session.sample(messages, 2)  # only one left
    assert [r.params.n for r in engine.requests] == [2, 1]
    assert [r.params.seed for r in engine.requests] == [100, 102]
    assert session.exhausted and session.stopped_by == "max_samples"
    with pytest.raises(BudgetExhausted):
        await session.sample(messages, 1)


def test_strategies_are_listed_and_params_validated() -> None:
    assert "self-consistency" in strategies()
    sc = get_strategy("self-consistency")
    assert sc.parse_params({"n": "4"}).n == 4
    with pytest.raises(InvalidRequestError, match=r"n: Input should be less than or equal to 256"):
        sc.parse_params({"n": 1000})
    with pytest.raises(InvalidRequestError, match="unknown parameter 'm'"):
        sc.parse_params({"m": 1})
    with pytest.raises(InvalidRequestError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    assert sc.describe_params()[0]["range"] == ">= 1, <= 256"


async def test_concurrent_requests_share_one_budget() -> None:
    """Samples are reserved when a request starts and tokens are capped across all requests."""
    import asyncio

    engine = ScriptedEngine(["w " * 40], step_s=0.001)
    session = Session(engine, strategy="test", budget=Budget(max_samples=3))
    messages = as_messages("Q?")
    await asyncio.gather(session.generate(messages, 2), session.generate(messages, 2))
    assert session.samples == 3 and [r.params.n for r in engine.requests] == [2, 1]

    capped = Session(
        ScriptedEngine(["w " * 40], step_s=0.001), strategy="t", budget=Budget(max_tokens=20)
    )
    await asyncio.gather(capped.generate(messages, 2), capped.generate(messages, 2))
    assert capped.stopped_by == "max_tokens"
    assert 20 <= capped.usage.completion_tokens <= 20 + 4


async def test_a_request_the_engine_refuses_reserves_nothing() -> None:
    class Refusing(ScriptedEngine):
        def start(self, request: GenerationRequest) -> GenerationHandle:
            raise InvalidRequestError("no")

    session = Session(Refusing(["a"]), strategy="t", budget=Budget(max_samples=2))
    with pytest.raises(InvalidRequestError):
        await session.generate(as_messages("Q?"), 2)
    assert session.samples == 0 and session.samples_left == 2
