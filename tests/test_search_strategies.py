"""think-longer, verify-refine and beam-search: every branch on the scripted engine (scripted by
prompt content), and one run each on the real SmolLM2 model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ponder.budget import Budget
from ponder.engines.base import GenerationHandle
from ponder.engines.types import GenerationRequest, Message, SampleEvent, SampleFinished
from ponder.errors import EngineError, InvalidRequestError
from ponder.strategies.registry import get_strategy, run_strategy, strategies
from ponder.strategies.result import Candidate, Result, Score
from ponder.strategies.session import Session
from ponder.strategies.think_longer import ANSWER_PREFILL
from ponder.strategies.verify_refine import REVIEW_SYSTEM_PROMPT, Review, parse_review
from ponder.verifiers.base import Verifier
from ponder.verifiers.llm_judge import LLMJudgeVerifier
from tests.scripted_engine import ScriptedEngine

# --- helpers -------------------------------------------------------------------------------------


def prefill(request: GenerationRequest) -> str | None:
    """The assistant reply a request continues, or None for a fresh reply."""
    if not request.continue_final or request.messages is None:
        return None
    content = request.messages[-1].content
    assert isinstance(content, str)
    return content


def last_user(request: GenerationRequest) -> str:
    assert request.messages is not None
    content = [m for m in request.messages if m.role == "user"][-1].content
    assert isinstance(content, str)
    return content


def system(request: GenerationRequest) -> str | None:
    assert request.messages is not None
    first = request.messages[0]
    return first.content if first.role == "system" and isinstance(first.content, str) else None


class FlakyEngine(ScriptedEngine):
    """A scripted engine whose requests matching `fails` raise an engine error."""

    def __init__(self, script: Callable[[GenerationRequest, int], str], **options: Any) -> None:
        self.fails: Callable[[GenerationRequest], bool] = options.pop("fails")
        super().__init__(script, **options)

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self.fails(request):
            raise EngineError("the backend fell over")
        return super().start(request)


def drawn_tokens(result: Result) -> int:
    """Tokens of every request, as the session recorded them step by step."""
    return sum(step.tokens for step in result.trace)


def steps(result: Result, name: str) -> list[dict[str, Any]]:
    return [step.detail for step in result.trace if step.step == name]


# --- think-longer --------------------------------------------------------------------------------


async def test_think_longer_suppresses_an_early_end_and_continues_the_same_reply() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        reply = prefill(request)
        if reply is None:
            return "a b c \\boxed{1}"  # 4 tokens: ends before min_thinking_tokens
        assert reply.endswith("\nWait,")
        return " no, d e f \\boxed{2}"

    engine = ScriptedEngine(script, verbatim=True)
    result = await run_strategy(
        "think-longer",
        engine,
        "Q?",
        {"min_thinking_tokens": 6, "max_thinking_tokens": 50, "max_extensions": 3},
    )
    (candidate,) = result.candidates
    assert candidate.text == "a b c \\boxed{1}\nWait, no, d e f \\boxed{2}"
    assert candidate.answer == "2" and result.answer == "2"
    assert candidate.completion_tokens == 4 + 5
    first, extension = engine.requests
    assert not first.continue_final and first.params.max_tokens == 50
    assert extension.continue_final and extension.params.max_tokens == 50 - 4
    assert extension.messages is not None and extension.messages[:-1] == first.messages
    assert [s.step for s in result.trace] == ["think", "wait", "trace", "vote"]
    assert steps(result, "trace")[0] == {
        "index": 0,
        "thinking_tokens": 9,
        "extensions": 1,
        "forced": False,
    }
    assert result.samples == 2 and result.usage.completion_tokens == drawn_tokens(result) == 9


async def test_think_longer_stops_extending_after_max_extensions() -> None:
    engine = ScriptedEngine(["x \\boxed{3}"])
    params = {"min_thinking_tokens": 100, "max_thinking_tokens": 200, "max_extensions": 2}
    result = await run_strategy("think-longer", engine, "Q?", params)
    assert [s.step for s in result.trace] == ["think", "wait", "wait", "trace", "vote"]
    assert result.candidates[0].text.count("Wait,") == 2 and result.answer == "3"


async def test_think_longer_forces_the_answer_at_the_cap() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        reply = prefill(request)
        if reply is None:
            return "w " * 30  # never ends by itself
        assert reply.endswith(ANSWER_PREFILL)
        return "42} and then some more words"

    engine = ScriptedEngine(script)
    params = {"min_thinking_tokens": 0, "max_thinking_tokens": 8, "answer_tokens": 5}
    result = await run_strategy("think-longer", engine, "Q?", params)
    (candidate,) = result.candidates
    assert candidate.text == "w " * 7 + "w" + ANSWER_PREFILL + "42}"
    assert result.answer == "42" and candidate.finish_reason == "stop"
    forced = engine.requests[1]
    assert forced.continue_final and forced.params.stop == ("}",)
    assert forced.params.max_tokens == 5
    assert steps(result, "trace")[0]["forced"] is True
    assert result.usage.completion_tokens == 8 + 1


async def test_the_forced_answer_keeps_going_past_inner_braces() -> None:
    intended = "\\frac{1}{2}} trailing words"

    def script(request: GenerationRequest, k: int) -> str:
        reply = prefill(request)
        if reply is None:
            return "think think think"
        written = reply.split(ANSWER_PREFILL)[1]
        return intended[len(written) :]

    engine = ScriptedEngine(script, verbatim=True)
    params = {"min_thinking_tokens": 0, "max_thinking_tokens": 2, "answer_tokens": 10}
    result = await run_strategy("think-longer", engine, "Q?", params)
    assert result.candidates[0].text.endswith("\\boxed{\\frac{1}{2}}")
    assert result.answer == "1/2"
    assert [s.step for s in result.trace].count("answer") == 3


async def test_a_natural_end_without_a_boxed_answer_is_also_made_to_answer() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return "7}" if prefill(request) else "I am done thinking"

    result = await run_strategy(
        "think-longer", ScriptedEngine(script), "Q?", {"min_thinking_tokens": 0}
    )
    assert result.answer == "7"
    assert [s.step for s in result.trace] == ["think", "answer", "trace", "vote"]


async def test_think_longer_runs_n_traces_and_votes() -> None:
    finals = ["\\boxed{7}", "\\boxed{9}", "\\boxed{7}"]

    def script(request: GenerationRequest, k: int) -> str:
        reply = prefill(request)
        if reply is None:
            return f"trace{k} starts"  # k = 0, 1, 2: too short, each is extended
        trace = int(reply.split()[0].removeprefix("trace"))
        return f"and {finals[trace]}"

    engine = ScriptedEngine(script)
    params = {"n": 3, "min_thinking_tokens": 3, "max_thinking_tokens": 20}
    result = await run_strategy("think-longer", engine, "Q?", params)
    assert engine.requests[0].params.n == 3  # one request, one shared prompt evaluation
    assert [c.answer for c in result.candidates] == ["7", "9", "7"]
    assert [c.index for c in result.candidates] == [0, 1, 2]
    assert result.answer == "7" and result.votes == {"7": 2, "9": 1}
    assert result.vote_share == pytest.approx(2 / 3)
    assert result.samples == 6 and len(steps(result, "trace")) == 3


async def test_one_failing_trace_does_not_sink_the_others() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return "and \\boxed{5}" if prefill(request) else f"trace{k} starts"

    engine = FlakyEngine(script, fails=lambda r: (prefill(r) or "").startswith("trace0"))
    params = {"n": 2, "min_thinking_tokens": 3, "max_thinking_tokens": 20}
    result = await run_strategy("think-longer", engine, "Q?", params)
    broken, fine = result.candidates
    assert broken.error == "the backend fell over" and broken.text == "trace0 starts"
    assert fine.error is None and fine.answer == "5"
    assert result.answer == "5"


async def test_think_longer_leaves_room_in_the_token_budget_to_answer() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return "42}" if prefill(request) else "w " * 100

    engine = ScriptedEngine(script)
    params = {"min_thinking_tokens": 0, "max_thinking_tokens": 500, "answer_tokens": 5}
    result = await run_strategy("think-longer", engine, "Q?", params, budget=Budget(max_tokens=20))
    assert engine.requests[0].params.max_tokens == 20 - 5
    assert result.answer == "42" and result.usage.completion_tokens == 16


async def test_think_longer_with_no_sample_left_keeps_the_model_answer() -> None:
    engine = ScriptedEngine(["so \\boxed{8}"])
    result = await run_strategy(
        "think-longer", engine, "Q?", {"min_thinking_tokens": 50}, budget=Budget(max_samples=1)
    )
    assert result.answer == "8" and result.samples == 1
    assert result.stopped_by == "max_samples"
    assert "Wait," not in result.candidates[0].text


async def test_a_token_budget_that_ends_mid_thought_returns_what_was_thought() -> None:
    engine = ScriptedEngine(["a 12 b " * 20], step_s=0.0)
    params = {"min_thinking_tokens": 0, "max_thinking_tokens": 500, "answer_tokens": 1}
    result = await run_strategy("think-longer", engine, "Q?", params, budget=Budget(max_tokens=10))
    # 9 tokens of thought leave 1 for the forced answer, cut off inside its box: the answer
    # falls back to the last number of what was thought
    assert result.stopped_by == "max_tokens" and result.usage.completion_tokens <= 10
    assert result.candidates[0].answer is not None


# --- verify-refine -------------------------------------------------------------------------------

REFINED = "Below are a problem, a previous solution"


def grader(verdicts: dict[str, str]) -> Callable[[GenerationRequest], str | None]:
    """A review script: the first verdict whose key is in the solution under review."""

    def review(request: GenerationRequest) -> str | None:
        if system(request) != REVIEW_SYSTEM_PROMPT:
            return None
        solution = last_user(request).split("## Solution")[1]
        return next(v for key, v in verdicts.items() if key in solution)

    return review


async def test_verify_refine_accepts_a_solution_that_passes_every_review() -> None:
    review = grader({"{4}": "No issues. Score: 1", "{5}": "The sum is wrong.\nScore: 0"})

    def script(request: GenerationRequest, k: int) -> str:
        return review(request) or ["so \\boxed{5}", "so \\boxed{4}"][k % 2]

    engine = ScriptedEngine(script)
    result = await run_strategy("verify-refine", engine, "2+2?", {"pool": 2, "rounds": 3})
    assert result.answer == "4"
    assert result.votes == {"4": 1.0, "5": 0.0} and result.vote_share == 1.0
    assert [s.step for s in result.trace] == [
        "generate",
        "verify",
        "verify",
        "round",
        "accept",
        "select",
    ]
    (round_,) = steps(result, "round")
    assert round_["scores"] == {0: [0.0], 1: [1.0]}
    assert round_["critiques"] == {0: "The sum is wrong.", 1: "No issues."}
    assert result.candidates[1].scores["review"] == Score(value=1.0, explanation="No issues.")
    assert not any(REFINED in last_user(r) for r in engine.requests)


async def test_a_refinement_round_fixes_a_wrong_answer() -> None:
    review = grader(
        {"{4}": "Score: 1", "{5}": "Step 2 adds 2 and 2 to get 5.\nScore: 0", "{6}": "Score: 0.5"}
    )

    def script(request: GenerationRequest, k: int) -> str:
        if (verdict := review(request)) is not None:
            return verdict
        if last_user(request).startswith(REFINED):
            return "corrected: \\boxed{4}"
        return ["first try \\boxed{5}", "other try \\boxed{6}"][k % 2]

    engine = ScriptedEngine(script)
    params = {"pool": 2, "rounds": 2, "keep": 1}
    result = await run_strategy("verify-refine", engine, "2+2?", params)
    assert result.answer == "4"
    assert [c.answer for c in result.candidates] == ["5", "6", "4", "4"]
    assert [c.index for c in result.candidates] == [0, 1, 4, 5]
    (refine,) = [r for r in engine.requests if last_user(r).startswith(REFINED)]
    assert refine.params.n == 2  # the pool is refilled from the one kept candidate
    assert "other try \\boxed{6}" in last_user(refine)  # the best one (0.5) was kept
    assert "## Reviewer's report\n" in last_user(refine)
    rounds = steps(result, "round")
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["scores"] == {4: [1.0], 5: [1.0]}
    assert steps(result, "refined") == [{"kept": [1], "samples": 2}]
    assert result.votes == {"4": 1.0, "6": 0.5, "5": 0.0}


async def test_the_reviewers_issues_reach_the_refinement() -> None:
    review = grader({"{4}": "Score: 1", "{5}": "Step 2 adds 2 and 2 to get 5.\nScore: 0"})

    def script(request: GenerationRequest, k: int) -> str:
        if (verdict := review(request)) is not None:
            return verdict
        return "fixed \\boxed{4}" if last_user(request).startswith(REFINED) else "\\boxed{5}"

    engine = ScriptedEngine(script, verbatim=True)
    await run_strategy("verify-refine", engine, "2+2?", {"pool": 1, "keep": 1})
    refine = next(r for r in engine.requests if last_user(r).startswith(REFINED))
    assert last_user(refine).endswith(
        "## Previous solution\n\\boxed{5}\n\n## Reviewer's report\nStep 2 adds 2 and 2 to get 5."
    )


@pytest.mark.parametrize(
    ("text", "score", "issues"),
    [
        ("Fine.\nScore: 1", 1.0, "Fine."),
        ("Small gap in step 3.\n**Score:** 0.5", 0.5, "Small gap in step 3."),
        ("score = 0", 0.0, "No issues listed."),
        ("Score: 0 at first... on reflection Score: \\boxed{1}", 1.0, "Score: 0 at first... on"),
        ("Score: .5", 0.5, "No issues listed."),
    ],
)
def test_reviews_are_parsed(text: str, score: float, issues: str) -> None:
    review = parse_review(text)
    assert review.score == score
    assert review.issues.startswith(issues)


@pytest.mark.parametrize("text", ["looks great to me", "Score: 1/2", "Score: 0.75", "Score: high"])
def test_an_unparsable_review_scores_zero_and_keeps_the_raw_text(text: str) -> None:
    assert parse_review(text) == Review(0.0, f"unparsable review (scored 0): {text}")


async def test_unparsable_reviews_score_zero_in_the_loop() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        if system(request) == REVIEW_SYSTEM_PROMPT:
            return "looks great to me"
        return "\\boxed{3}"

    result = await run_strategy(
        "verify-refine", ScriptedEngine(script), "Q?", {"pool": 2, "rounds": 1, "keep": 1}
    )
    assert result.answer == "3" and result.votes == {"3": 0.0}
    score = result.candidates[0].scores["review"]
    assert score.value == 0.0 and "looks great to me" in score.explanation


async def test_mean_over_several_verifications_decides_and_all_must_pass() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        if system(request) == REVIEW_SYSTEM_PROMPT:
            solution = last_user(request).split("## Solution")[1]
            if "{4}" in solution:
                return "Score: 1" if k % 2 else "A gap. Score: 0.5"  # 0.75, never all 1
            return "Score: 0"
        return ["\\boxed{5}", "\\boxed{4}"][k % 2]

    engine = ScriptedEngine(script)
    params = {"pool": 2, "rounds": 1, "verifications": 2}
    result = await run_strategy("verify-refine", engine, "Q?", params)
    assert result.answer == "4" and result.votes == {"4": 0.75, "5": 0.0}
    assert [r.params.n for r in engine.requests] == [2, 2, 2]  # reviews share a prompt
    assert "accept" not in [s.step for s in result.trace]


async def test_budget_exhaustion_mid_loop_returns_the_best_verified_so_far() -> None:
    review = grader({"{4}": "Minor gap. Score: 0.5", "{5}": "Wrong. Score: 0", "{6}": "Score: 1"})

    def script(request: GenerationRequest, k: int) -> str:
        if (verdict := review(request)) is not None:
            return verdict
        if last_user(request).startswith(REFINED):
            return "\\boxed{6}"
        return ["\\boxed{5}", "\\boxed{4}"][k % 2]

    result = await run_strategy(
        "verify-refine",
        ScriptedEngine(script),
        "Q?",
        {"pool": 2, "rounds": 3, "keep": 1},
        budget=Budget(max_samples=5),  # 2 solutions + 2 reviews + 1 revision, never reviewed
    )
    assert result.stopped_by == "max_samples" and result.samples == 5
    assert result.answer == "4"  # the unverified revision is kept but cannot win
    assert [c.answer for c in result.candidates] == ["5", "4", "6"]
    assert "review" not in result.candidates[2].scores
    assert steps(result, "stop") == [{"stopped_by": "max_samples"}]


async def test_nothing_verified_falls_back_to_a_majority_vote() -> None:
    result = await run_strategy(
        "verify-refine",
        ScriptedEngine(["\\boxed{2}", "\\boxed{3}", "\\boxed{2}"]),
        "Q?",
        {"pool": 3, "keep": 1},
        budget=Budget(max_samples=3),
    )
    assert result.answer == "2" and result.votes == {"2": 2, "3": 1}
    assert steps(result, "vote") == [{"votes": {"2": 2, "3": 1}, "unscored": True}]


async def test_a_failed_review_scores_zero_without_sinking_the_request() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return "Score: 1" if system(request) == REVIEW_SYSTEM_PROMPT else f"\\boxed{{{k + 1}}}"

    engine = FlakyEngine(
        script,
        fails=lambda r: system(r) == REVIEW_SYSTEM_PROMPT and "{1}" in last_user(r),
    )
    result = await run_strategy("verify-refine", engine, "Q?", {"pool": 2, "rounds": 1})
    assert result.answer == "2"
    failed = result.candidates[0].scores["review"]
    assert failed.value == 0.0 and "the backend fell over" in failed.explanation


class ExactAnswer(Verifier):
    """A test judge: 1 when the candidate's answer is the expected one."""

    name: ClassVar[str] = "exact"

    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.calls = 0

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        self.calls += 1
        right = candidate.answer == self.expected
        return Score(value=1.0 if right else 0.0, explanation="" if right else "wrong answer")


async def test_a_named_verifier_can_judge_instead_of_the_review() -> None:
    engine = ScriptedEngine(["\\boxed{1}", "\\boxed{2}"])
    judge = ExactAnswer("2")
    result = await run_strategy(
        "verify-refine",
        engine,
        "Q?",
        {"pool": 2, "judge": "exact", "verifications": 2},
        verifiers={"exact": judge},
    )
    assert result.answer == "2" and judge.calls == 4
    assert result.candidates[0].scores["exact"].explanation == "wrong answer"
    assert len(engine.requests) == 1  # the judge drew nothing from the engine


async def test_a_configured_llm_judge_engine_writes_the_reviews() -> None:
    solver = ScriptedEngine(["\\boxed{1}", "\\boxed{2}"])
    review = grader({"{2}": "Score: 1", "{1}": "Score: 0"})
    judge_engine = ScriptedEngine(lambda request, k: review(request) or "not a review")
    result = await run_strategy(
        "verify-refine",
        solver,
        "Q?",
        {"pool": 2},
        verifiers={"llm-judge": LLMJudgeVerifier(judge_engine)},
    )
    assert result.answer == "2"
    assert len(solver.requests) == 1
    assert [system(r) for r in judge_engine.requests] == [REVIEW_SYSTEM_PROMPT] * 2
    assert result.samples == 4  # the judge's samples are the session's too


# --- beam-search ---------------------------------------------------------------------------------


class Pluses(Verifier):
    """A test step scorer: 0.1 per "+" in the partial solution."""

    name: ClassVar[str] = "pluses"

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        return Score(value=min(1.0, 0.1 * candidate.text.count("+")))


class MeanLogprob(Verifier):
    """A test step scorer that reads logprobs: exp(mean token logprob)."""

    name: ClassVar[str] = "mean-logprob"
    needs_logprobs: ClassVar[bool] = True

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        assert candidate.logprobs is not None
        mean = sum(t.logprob for t in candidate.logprobs) / max(1, len(candidate.logprobs))
        return Score(value=math.exp(mean))


TREE = {  # partial solution -> the two continuations sampled from it
    None: ["first + +\n\n", "first\n\n"],
    "first + +\n\n": ["more +\n\n", "so \\boxed{3}"],
    "first\n\n": ["x + + + +\n\n", "y\n\n"],
    "first + +\n\nmore +\n\n": ["\\boxed{5} + + + + +", "\\boxed{5}"],
    "first\n\nx + + + +\n\n": ["done \\boxed{7}", "done \\boxed{7}"],
}


def tree_script(request: GenerationRequest, k: int) -> str:
    return TREE[prefill(request)][k % 2]


async def test_beam_search_keeps_the_top_k_and_stops_once_enough_are_complete() -> None:
    engine = ScriptedEngine(tree_script, verbatim=True)
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses", "beams": 2, "expansions": 2, "max_steps": 5},
        verifiers={"pluses": Pluses()},
    )
    selects = steps(result, "beams")
    assert [s["kept"] for s in selects] == [[0, 1], [4, 2], [8, 6]]
    # step 2 pruned a complete but low-scored beam (index 3: "so \boxed{3}", 0.2)
    assert selects[1]["scores"] == {2: 0.3, 3: 0.2, 4: 0.4, 5: 0.0}
    assert selects[2]["complete"] == [8, 6]  # 7 repeated 6's text, so 9 was not needed
    assert steps(result, "stop")[0]["reason"] == "complete"
    assert result.answer == "5" and result.votes == {"5": pytest.approx(0.8), "7": 0.4}
    best = result.candidates[0]
    assert best.text == "first + +\n\nmore +\n\n\\boxed{5} + + + + +"
    assert [r.params.n for r in engine.requests] == [2, 2, 2, 2, 2]
    for request in engine.requests:
        assert request.params.stop == ("\n\n",) and request.params.max_tokens == 96
        assert request.continue_final == (prefill(request) is not None)
    assert not engine.requests[0].continue_final
    assert result.usage.completion_tokens == drawn_tokens(result)


async def test_beam_search_respects_max_steps() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return f"step{k} +\n\n"  # never finishes

    engine = ScriptedEngine(script, verbatim=True)
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses", "max_steps": 3},
        verifiers={"pluses": Pluses()},
    )
    assert len(steps(result, "beams")) == 3 and len(engine.requests) == 1 + 2 + 2
    assert steps(result, "stop")[0]["reason"] == "max_steps"
    assert len(result.candidates) == 2  # the best partial solutions are returned
    assert all(c.text.count("\n\n") == 3 for c in result.candidates)


async def test_a_step_without_the_delimiter_ends_the_beam_when_logprobs_show_it() -> None:
    engine = ScriptedEngine(
        lambda r, k: "the answer is 12", verbatim=True, logprobs=lambda k, i, w: -0.5
    )
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses", "beams": 1},
        verifiers={"pluses": Pluses()},
    )
    assert result.answer == "12" and len(engine.requests) == 1
    assert engine.requests[0].params.logprobs  # asked for, to see where a step stopped
    assert result.candidates[0].text == "the answer is 12"


async def test_without_logprobs_the_end_shows_as_an_empty_next_step() -> None:
    engine = ScriptedEngine(lambda r, k: "" if prefill(r) else "the answer is 12", verbatim=True)
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses", "beams": 1},
        verifiers={"pluses": Pluses()},
    )
    assert result.answer == "12" and len(engine.requests) == 2
    assert not engine.requests[0].params.logprobs
    assert result.candidates[0].text == "the answer is 12\n\n"


async def test_a_logprob_scorer_gets_logprobs_of_the_whole_partial_solution() -> None:
    def logprob(k: int, i: int, word: str) -> float:
        return -0.1 if "good" in word else -2.0

    engine = ScriptedEngine(
        lambda r, k: (
            ["good good\n\n", "bad bad\n\n"][k % 2] if prefill(r) is None else "good \\boxed{1}"
        ),
        verbatim=True,
        logprobs=logprob,
    )
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "mean-logprob", "beams": 1, "top_logprobs": 3},
        verifiers={"mean-logprob": MeanLogprob()},
    )
    assert engine.requests[0].params.top_logprobs == 3
    (best,) = result.candidates
    assert best.text == "good good\n\ngood \\boxed{1}" and result.answer == "1"
    assert best.logprobs is not None and len(best.logprobs) == best.completion_tokens == 4
    assert steps(result, "beams")[0]["kept"] == [0]


async def test_beam_search_stops_when_the_budget_ends_and_answers_from_the_best() -> None:
    def script(request: GenerationRequest, k: int) -> str:
        return "so \\boxed{4}" if prefill(request) else ["a +\n\n", "b\n\n"][k % 2]

    engine = ScriptedEngine(script, verbatim=True)
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses", "beams": 1, "expansions": 2},
        budget=Budget(max_samples=3),
        verifiers={"pluses": Pluses()},
    )
    assert result.samples == 3 and result.stopped_by == "max_samples"
    assert engine.requests[1].params.n == 1
    assert result.answer == "4"


async def test_a_beam_whose_request_fails_is_dropped_and_the_search_goes_on() -> None:
    engine = FlakyEngine(tree_script, verbatim=True, fails=lambda r: prefill(r) == "first\n\n")
    result = await run_strategy(
        "beam-search",
        engine,
        "Q?",
        {"scorer": "pluses"},
        verifiers={"pluses": Pluses()},
    )
    assert steps(result, "error") == [{"error": "the backend fell over"}]
    assert result.answer == "5"


# --- parameters ----------------------------------------------------------------------------------


def test_the_three_strategies_are_registered() -> None:
    assert {"think-longer", "verify-refine", "beam-search"} <= set(strategies())


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("think-longer", {"min_thinking_tokens": 100, "max_thinking_tokens": 50}, "min_thinking"),
        ("think-longer", {"max_thinking_tokens": 0}, "max_thinking_tokens"),
        ("think-longer", {"wait_text": "  "}, "wait_text"),
        ("think-longer", {"n": 0}, "n: Input should be greater than or equal to 1"),
        ("think-longer", {"answer_tokens": 0}, "answer_tokens"),
        ("verify-refine", {"keep": 5, "pool": 4}, r"keep \(5\) must not exceed pool \(4\)"),
        ("verify-refine", {"rounds": 0}, "rounds"),
        ("verify-refine", {"verifications": 0}, "verifications"),
        ("verify-refine", {"judge": ""}, "judge"),
        ("verify-refine", {"pools": 2}, "unknown parameter 'pools'"),
        ("beam-search", {"beams": 0}, "beams"),
        ("beam-search", {"expansions": 100}, "expansions"),
        ("beam-search", {"step_delimiter": ""}, "step_delimiter"),
        ("beam-search", {"max_steps": 0}, "max_steps"),
        ("beam-search", {"step_tokens": 0}, "step_tokens"),
    ],
)
def test_bad_params_name_the_parameter(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        get_strategy(name).parse_params(params)


@pytest.mark.parametrize(
    ("name", "params"),
    [("verify-refine", {"judge": "nope"}), ("beam-search", {"scorer": "nope"})],
)
async def test_an_unknown_verifier_fails_before_any_compute(
    name: str, params: dict[str, Any]
) -> None:
    engine = ScriptedEngine(["x"])
    with pytest.raises(InvalidRequestError, match="unknown verifier 'nope'"):
        await run_strategy(name, engine, "Q?", params)
    assert engine.requests == []


# --- the real model ------------------------------------------------------------------------------

QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[Any]:
    from ponder.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=8)
    yield engine
    engine.close()


def assert_accounted(result: Result, budget: Budget) -> None:
    """Usage is the sum of every request; samples and tokens stay within the budget."""
    assert result.trace
    drawn = [s for s in result.trace if s.detail.get("n") is not None]
    assert result.usage.completion_tokens == drawn_tokens(result) > 0
    assert result.samples == sum(s.detail["n"] for s in drawn)
    if budget.max_samples is not None:
        assert result.samples <= budget.max_samples


@pytest.mark.model
async def test_think_longer_on_the_real_model(engine: Any) -> None:
    first: list[str] = []

    def on_event(event: SampleEvent) -> None:
        if isinstance(event, SampleFinished) and not first:
            first.append(event.completion.text)

    from ponder.engines.types import SamplingParams

    budget = Budget(max_samples=6, max_tokens=200)
    result = await run_strategy(
        "think-longer",
        engine,
        QUESTION,
        {
            "min_thinking_tokens": 40,
            "max_thinking_tokens": 40,
            "max_extensions": 2,
            "answer_tokens": 8,
        },
        budget=budget,
        sampling=SamplingParams(temperature=0.7, seed=1),
        on_event=on_event,
    )
    assert_accounted(result, budget)
    (candidate,) = result.candidates
    assert candidate.text.startswith(first[0]) and len(candidate.text) > len(first[0])
    assert {"wait", "answer"} & {s.step for s in result.trace}  # a prefill was continued
    assert candidate.completion_tokens == result.usage.completion_tokens


@pytest.mark.model
async def test_verify_refine_on_the_real_model(engine: Any) -> None:
    from ponder.engines.types import SamplingParams

    budget = Budget(max_samples=8)
    result = await run_strategy(
        "verify-refine",
        engine,
        QUESTION,
        {"pool": 2, "rounds": 2, "keep": 1},
        budget=budget,
        sampling=SamplingParams(max_tokens=32, temperature=0.7, seed=2),
    )
    assert_accounted(result, budget)
    assert steps(result, "round")
    for candidate in result.candidates:
        if "review" in candidate.scores:
            assert candidate.scores["review"].value in (0.0, 0.5, 1.0)


@pytest.mark.model
async def test_beam_search_on_the_real_model(engine: Any) -> None:
    from ponder.engines.types import SamplingParams

    budget = Budget(max_samples=12)
    result = await run_strategy(
        "beam-search",
        engine,
        [Message(role="user", content=QUESTION)],
        {"beams": 2, "expansions": 2, "max_steps": 3, "step_tokens": 24},  # self-certainty
        budget=budget,
        sampling=SamplingParams(temperature=0.8, seed=3),
    )
    assert_accounted(result, budget)
    assert 1 <= len(steps(result, "beams")) <= 3
    assert engine_requests_asked_for_top_logprobs(result)
    for candidate in result.candidates:
        assert candidate.logprobs and 0.0 <= candidate.scores["self-certainty"].value <= 1.0
        # every kept token is in the logprobs (an end-of-text token is counted but has none)
        assert candidate.completion_tokens - len(candidate.logprobs) <= len(steps(result, "beams"))


def engine_requests_asked_for_top_logprobs(result: Result) -> bool:
    return all(len(t.top_logprobs) == 20 for c in result.candidates for t in c.logprobs or [])
