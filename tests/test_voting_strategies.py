"""best-of-n, weighted-vote, deepconf and adaptive-consistency: every branch on the scripted engine
(one word = one token, scripted logprobs), then each once on the real SmolLM2 model."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.budget import Budget
from ponder.cli import main
from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.types import GenerationRequest, Message, SampleDelta, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.strategies.adaptive_consistency import beta_majority_probability
from ponder.strategies.deepconf import ConfidenceGuard
from ponder.strategies.registry import get_strategy, run_strategy, strategies
from ponder.strategies.result import Candidate, Result, Score
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier
from ponder.verifiers.llm_judge import LLMJudgeVerifier
from ponder.verifiers.self_certainty import SelfCertaintyVerifier
from tests.scripted_engine import ScriptedEngine

NEW = ("best-of-n", "weighted-vote", "deepconf", "adaptive-consistency")


# --- test-only verifiers -----------------------------------------------------------------------
class TableVerifier(Verifier):
    """Scores by answer from a table; remembers what it was asked to judge."""

    name: ClassVar[str] = "table"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.judged: list[int] = []

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        self.judged.append(candidate.index)
        return Score(value=self.table.get(candidate.answer or "", 0.0))


class LogprobVerifier(Verifier):
    """Needs logprobs: the candidate's mean token probability."""

    name: ClassVar[str] = "mean-prob"
    needs_logprobs: ClassVar[bool] = True

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        lp = candidate.logprobs or []
        return Score(value=math.exp(sum(e.logprob for e in lp) / len(lp)) if lp else 0.0)


class JudgeVerifier(Verifier):
    """Draws one judge sample per candidate through the session (so it spends budget, and raises
    BudgetExhausted when none is left); 'yes' scores 1."""

    name: ClassVar[str] = "judge"

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        prompt = [Message(role="user", content=f"JUDGE {candidate.text}")]
        generation = await session.generate(prompt, 1, step="judge")
        return Score(value=1.0 if "yes" in generation.completions[0].text else 0.0)


def judged_engine(solutions: list[str], verdict: str = "yes fine") -> ScriptedEngine:
    """Solutions in order; judge requests (prompt starting with JUDGE) get `verdict`."""
    drawn: list[int] = []

    def script(request: GenerationRequest, k: int) -> str:
        assert request.messages is not None
        content = request.messages[-1].content
        if isinstance(content, str) and content.startswith("JUDGE"):
            return verdict
        drawn.append(k)
        return solutions[(len(drawn) - 1) % len(solutions)]

    return ScriptedEngine(script)


def steps(result: Result) -> list[str]:
    return [s.step for s in result.trace]


def detail(result: Result, step: str) -> list[dict[str, Any]]:
    return [s.detail for s in result.trace if s.step == step]


# --- listing and parameters ----------------------------------------------------------------------
def test_the_new_strategies_are_listed_with_described_params() -> None:
    assert set(NEW) <= set(strategies())
    out = CliRunner().invoke(main, ["strategies", "--json"])
    assert out.exit_code == 0, out.output
    listed = {s["name"]: s for s in json.loads(out.stdout)}
    assert set(NEW) <= set(listed)
    for name in NEW:
        for row in listed[name]["params"]:
            assert row["description"], (name, row["name"])


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("best-of-n", {"n": 0}, r"n: Input should be greater than or equal to 1"),
        ("best-of-n", {"top_logprobs": 21}, r"top_logprobs: .*less than or equal to 20"),
        ("weighted-vote", {"verifier": ""}, r"verifier: "),
        ("deepconf", {"keep_percent": 0}, r"keep_percent: Input should be greater than 0"),
        ("deepconf", {"keep_percent": 101}, r"keep_percent: .*less than or equal to 100"),
        ("deepconf", {"window": 0}, r"window: Input should be greater than or equal to 1"),
        ("deepconf", {"mode": "sideways"}, r"mode: Input should be 'offline' or 'online'"),
        ("deepconf", {"score": "mean"}, r"score: "),
        ("deepconf", {"consensus": 1.5}, r"consensus: .*less than or equal to 1"),
        ("deepconf", {"top_logprobs": 0}, r"top_logprobs: .*greater than or equal to 1"),
        ("adaptive-consistency", {"confidence": 1.0}, r"confidence: Input should be less than 1"),
        ("adaptive-consistency", {"confidence": 0.5}, r"confidence: .*greater than 0.5"),
        ("adaptive-consistency", {"window": 1}, r"window: .*greater than or equal to 2"),
        ("adaptive-consistency", {"rule": "vibes"}, r"rule: Input should be 'beta' or 'esc'"),
        ("adaptive-consistency", {"batch": 0}, r"batch: "),
        ("adaptive-consistency", {"bogus": 1}, r"unknown parameter 'bogus'"),
    ],
)
def test_bad_params_name_the_parameter(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        get_strategy(name).parse_params(params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("best-of-n", {"verifier": "t"}),
        ("weighted-vote", {"verifier": "t"}),
        ("deepconf", {"mode": "offline"}),
        ("deepconf", {"mode": "online"}),
        ("adaptive-consistency", {}),
    ],
)
async def test_a_spent_session_gives_an_empty_result_not_a_crash(
    name: str, params: dict[str, Any]
) -> None:
    session = Session(
        ScriptedEngine(["\\boxed{1}"]),
        strategy=name,
        budget=Budget(max_samples=1),
        verifiers={"t": TableVerifier({})},
    )
    await session.sample([Message(role="user", content="warm")], 1)
    strategy = get_strategy(name)
    result = await strategy.run(session, "Q?", strategy.parse_params(params))
    assert result.answer is None and result.candidates == []
    assert result.stopped_by == "max_samples" and result.samples == 1


# --- best-of-n and weighted-vote -----------------------------------------------------------------
THREES_AND_A_FIVE = ["\\boxed{3}", "so \\boxed{3}", "it is \\boxed{5}", "\\boxed{3}"]


async def test_a_verifier_score_changes_the_winner() -> None:
    verifier = TableVerifier({"3": 0.4, "5": 0.9})
    engine = ScriptedEngine(THREES_AND_A_FIVE)
    result = await run_strategy(
        "best-of-n", engine, "Q?", {"n": 4, "verifier": "table"}, verifiers={"table": verifier}
    )
    assert result.answer == "5"  # the majority (3) loses to the better-scored minority
    assert result.votes == {"5": 0.9, "3": 0.4}  # best score per answer
    assert result.vote_share == pytest.approx(0.9 / 1.3)
    assert [c.scores["table"].value for c in result.candidates] == [0.4, 0.4, 0.9, 0.4]
    assert steps(result) == ["sample", "verify", "select"]
    assert detail(result, "select")[0]["candidate"] == 2
    (request,) = engine.requests
    assert not request.params.wants_logprobs  # this verifier does not read logprobs


async def test_ties_go_to_the_answer_with_more_votes_then_the_earliest() -> None:
    even = TableVerifier({"3": 0.5, "4": 0.5})
    engine = ScriptedEngine(["\\boxed{4}", "\\boxed{3}", "\\boxed{3}"])
    result = await run_strategy(
        "best-of-n", engine, "Q?", {"n": 3, "verifier": "t"}, verifiers={"t": even}
    )
    assert result.answer == "3"
    assert list(result.votes) == ["3", "4"]
    assert detail(result, "select")[0]["candidate"] == 1  # the earliest candidate of "3"

    engine = ScriptedEngine(["\\boxed{4}", "\\boxed{3}"])
    result = await run_strategy(
        "best-of-n", engine, "Q?", {"n": 2, "verifier": "t"}, verifiers={"t": even}
    )
    assert result.answer == "4" and list(result.votes) == ["4", "3"]


async def test_answerless_samples_are_not_judged_and_cannot_win() -> None:
    verifier = TableVerifier({"7": 0.1})
    engine = ScriptedEngine(["no idea", "\\boxed{7}", "hmm"])
    result = await run_strategy(
        "best-of-n", engine, "Q?", {"n": 3, "verifier": "t"}, verifiers={"t": verifier}
    )
    assert verifier.judged == [1]
    assert result.answer == "7"
    assert detail(result, "verify")[0]["scores"] == {1: 0.1}

    nothing = await run_strategy(
        "best-of-n",
        ScriptedEngine(["hmm"]),
        "Q?",
        {"n": 2, "verifier": "t"},
        verifiers={"t": verifier},
    )
    assert nothing.answer is None and nothing.votes == {} and nothing.vote_share == 0.0
    assert detail(nothing, "vote")[0]["unscored"] is True


async def test_a_verifier_that_reads_logprobs_gets_them() -> None:
    engine = ScriptedEngine(
        ["sure \\boxed{2}", "maybe \\boxed{9}"],
        logprobs=lambda k, i, w: -0.1 if k == 0 else -2.0,
    )
    result = await run_strategy(
        "best-of-n",
        engine,
        "Q?",
        {"n": 2, "verifier": "lp", "top_logprobs": 3},
        verifiers={"lp": LogprobVerifier()},
    )
    (request,) = engine.requests
    assert request.params.logprobs and request.params.top_logprobs == 3
    assert result.answer == "2"
    assert result.votes["2"] == pytest.approx(math.exp(-0.1))


class BrokenVerifier(Verifier):
    name: ClassVar[str] = "broken"

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        raise RuntimeError("verifier bug")


async def test_a_verifier_bug_is_not_swallowed() -> None:
    with pytest.raises(RuntimeError, match="verifier bug"):
        await run_strategy(
            "best-of-n",
            ScriptedEngine(["\\boxed{1}"]),
            "Q?",
            {"n": 2, "verifier": "b"},
            verifiers={"b": BrokenVerifier()},
        )


async def test_an_unknown_verifier_fails_before_any_compute() -> None:
    engine = ScriptedEngine(["\\boxed{1}"])
    with pytest.raises(InvalidRequestError, match="unknown verifier 'nope'"):
        await run_strategy("best-of-n", engine, "Q?", {"verifier": "nope"})
    assert engine.requests == []


async def test_judge_tokens_are_counted_with_the_candidates() -> None:
    engine = judged_engine(["a \\boxed{1}", "b c \\boxed{2}"], verdict="yes it is right")
    result = await run_strategy(
        "weighted-vote",
        engine,
        "Q?",
        {"n": 2, "verifier": "judge"},
        verifiers={"judge": JudgeVerifier()},
    )
    candidate_tokens = sum(c.completion_tokens for c in result.candidates)
    assert candidate_tokens == 5
    assert result.usage.completion_tokens == candidate_tokens + 2 * 4  # two judge calls
    assert result.samples == 4
    assert steps(result).count("judge") == 2


async def test_a_verifier_out_of_budget_falls_back_to_the_majority() -> None:
    engine = judged_engine(["\\boxed{8}", "\\boxed{6}", "\\boxed{6}"])
    result = await run_strategy(
        "best-of-n",
        engine,
        "Q?",
        {"n": 3, "verifier": "judge"},
        verifiers={"judge": JudgeVerifier()},
        budget=Budget(max_samples=3),
    )
    assert result.stopped_by == "max_samples"
    assert result.answer == "6"  # every score is 0, so the tie goes to the bigger group
    assert result.votes == {"6": 0.0, "8": 0.0}
    assert any("ran out of budget" in w for w in result.warnings)
    assert result.samples == 3


async def test_best_of_n_under_a_token_budget_returns_what_it_has() -> None:
    engine = ScriptedEngine(["\\boxed{2} " + "w " * 30], step_s=0.001)
    result = await run_strategy(
        "best-of-n",
        engine,
        "Q?",
        {"n": 2, "verifier": "t"},
        verifiers={"t": TableVerifier({"2": 1.0})},
        budget=Budget(max_tokens=10),
    )
    assert result.stopped_by == "max_tokens"
    assert {c.finish_reason for c in result.candidates} == {"cancelled"}
    assert result.answer == "2"  # cut short by the budget, the samples still hold an answer
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)


@pytest.mark.parametrize(
    ("table", "winner"),
    [({"3": 0.1, "5": 0.5}, "5"), ({"3": 0.2, "5": 0.5}, "3")],  # 0.3 < 0.5 < 0.6
)
async def test_weighted_vote_sums_scores_per_answer(table: dict[str, float], winner: str) -> None:
    result = await run_strategy(
        "weighted-vote",
        ScriptedEngine(THREES_AND_A_FIVE),
        "Q?",
        {"n": 4, "verifier": "t"},
        verifiers={"t": TableVerifier(table)},
    )
    assert result.votes == pytest.approx({"3": 3 * table["3"], "5": table["5"]})
    assert result.answer == winner
    assert next(iter(result.votes)) == winner
    assert steps(result) == ["sample", "verify", "vote"]


async def test_weighted_vote_groups_equivalent_answers() -> None:
    engine = ScriptedEngine(["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{2}"])
    result = await run_strategy(
        "weighted-vote",
        engine,
        "Q?",
        {"n": 3, "verifier": "t"},
        verifiers={"t": TableVerifier({"1/2": 0.3, "0.5": 0.3, "2": 0.5})},
    )
    assert result.answer == "1/2" and result.votes == pytest.approx({"1/2": 0.6, "2": 0.5})


# --- deepconf offline ----------------------------------------------------------------------------
def per_sample(confidences: list[float]) -> Any:
    """A logprob script giving sample k the constant token confidence confidences[k % len]."""
    return lambda k, i, w: -confidences[k % len(confidences)]


MAJORITY_UNSURE = ["\\boxed{1}", "so \\boxed{1}", "\\boxed{1}", "surely \\boxed{2}"]


@pytest.mark.parametrize(
    ("keep", "winner", "kept"),
    [(100, "1", [0, 1, 2, 3]), (90, "1", [0, 1, 2, 3]), (25, "2", [3]), (10, "2", [3])],
)
async def test_offline_keeps_the_most_confident_percent(
    keep: float, winner: str, kept: list[int]
) -> None:
    engine = ScriptedEngine(MAJORITY_UNSURE, logprobs=per_sample([3.0, 3.0, 3.0, 4.0]))
    result = await run_strategy(
        "deepconf", engine, "Q?", {"mode": "offline", "n": 4, "keep_percent": keep}
    )
    assert result.answer == winner
    (filtering,) = detail(result, "filter")
    assert filtering["kept"] == kept
    assert filtering["threshold"] == pytest.approx(np.percentile([3, 3, 3, 4], 100 - keep))
    assert result.votes == pytest.approx(
        {a: w for a, w in (("1", 3.0 * sum(k < 3 for k in kept)), ("2", 4.0)) if w}
    )
    (request,) = engine.requests
    assert request.params.logprobs and request.params.top_logprobs == 20
    assert steps(result) == ["sample", "filter", "vote"]


async def test_offline_threshold_ignores_answerless_traces() -> None:
    engine = ScriptedEngine(
        ["\\boxed{1}", "lost", "\\boxed{2}", "lost"], logprobs=per_sample([1.0, 9.0, 2.0, 9.0])
    )
    result = await run_strategy(
        "deepconf", engine, "Q?", {"mode": "offline", "n": 4, "keep_percent": 50}
    )
    (filtering,) = detail(result, "filter")
    assert filtering["threshold"] == pytest.approx(1.5)  # over the answered traces' 1 and 2
    assert filtering["kept"] == [2]
    assert result.answer == "2" and result.vote_share == 1.0


async def test_tail_score_weighs_the_end_of_the_trace() -> None:
    # Sample 0 dips in the middle but ends sure; sample 1 is steady but middling.
    def script(k: int, i: int, w: str) -> float:
        if k == 0:
            return -0.5 if i == 1 else -5.0
        return -2.0

    texts = ["a b c d \\boxed{1}", "a b c d \\boxed{2}"]
    params = {"mode": "offline", "n": 2, "keep_percent": 100, "window": 2}
    lowest = await run_strategy("deepconf", ScriptedEngine(texts, logprobs=script), "Q?", params)
    assert lowest.votes == pytest.approx({"2": 2.0, "1": 2.75})  # lowest windows: 2.75 vs 2
    assert lowest.answer == "1"
    tail = await run_strategy(
        "deepconf",
        ScriptedEngine(texts, logprobs=script),
        "Q?",
        {**params, "score": "tail", "tail_window": 2},
    )
    assert tail.votes == pytest.approx({"1": 5.0, "2": 2.0})


async def test_without_logprobs_deepconf_is_a_plain_majority_vote() -> None:
    for mode in ("offline", "online"):
        result = await run_strategy(
            "deepconf", ScriptedEngine(MAJORITY_UNSURE), "Q?", {"mode": mode, "n": 4}
        )
        assert result.answer == "1" and result.votes == {"1": 3.0, "2": 1.0}
        assert any("no logprobs" in w for w in result.warnings)


def delta(*confidences: float) -> SampleDelta:
    """A delta of len(confidences) tokens, each with that DeepConf confidence (k = 2)."""
    entries = [
        {"token": "t", "logprob": -c, "top_logprobs": [{"token": "t", "logprob": -c}] * 2}
        for c in confidences
    ]
    return SampleDelta.model_validate(
        {
            "index": 0,
            "text": "t" * len(confidences),
            "tokens": len(confidences),
            "logprobs": entries,
        }
    )


def test_the_guard_judges_every_full_window_even_inside_one_delta() -> None:
    guard = ConfidenceGuard(window=2, threshold=2.0, k=2)
    assert not guard(0, delta(0.1))  # no full window yet, however unsure
    assert not guard(1, delta(3.0, 3.0, 3.0))
    assert guard(1, delta(3.0, 0.5, 3.0))  # the dip is inside the delta: (3 + 0.5) / 2 < 2
    assert guard.stopped == {1: {"tokens": 6, "confidence": 1.75}}
    assert not guard(1, delta(0.0))  # already stopped: not cancelled twice
    assert not guard(0, delta(3.9))  # (0.1 + 3.9) / 2 = 2: not below
    assert not guard(0, SampleDelta(index=0, text="x", tokens=1))  # no logprobs: no judgement


# --- deepconf online -----------------------------------------------------------------------------
def marked(k: int, i: int, w: str) -> float:
    """Words 'um' are unsure (confidence 0.2); everything else is sure (confidence 3)."""
    return -0.2 if w == "um" else -3.0


async def test_online_threshold_comes_from_the_warmup() -> None:
    warm = ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "\\boxed{3}"]
    engine = ScriptedEngine(warm, logprobs=per_sample([4.0, 2.0, 1.0, 3.0]))
    result = await run_strategy(
        "deepconf", engine, "Q?", {"n": 4, "warmup": 4, "keep_percent": 50, "window": 2}
    )
    (threshold,) = detail(result, "threshold")
    assert threshold["threshold"] == pytest.approx(np.percentile([4, 2, 1, 3], 50))  # 2.5
    assert threshold["lowest_group"] == {0: 4.0, 1: 2.0, 2: 1.0, 3: 3.0}
    assert threshold["voters"] == [0, 3]  # warm-up traces below the threshold do not vote
    assert result.votes == {"1": 4.0, "3": 3.0}
    assert result.samples == 4 and steps(result) == ["warmup", "threshold", "vote"]
    assert engine.requests[0].params.n == 4


async def test_online_stops_an_unsure_trace_mid_generation() -> None:
    texts = [
        "a b c \\boxed{1}",
        "a b c \\boxed{2}",
        "a b um um um um um um \\boxed{2}",  # would make answer 2 win, if it were let finish
        "a b c \\boxed{1}",
    ]
    engine = ScriptedEngine(texts, logprobs=marked)
    result = await run_strategy(
        "deepconf", engine, "Q?", {"n": 4, "warmup": 2, "batch": 2, "window": 2}
    )
    stopped = result.candidates[2]
    assert stopped.finish_reason == "cancelled"
    # Window of 2: tokens a, b sure; the first 'um' makes the window mean (3 + 0.2) / 2 < 3.
    assert stopped.completion_tokens == 3
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == 4 + 4 + 3 + 4
    (round_,) = detail(result, "round")
    assert round_["stopped_low_confidence"] == {2: {"tokens": 3, "confidence": pytest.approx(1.6)}}
    assert result.votes == {"1": 6.0, "2": 3.0}  # the stopped trace does not vote
    assert detail(result, "vote")[0]["voters"] == [0, 1, 3]
    assert engine.requests[1].params.n == 2


async def test_online_stops_sampling_once_the_warmup_agrees() -> None:
    engine = ScriptedEngine(["\\boxed{7}"], logprobs=marked)
    result = await run_strategy("deepconf", engine, "Q?", {"n": 16, "warmup": 4})
    assert result.answer == "7" and result.vote_share == 1.0
    assert result.samples == 4 < 16
    assert len(engine.requests) == 1


async def test_online_one_voter_is_no_consensus() -> None:
    engine = ScriptedEngine(["lost", "\\boxed{4}", "\\boxed{4}", "\\boxed{5}"], logprobs=marked)
    result = await run_strategy("deepconf", engine, "Q?", {"n": 4, "warmup": 2, "batch": 2})
    assert [r.params.n for r in engine.requests] == [2, 2]  # one answered warm-up trace: go on
    assert result.votes == {"4": 6.0, "5": 3.0}


async def test_online_consensus_mid_round_cancels_the_rest() -> None:
    long = "w " * 20
    texts = ["\\boxed{1}", "\\boxed{2}"] + ["\\boxed{1}"] * 3 + [long + "\\boxed{2}"] * 5
    engine = ScriptedEngine(texts, logprobs=marked)
    result = await run_strategy(
        "deepconf",
        engine,
        "Q?",
        {"n": 10, "warmup": 2, "batch": 8, "consensus": 0.8, "keep_percent": 100},
    )
    # Warm-up 1 vs 2 is split; the three quick "1"s make it 4 of 5 = 0.8 and the rest is dropped.
    assert result.answer == "1" and result.vote_share == pytest.approx(0.8)
    cancelled = [c for c in result.candidates if c.finish_reason == "cancelled"]
    assert len(cancelled) == 5 and all(c.completion_tokens < 21 for c in cancelled)
    assert result.votes == {"1": 12.0, "2": 3.0}  # cancelled traces do not vote
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens < 2 + 3 + 5 * 21
    assert detail(result, "round")[0]["decisive"] is True


async def test_online_budget_exhaustion_returns_the_best_so_far() -> None:
    texts = ["\\boxed{1}", "\\boxed{2}", "\\boxed{1}"]
    engine = ScriptedEngine(texts, logprobs=marked)
    result = await run_strategy(
        "deepconf",
        engine,
        "Q?",
        {"n": 16, "warmup": 3, "batch": 2, "consensus": 1.0},
        budget=Budget(max_samples=6),
    )
    assert result.stopped_by == "max_samples"
    assert result.samples == 6 and len(result.candidates) == 6
    assert result.answer == "1"
    assert [r.params.n for r in engine.requests] == [3, 2, 1]


async def test_online_token_budget_mid_round_keeps_the_warmup_vote() -> None:
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "a b c d e f g h i j"]
    engine = ScriptedEngine(texts, logprobs=marked, step_s=0.001)
    result = await run_strategy(
        "deepconf",
        engine,
        "Q?",
        {"n": 8, "warmup": 3, "batch": 2, "consensus": 1.0, "keep_percent": 100},
        budget=Budget(max_tokens=8),
    )
    assert result.stopped_by == "max_tokens"
    assert result.answer == "1"
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert 8 <= result.usage.completion_tokens <= 8 + 2


# --- adaptive-consistency ------------------------------------------------------------------------
def beta_tail_numerically(v1: int, v2: int) -> float:
    a, b = v1 + 1, v2 + 1
    x = np.linspace(0.5, 1.0, 200_001)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    with np.errstate(divide="ignore"):
        pdf = np.exp(log_norm + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))
    return float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))


def test_beta_majority_probability_is_exact() -> None:
    assert beta_majority_probability(3, 0) == 1 - 0.5**4  # Beta(4, 1): 0.9375
    assert beta_majority_probability(0, 0) == 0.5
    assert beta_majority_probability(4, 4) == 0.5
    assert beta_majority_probability(1, 0) == 0.75
    for v1, v2 in [(5, 2), (7, 3), (12, 9), (2, 6)]:
        assert beta_majority_probability(v1, v2) == pytest.approx(
            beta_tail_numerically(v1, v2), abs=1e-6
        )
        assert beta_majority_probability(v1, v2) + beta_majority_probability(v2, v1) == 1.0
    big = beta_majority_probability(220, 180)
    assert 0.97 < big < 1.0  # no overflow for large counts
    with pytest.raises(ValueError, match="non-negative"):
        beta_majority_probability(-1, 0)


async def test_beta_rule_stops_after_the_settling_round() -> None:
    # Two agreeing samples give 0.875; four give 1 - 0.5**5 = 0.969 >= 0.95: stop after round 2.
    engine = ScriptedEngine(["\\boxed{3}"])
    result = await run_strategy("adaptive-consistency", engine, "Q?", {})
    assert result.samples == 4 and len(engine.requests) == 2
    checks = detail(result, "stop-check")
    assert [c["p"] for c in checks] == [0.875, 1 - 0.5**5]
    assert [c["stop"] for c in checks] == [False, True]
    assert result.answer == "3" and result.vote_share == 1.0
    assert detail(result, "vote")[0]["settled"] is True


async def test_beta_rule_on_a_split_sequence() -> None:
    answers = ["3", "4", "3", "3", "3", "4", "3", "3", "3", "3"]
    engine = ScriptedEngine([f"\\boxed{{{a}}}" for a in answers])
    result = await run_strategy("adaptive-consistency", engine, "Q?", {"max_samples": 16})
    checks = [(c["v1"], c["v2"], c["stop"]) for c in detail(result, "stop-check")]
    # (1,1) .5; (3,1) .8125; (4,2) .773; (6,2) .910; (8,2) .967 -> stop after 10 samples
    assert checks == [(1, 1, False), (3, 1, False), (4, 2, False), (6, 2, False), (8, 2, True)]
    assert result.samples == 10 and result.votes == {"3": 8.0, "4": 2.0}


async def test_beta_rule_cancels_the_rest_of_a_round_once_settled() -> None:
    quick, slow = "\\boxed{5}", "w " * 15 + "\\boxed{5}"
    engine = ScriptedEngine([quick] * 4 + [slow] * 4)
    result = await run_strategy("adaptive-consistency", engine, "Q?", {"batch": 8})
    assert result.samples == 8 and len(engine.requests) == 1
    cancelled = [c for c in result.candidates if c.finish_reason == "cancelled"]
    assert len(cancelled) == 4 and all(c.completion_tokens < 16 for c in cancelled)
    assert result.votes == {"5": 4.0}  # the samples we cancelled do not vote
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)


async def test_unsettled_votes_stop_at_max_samples() -> None:
    engine = ScriptedEngine(["\\boxed{1}", "\\boxed{2}"])
    result = await run_strategy("adaptive-consistency", engine, "Q?", {"max_samples": 5})
    assert result.samples == 5 and [r.params.n for r in engine.requests] == [2, 2, 1]
    assert detail(result, "vote")[0]["settled"] is False
    assert result.answer == "1" and result.vote_share == pytest.approx(3 / 5)
    assert result.stopped_by is None


async def test_adaptive_budget_exhaustion_returns_the_vote_so_far() -> None:
    engine = ScriptedEngine(["\\boxed{1}", "\\boxed{2}", "\\boxed{1}"])
    result = await run_strategy(
        "adaptive-consistency", engine, "Q?", {}, budget=Budget(max_samples=3)
    )
    assert result.stopped_by == "max_samples" and result.samples == 3
    assert result.answer == "1" and result.votes == {"1": 2.0, "2": 1.0}


async def test_esc_stops_after_the_first_unanimous_window() -> None:
    answers = ["3", "4", "3", "3", "3", "3", "9", "9", "9"]
    engine = ScriptedEngine([f"\\boxed{{{a}}}" for a in answers])
    result = await run_strategy(
        "adaptive-consistency", engine, "Q?", {"rule": "esc", "window": 3, "batch": 1}
    )
    assert [r.params.n for r in engine.requests] == [3, 3]  # the window, not the batch
    checks = detail(result, "stop-check")
    assert [c["window"] for c in checks] == [["3", "4", "3"], ["3", "3", "3"]]
    assert [c["stop"] for c in checks] == [False, True]
    assert result.answer == "3" and result.votes == {"3": 5.0, "4": 1.0}


async def test_esc_windows_without_an_answer_are_not_unanimous() -> None:
    engine = ScriptedEngine(["hmm"])
    result = await run_strategy(
        "adaptive-consistency", engine, "Q?", {"rule": "esc", "window": 2, "max_samples": 5}
    )
    assert [r.params.n for r in engine.requests] == [2, 2, 1]
    assert result.answer is None and not any(c["stop"] for c in detail(result, "stop-check"))


# --- the real model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=4)
    yield engine
    engine.close()


SMALL = SamplingParams(max_tokens=24, temperature=0.8, seed=7)
QUESTION = "What is 2 + 3?"


def assert_accounted(result: Result, max_samples: int) -> None:
    """Structural truths: candidates, a trace, samples within budget, and every generated token
    accounted for (candidates' own plus any verifier's, step by step in the trace)."""
    assert result.candidates and result.trace
    assert result.samples <= max_samples
    assert result.usage.prompt_tokens > 0
    for c in result.candidates:
        assert 1 <= c.completion_tokens <= 24
    assert result.usage.completion_tokens == sum(step.tokens for step in result.trace)
    if result.answer is not None:
        assert result.answer in result.votes


@pytest.mark.model
async def test_best_of_n_with_self_certainty_on_the_model(engine: EmbeddedEngine) -> None:
    result = await run_strategy(
        "best-of-n",
        engine,
        QUESTION,
        {"n": 3},  # the default verifier, self-certainty, reads top logprobs
        sampling=SMALL,
        verifiers={"self-certainty": SelfCertaintyVerifier()},
        budget=Budget(max_samples=3),
    )
    assert_accounted(result, 3)
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert all(c.logprobs and len(c.logprobs[0].top_logprobs) == 20 for c in result.candidates)
    for c in result.candidates:
        assert (c.answer is not None) == ("self-certainty" in c.scores)


@pytest.mark.model
async def test_weighted_vote_with_a_judge_on_the_model(engine: EmbeddedEngine) -> None:
    # The judge draws through the session: its tokens are in usage but not in the candidates.
    result = await run_strategy(
        "weighted-vote",
        engine,
        QUESTION,
        {"n": 3, "verifier": "llm-judge"},
        sampling=SMALL,
        verifiers={"llm-judge": LLMJudgeVerifier()},
    )
    answered = sum(c.answer is not None for c in result.candidates)
    assert_accounted(result, 3 + answered)
    assert result.samples == 3 + answered  # one judge call per answered candidate
    candidate_tokens = sum(c.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == candidate_tokens + answered  # a one-token verdict


@pytest.mark.model
@pytest.mark.parametrize("mode", ["offline", "online"])
async def test_deepconf_on_the_model(engine: EmbeddedEngine, mode: str) -> None:
    result = await run_strategy(
        "deepconf",
        engine,
        QUESTION,
        {"mode": mode, "n": 4, "warmup": 2, "batch": 2, "window": 4, "top_logprobs": 5},
        sampling=SMALL,
    )
    assert_accounted(result, 4)
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert all(c.logprobs is not None for c in result.candidates)
    assert steps(result)[-1] == "vote"


@pytest.mark.model
async def test_adaptive_consistency_on_the_model(engine: EmbeddedEngine) -> None:
    result = await run_strategy(
        "adaptive-consistency", engine, QUESTION, {"max_samples": 4, "batch": 2}, sampling=SMALL
    )
    assert_accounted(result, 4)
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert detail(result, "stop-check")
