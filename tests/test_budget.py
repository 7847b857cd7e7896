"""Budgets: the text and mapping forms and their errors, then each limit enforced by the session on
the scripted engine (one word = one token), then a deadline hitting mid-sample on the real
SmolLM2 model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from ponder.bench.store import LiveConfig
from ponder.budget import Budget, BudgetError, BudgetExhausted
from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.types import GenerationRequest, Message, SamplingParams
from ponder.planning.pricing import HourlyPrice, TokenPrice, engine_price, estimate_prompt_tokens
from ponder.strategies.registry import run_strategy
from ponder.strategies.result import Candidate, Score
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier
from ponder.verifiers.llm_judge import LLMJudgeVerifier
from tests.scripted_engine import ScriptedEngine

LONG = " ".join(["7"] * 300)  # 300 tokens, whose partial text always answers 7
SLOW_S = 0.005  # seconds per scripted step: a LONG sample takes 1.5 s
QUESTION = [Message(role="user", content="Q?")]


# --- the text and mapping forms -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("samples=16", Budget(max_samples=16)),
        ("tokens=4000, seconds=10", Budget(max_tokens=4000, max_seconds=10)),
        ("seconds=500ms", Budget(max_seconds=0.5)),
        ("seconds=2m,usd=$0.01", Budget(max_seconds=120, max_usd=0.01)),
        ("seconds=1h", Budget(max_seconds=3600)),
        ("usd=0.002,max_samples=3", Budget(max_usd=0.002, max_samples=3)),
        ("MAX-TOKENS=5", Budget(max_tokens=5)),
    ],
)
def test_budget_text(spec: str, expected: Budget) -> None:
    assert Budget.parse(spec) == expected


def test_budget_mapping_takes_short_and_long_keys_numbers_and_units() -> None:
    assert Budget.from_mapping({"max_seconds": "250ms", "usd": 1, "samples": "4"}) == Budget(
        max_seconds=0.25, max_usd=1.0, max_samples=4
    )
    assert Budget.from_mapping({"tokens": None}) == Budget()
    assert Budget.model_validate({"max_seconds": "2s"}).max_seconds == 2.0
    assert Budget(max_samples=2, max_seconds=1.5).describe() == "2 samples, 1.5 s"
    assert Budget().describe() == "unlimited"


def test_budget_merged() -> None:
    merged = Budget(max_samples=2).merged(Budget(max_seconds=3, max_samples=2))
    assert merged == Budget(max_samples=2, max_seconds=3)
    with pytest.raises(BudgetError, match="max_samples is given twice"):
        Budget(max_samples=2).merged(Budget(max_samples=3))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("seconds=10x", "unknown unit 'x' in '10x'; use ms, s, m, h"),
        ("seconds=-1", "max_seconds: Input should be greater than 0 (got -1.0)"),
        ("seconds=0ms", "max_seconds: Input should be greater than 0"),
        ("seconds=soon", "expected a duration such as 10s or 500ms"),
        ("usd=-0.5", "max_usd: Input should be greater than 0"),
        ("usd=1e400", "max_usd: must be a finite number"),
        ("usd=5eur", "expected dollars such as 0.01 or $0.01"),
        ("tokens=0", "max_tokens: Input should be greater than or equal to 1"),
        ("tokens=4000.5", "max_tokens: Input should be a valid integer"),
        ("samples=-3", "max_samples: Input should be greater than or equal to 1"),
        ("minutes=3", "unknown budget limit 'minutes'; use samples (max_samples), tokens"),
        ("samples", "write KEY=VALUE pairs, e.g. samples=16,tokens=4000"),
        ("", "write KEY=VALUE pairs"),
        ("seconds=1,seconds=2", "seconds is given twice"),
    ],
)
def test_bad_budgets_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(BudgetError) as caught:
        Budget.parse(spec)
    assert message in str(caught.value)


def test_new_limits_leave_stored_budget_digests_unchanged() -> None:
    """`bench live` keys its stored configs by a digest of the budget's dump; budgets written
    before max_seconds and max_usd existed must keep their keys (values pinned from then)."""
    config = {"strategy": "self-consistency", "params": {"n": 8}, "max_tokens": 64, "label": "x"}
    assert LiveConfig(**config, budget=Budget()).key == "4a14d436cae4cc09"
    limited = Budget(max_samples=4, max_tokens=100)
    assert LiveConfig(**config, budget=limited).key == "1bdf5402d9432947"
    assert Budget().model_dump() == {"max_samples": None, "max_tokens": None}
    assert Budget(max_seconds=2).model_dump()["max_seconds"] == 2.0


# --- each limit on the scripted engine ------------------------------------------------------------
async def test_max_samples_is_exact() -> None:
    engine = ScriptedEngine(["The answer is 3."])
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 5}, budget=Budget(max_samples=2)
    )
    assert result.samples == 2 and len(result.candidates) == 2
    assert result.stopped_by == "max_samples" and result.answer == "3"


async def test_max_tokens_cancels_running_samples() -> None:
    engine = ScriptedEngine([LONG])
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 4}, budget=Budget(max_tokens=20)
    )
    assert result.stopped_by == "max_tokens"
    assert 20 <= result.usage.completion_tokens < 24  # at most one step of each sample in flight
    assert all(c.finish_reason == "cancelled" for c in result.candidates)


async def test_deadline_cancels_samples_mid_generation_and_the_strategy_answers() -> None:
    engine = ScriptedEngine([LONG], step_s=SLOW_S)
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 4}, budget=Budget(max_seconds=0.1)
    )
    assert result.stopped_by == "max_seconds"
    assert [c.finish_reason for c in result.candidates] == ["cancelled"] * 4
    tokens = [c.completion_tokens for c in result.candidates]
    assert all(1 <= t < 300 for t in tokens)  # stopped part-way, partial tokens counted
    assert result.usage.completion_tokens == sum(tokens)
    assert result.answer == "7" and result.votes == {"7": 4.0}


async def test_deadline_does_not_wait_for_an_engine_stuck_in_a_step() -> None:
    # Each scripted step takes a minute (a loaded machine's decoding step, taken to the limit):
    # the cancellation at the deadline would only reach the engine after it, so the session
    # answers from the first token each sample streamed, before the deadline.
    engine = ScriptedEngine([LONG], step_s=60.0)
    try:
        result = await run_strategy(
            "self-consistency", engine, "Q?", {"n": 3}, budget=Budget(max_seconds=0.3)
        )
    finally:
        for task in engine._tasks:
            task.cancel()
    assert result.latency_s < 5  # not the minute the step takes
    assert result.stopped_by == "max_seconds"
    assert [c.finish_reason for c in result.candidates] == ["cancelled"] * 3
    assert [c.completion_tokens for c in result.candidates] == [1, 1, 1]
    assert result.usage.completion_tokens == 3 and result.usage.prompt_tokens > 0
    assert result.answer == "7" and result.votes == {"7": 3.0}
    assert any("did not hand the samples back" in w for w in result.warnings)


async def test_deadline_stops_concurrent_requests_and_refuses_new_ones() -> None:
    engine = ScriptedEngine([LONG], step_s=SLOW_S)
    session = Session(engine, strategy="test", budget=Budget(max_seconds=0.1))
    first, second = await asyncio.gather(
        session.generate(QUESTION, 2), session.generate(QUESTION, 3)
    )
    finishes = [c.finish_reason for g in (first, second) for c in g.completions]
    assert finishes == ["cancelled"] * 5
    assert session.stopped_by == "max_seconds" and session.exhausted
    with pytest.raises(BudgetExhausted) as caught:
        await session.generate(QUESTION, 1)
    assert caught.value.limit == "max_seconds"
    assert len(engine.requests) == 2  # nothing started after the deadline


async def test_deadline_between_requests_refuses_the_next_one() -> None:
    """A deadline that passes while no request runs (the timer is disarmed) still ends the
    session: the next request is refused."""
    engine = ScriptedEngine(["The answer is 5."])
    session = Session(engine, strategy="test", budget=Budget(max_seconds=0.05))
    await session.generate(QUESTION, 1)
    assert session.stopped_by is None
    await asyncio.sleep(0.1)
    assert session.stopped_by is None and session.exhausted and session.seconds_left == 0
    with pytest.raises(BudgetExhausted, match="max_seconds"):
        await session.generate(QUESTION, 1)
    assert len(engine.requests) == 1


async def test_deadline_in_a_sampling_loop() -> None:
    """adaptive-consistency samples round after round; the deadline ends the loop with the
    vote of the rounds drawn so far."""
    engine = ScriptedEngine(lambda _r, k: f"{'x ' * 20}The answer is {k % 2}.", step_s=SLOW_S)
    result = await run_strategy(
        "adaptive-consistency",
        engine,
        "Q?",
        {"batch": 2, "max_samples": 64, "confidence": 0.999},
        budget=Budget(max_seconds=0.3),
    )
    assert result.stopped_by == "max_seconds"
    assert 2 <= result.samples < 64
    assert sum(result.votes.values()) >= 1


class SlowJudge(Verifier):
    """Judges with one engine request per candidate, through the session (so the budget
    applies); remembers how many it scored."""

    name: ClassVar[str] = "slow-judge"

    def __init__(self) -> None:
        self.scored = 0

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        await session.generate(QUESTION, 1, step="verify")
        self.scored += 1
        return Score(value=1.0)


async def test_verifier_calls_after_the_deadline_leave_candidates_unscored() -> None:
    engine = ScriptedEngine([LONG], step_s=SLOW_S)
    judge = SlowJudge()
    result = await run_strategy(
        "best-of-n",
        engine,
        "Q?",
        {"n": 3, "verifier": "slow-judge"},
        budget=Budget(max_seconds=0.1),
        verifiers={"slow-judge": judge},
    )
    assert result.stopped_by == "max_seconds"
    assert judge.scored == 0 and len(engine.requests) == 1
    assert any("ran out of budget; 3 candidate(s) left unscored" in w for w in result.warnings)
    assert result.answer == "7"  # every candidate scores 0; the answer they share wins


# --- dollars --------------------------------------------------------------------------------------
PER_TOKEN = TokenPrice(input_usd_per_mtok=1e3, output_usd_per_mtok=1e4)  # $0.001 in, $0.01 out


async def test_max_usd_at_a_token_price() -> None:
    engine = ScriptedEngine([LONG], prompt_tokens=12)
    budget = Budget(max_usd=0.2)
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 3}, budget=budget, price=PER_TOKEN
    )
    assert result.stopped_by == "max_usd"
    usage, cost = result.usage, result.cost_usd
    assert cost == pytest.approx(usage.prompt_tokens * 0.001 + usage.completion_tokens * 0.01)
    # one step of each running sample may be in flight when the limit is seen
    assert cost is not None and 0.2 - 0.01 <= cost <= 0.2 + 3 * 0.01
    # the request asked only for what the dollars left buy after its (estimated) prompt
    sent = engine.requests[0]
    prompt, exact = estimate_prompt_tokens(engine, sent)
    assert not exact
    assert sent.params.max_tokens == math.floor((0.2 - prompt * 0.001) / 0.01)


async def test_max_usd_refuses_a_request_it_cannot_pay_for() -> None:
    engine = ScriptedEngine(["The answer is 1."], prompt_tokens=5)
    session = Session(engine, strategy="test", budget=Budget(max_usd=0.05), price=PER_TOKEN)
    await session.generate(QUESTION, 1)  # 5 prompt + 4 words: $0.045
    with pytest.raises(BudgetExhausted, match="max_usd"):
        await session.generate(QUESTION, 1)
    assert session.stopped_by == "max_usd" and len(engine.requests) == 1


async def test_max_usd_at_an_hourly_price_is_a_deadline() -> None:
    engine = ScriptedEngine([LONG], step_s=SLOW_S)
    dollar_a_second = HourlyPrice(usd_per_hour=3600)
    result = await run_strategy(
        "self-consistency",
        engine,
        "Q?",
        {"n": 2},
        budget=Budget(max_usd=0.1, max_seconds=60),
        price=dollar_a_second,
    )
    assert result.stopped_by == "max_usd"
    assert all(c.finish_reason == "cancelled" for c in result.candidates)
    assert result.cost_usd == pytest.approx(result.latency_s)


async def test_the_earlier_of_deadline_and_dollars_names_the_limit() -> None:
    engine = ScriptedEngine([LONG], step_s=SLOW_S)
    result = await run_strategy(
        "self-consistency",
        engine,
        "Q?",
        {"n": 2},
        budget=Budget(max_usd=100, max_seconds=0.1),
        price=HourlyPrice(usd_per_hour=3600),
    )
    assert result.stopped_by == "max_seconds"


async def test_cost_is_reported_without_a_dollar_budget() -> None:
    engine = ScriptedEngine(["The answer is 2."], prompt_tokens=10)
    priced = await run_strategy("self-consistency", engine, "Q?", {"n": 2}, price=PER_TOKEN)
    assert priced.cost_usd == pytest.approx(10 * 0.001 + 8 * 0.01)
    unpriced = await run_strategy("self-consistency", engine, "Q?", {"n": 2})
    assert unpriced.cost_usd is None  # not the embedded engine: no default price


async def test_unreachable_dollar_budgets_are_refused_before_anything_is_spent() -> None:
    engine = ScriptedEngine(["The answer is 2."])
    with pytest.raises(BudgetError, match=r"max_usd=\$0.001 cannot be met: the prompt alone"):
        await run_strategy(
            "self-consistency",
            engine,
            "What is the sum of the first hundred primes? " * 5,
            budget=Budget(max_usd=0.001),
            price=PER_TOKEN,
        )
    with pytest.raises(BudgetError, match="max_usd needs a price for model 'scripted'"):
        await run_strategy("self-consistency", engine, "Q?", budget=Budget(max_usd=1))
    assert engine.requests == []


async def test_a_judge_model_is_priced_at_its_own_price() -> None:
    engine = ScriptedEngine(["The answer is 2."], prompt_tokens=10)
    judge = ScriptedEngine(["Yes"], prompt_tokens=10)
    judge.model = "judge"
    judge_price = TokenPrice(input_usd_per_mtok=1e3, output_usd_per_mtok=1e5)  # $0.001, $0.1
    result = await run_strategy(
        "best-of-n",
        engine,
        "Q?",
        {"n": 2, "verifier": "llm-judge"},
        verifiers={"llm-judge": LLMJudgeVerifier(engine=judge)},
        prices={"scripted": PER_TOKEN, "judge": judge_price},
    )
    assert len(judge.requests) == 2 and result.samples == 4
    sampled = 10 * 0.001 + 2 * 4 * 0.01  # one request of two 4-token samples
    judged = 2 * (10 * 0.001 + 1 * 0.1)  # two one-token verdicts
    assert result.cost_usd == pytest.approx(sampled + judged)
    with pytest.raises(BudgetError, match="model 'judge' \\(the judge's model\\)"):
        await run_strategy(
            "best-of-n",
            engine,
            "Q?",
            {"n": 2, "verifier": "llm-judge"},
            verifiers={"llm-judge": LLMJudgeVerifier(engine=judge)},
            price=PER_TOKEN,
            budget=Budget(max_usd=1),
        )
    assert len(engine.requests) == 1 and len(judge.requests) == 2  # refused before spending


# --- the real model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(smollm2_path, n_ctx=4096, max_sequences=4)
    yield engine
    engine.close()


@pytest.mark.model
async def test_deadline_hits_mid_sample_on_the_real_model(smollm2: EmbeddedEngine) -> None:
    long = SamplingParams(max_tokens=1500, ignore_eos=True, seed=1)  # about 15 s, unstopped
    result = await run_strategy(
        "self-consistency",
        smollm2,
        "Count from one to one thousand in words.",
        {"n": 2},
        budget=Budget(max_seconds=1.0),
        sampling=long,
    )
    assert result.stopped_by == "max_seconds"
    assert [c.finish_reason for c in result.candidates] == ["cancelled", "cancelled"]
    tokens = [c.completion_tokens for c in result.candidates]
    assert all(0 < t < 1500 for t in tokens)
    assert result.usage.completion_tokens == sum(tokens)
    assert result.usage.prompt_tokens > 0
    assert result.cost_usd is not None and result.cost_usd > 0  # the default machine price
    assert isinstance(engine_price(smollm2), HourlyPrice)
    request = GenerationRequest(messages=tuple(QUESTION))
    assert estimate_prompt_tokens(smollm2, request)[1]  # the embedded engine counts exactly
