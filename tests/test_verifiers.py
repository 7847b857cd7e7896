"""The verifiers on hand-built candidates, the scripted engine and a fake judge (no model), and
the LLM judge once on the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ponder.budget import Budget, BudgetExhausted
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    Message,
    SampleFinished,
    Timings,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from ponder.errors import EngineError, InvalidRequestError
from ponder.strategies.result import Candidate
from ponder.strategies.session import Session
from ponder.verifiers.code_exec import CodeExecVerifier, extract_code, python_block
from ponder.verifiers.confidence import (
    bottom_group_confidence,
    group_confidences,
    lowest_group_confidence,
    mean_logprob,
    tail_confidence,
    token_confidences,
)
from ponder.verifiers.llm_judge import LLMJudgeVerifier, read_score_line
from ponder.verifiers.math import MathVerifier
from ponder.verifiers.program_of_thought import ProgramOfThoughtVerifier, program_answer
from ponder.verifiers.registry import VERIFIER_NAMES, default_verifier, verifier_summaries
from ponder.verifiers.self_certainty import SelfCertaintyVerifier
from tests.scripted_engine import ScriptedEngine


def candidate(
    text: str, answer: str | None = None, logprobs: list[TokenLogprob] | None = None
) -> Candidate:
    return Candidate(
        index=0,
        text=text,
        answer=answer,
        finish_reason="stop",
        completion_tokens=len(text.split()),
        latency_s=0.0,
        logprobs=logprobs,
    )


def token(logprob: float, tops: list[float] | None = None, text: str = "t") -> TokenLogprob:
    alternatives = [TopLogprob(token=f"{text}{j}", logprob=v) for j, v in enumerate(tops or [])]
    return TokenLogprob(token=text, logprob=logprob, top_logprobs=alternatives)


def session(engine: Engine | None = None, budget: Budget | None = None) -> Session:
    return Session(engine or ScriptedEngine(["unused"]), strategy="test", budget=budget)


# --- confidence -----------------------------------------------------------------------------


def test_token_confidence_is_the_negated_mean_of_the_top_logprobs() -> None:
    logprobs = [token(-0.1, [-0.1, -2.3, -3.0]), token(-0.5, [-0.5, -1.5]), token(-2.0)]
    # (0.1 + 2.3 + 3.0) / 3, (0.5 + 1.5) / 2, and the sampled token alone where no alternatives
    np.testing.assert_allclose(token_confidences(logprobs), [1.8, 1.0, 2.0])
    np.testing.assert_allclose(token_confidences(logprobs, k=2), [1.2, 1.0, 2.0])
    assert token_confidences([]).shape == (0,)


def test_group_confidences_are_sliding_means() -> None:
    np.testing.assert_allclose(group_confidences([1, 2, 3, 4, 5], 2), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(group_confidences([1, 2, 3, 4, 5], 3), [2, 3, 4])
    np.testing.assert_allclose(group_confidences([1, 2, 3, 4, 5], 5), [3])
    np.testing.assert_allclose(group_confidences([1, 2, 6], 16), [3])  # shorter than the window
    assert group_confidences([], 4).shape == (0,)
    with pytest.raises(ValueError, match="window"):
        group_confidences([1.0], 0)


def test_trace_confidences() -> None:
    conf = [5.0, 1.0, 1.0, 5.0, 5.0]
    assert lowest_group_confidence(conf, 2) == pytest.approx(1.0)  # groups 3, 1, 3, 5
    assert lowest_group_confidence(conf, 10) == pytest.approx(3.4)
    assert bottom_group_confidence(list(range(1, 12)), 1, fraction=0.2) == pytest.approx(2.0)
    assert bottom_group_confidence(conf, 2, fraction=0.5) == pytest.approx(2.0)  # of 1, 3
    assert tail_confidence([1.0, 2.0, 3.0, 4.0], tail=2) == pytest.approx(3.5)
    assert tail_confidence([1.0, 2.0], tail=2048) == pytest.approx(1.5)
    assert mean_logprob([token(-1.0), token(-3.0)]) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="no tokens"):
        lowest_group_confidence([], 2)
    with pytest.raises(ValueError, match="no tokens"):
        tail_confidence([])
    with pytest.raises(ValueError, match="no tokens"):
        mean_logprob([])


# --- self-certainty -------------------------------------------------------------------------


async def test_deepconf_scores_the_weakest_stretch() -> None:
    sure = [token(-0.01, [-0.01, -9.0, -11.0])] * 8
    unsure = [token(-0.7, [-0.7, -0.8, -2.0])] * 4
    verifier = SelfCertaintyVerifier(window=4)
    confident = await verifier.score(session(), "q", candidate("a", logprobs=sure))
    wobbly = await verifier.score(session(), "q", candidate("b", logprobs=sure + unsure + sure))
    c_sure = (0.01 + 9.0 + 11.0) / 3
    assert confident.value == pytest.approx(1 - math.exp(-c_sure / 5))
    assert wobbly.value == pytest.approx(1 - math.exp(-(0.7 + 0.8 + 2.0) / 3 / 5))
    assert confident.value > wobbly.value
    assert f"{c_sure:.4f}" in confident.explanation


async def test_mean_logprob_mode() -> None:
    verifier = SelfCertaintyVerifier(mode="mean-logprob")
    score = await verifier.score(session(), "q", candidate("a", logprobs=[token(-1), token(-3)]))
    assert score.value == pytest.approx(math.exp(-2.0))
    assert "-2.0000" in score.explanation


async def test_self_certainty_without_logprobs_explains_how_to_sample() -> None:
    for mode in ("deepconf", "mean-logprob"):
        score = await SelfCertaintyVerifier(mode=mode).score(session(), "q", candidate("a"))
        assert score.value == 0.0 and "logprobs=True" in score.explanation
    no_alternatives = candidate("a", logprobs=[token(-0.1)])
    score = await SelfCertaintyVerifier().score(session(), "q", no_alternatives)
    assert score.value == 0.0 and "top_logprobs=20" in score.explanation
    with pytest.raises(InvalidRequestError):
        SelfCertaintyVerifier(mode="entropy")  # type: ignore[arg-type]


async def test_self_certainty_on_sampled_candidates() -> None:
    """Scripted logprob -2 everywhere: C = 2 at every token (the scripted alternatives repeat
    the sampled logprob), so the score is 1 - exp(-2/5)."""
    engine = ScriptedEngine(["so the answer is 4"], logprobs=lambda k, i, word: -2.0)
    verifier = SelfCertaintyVerifier()
    s = session(engine)
    question = [Message(role="user", content="2+2?")]
    candidates = await s.sample(question, 2, **verifier.sampling_overrides)
    scored = await verifier.score_all(s, "2+2?", candidates)
    scores = [sc for sc in scored if sc is not None]
    assert [sc.value for sc in scores] == pytest.approx([1 - math.exp(-0.4)] * 2)
    assert candidates[0].scores["self-certainty"] == scores[0]


# --- math -----------------------------------------------------------------------------------


async def test_math_compares_answers_as_mathematical_objects() -> None:
    verifier = MathVerifier("\\frac{1}{2}")
    right = await verifier.score(session(), "q", candidate("so \\boxed{0.5}", answer="0.5"))
    assert right.value == 1.0 and "matches" in right.explanation
    extracted = await verifier.score(session(), "q", candidate("The answer is 1/2."))
    assert extracted.value == 1.0  # no answer on the candidate: extracted from its text
    wrong = await verifier.score(session(), "q", candidate("\\boxed{3}", answer="3"))
    assert wrong.value == 0.0 and "'3'" in wrong.explanation and "\\frac{1}{2}" in wrong.explanation
    none = await verifier.score(session(), "q", candidate("I do not know"))
    assert none.value == 0.0 and "no final answer" in none.explanation
    assert MathVerifier("\\sqrt{117}").check(candidate("x", answer="3\\sqrt{13}")).value == 1.0


# --- llm-judge ------------------------------------------------------------------------------


class FakeJudge(Engine):
    """Answers every request at once with `reply(request)`: (text, first-token alternatives)."""

    def __init__(self, reply: Callable[[GenerationRequest], tuple[str, dict[str, float]]]) -> None:
        self.model = "fake-judge"
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=True,
            max_top_logprobs=20,
            streaming=False,
            prefix_caching=False,
            cancel_sample=False,
        )
        self.reply = reply
        self.requests: list[GenerationRequest] = []

    def start(self, request: GenerationRequest) -> GenerationHandle:
        self.requests.append(request)
        handle = GenerationHandle(request.params.n, lambda _index: None)
        text, tops = self.reply(request)
        alternatives = [TopLogprob(token=t, logprob=lp) for t, lp in tops.items()]
        best = max(alternatives, key=lambda t: t.logprob) if alternatives else None
        logprobs = None
        if best is not None and request.params.wants_logprobs:
            logprobs = [
                TokenLogprob(token=best.token, logprob=best.logprob, top_logprobs=alternatives)
            ]
        completion = Completion(
            index=0,
            text=text,
            finish_reason="length",
            completion_tokens=1,
            latency_s=0.0,
            logprobs=logprobs,
        )
        generation = Generation(
            model=self.model,
            completions=[completion],
            usage=Usage(prompt_tokens=30, completion_tokens=1),
            timings=Timings(),
        )
        loop = asyncio.get_running_loop()
        loop.call_soon(handle.emit, [SampleFinished(completion=completion)])
        loop.call_soon(handle.finish, generation)
        return handle


async def test_yes_no_judge_reads_p_yes_from_the_first_token() -> None:
    tops = {
        "Yes": math.log(0.5),
        " yes": math.log(0.1),
        "No": math.log(0.15),
        "NO": math.log(0.05),
        "The": math.log(0.2),
    }
    judge = FakeJudge(lambda _request: ("Yes", tops))
    s = session()
    verifier = LLMJudgeVerifier(judge)
    score = await verifier.score(s, "What is 2+2?", candidate("2+2 = 4, so \\boxed{4}"))
    assert score.value == pytest.approx(0.6 / 0.8)
    assert "P(yes)=0.6000" in score.explanation and "P(no)=0.2000" in score.explanation
    (request,) = judge.requests
    assert request.params.max_tokens == 1 and request.params.temperature == 0.0
    assert request.params.top_logprobs == 20
    assert request.messages is not None
    prompt = str(request.messages[-1].content)
    assert "What is 2+2?" in prompt and "\\boxed{4}" in prompt
    assert prompt.endswith("Is this solution correct? Answer Yes or No.")
    assert s.usage.completion_tokens == 1 and s.usage.prompt_tokens == 30  # counted
    assert s.trace[-1].step == "verify" and s.samples == 1


async def test_yes_no_judge_falls_back_to_the_text() -> None:
    for reply, value in (("Yes", 1.0), ("no.", 0.0)):
        score = await LLMJudgeVerifier().score(
            session(ScriptedEngine([reply])), "q", candidate("a")
        )
        assert score.value == value
    maybe = await LLMJudgeVerifier().score(session(ScriptedEngine(["Maybe"])), "q", candidate("a"))
    assert maybe.value == 0.0 and "neither" in maybe.explanation
    no_yes_no = FakeJudge(lambda _request: ("The", {"The": -0.1, "I": -2.0}))
    score = await LLMJudgeVerifier(no_yes_no).score(session(), "q", candidate("a"))
    assert score.value == 0.0 and "neither" in score.explanation


async def test_judges_every_candidate_concurrently_on_its_own_engine() -> None:
    def reply(request: GenerationRequest) -> tuple[str, dict[str, float]]:
        assert request.messages is not None
        good = "= 4" in str(request.messages[-1].content)
        return ("Yes", {"Yes": -0.1, "No": -3.0}) if good else ("No", {"Yes": -3.0, "No": -0.1})

    judge = FakeJudge(reply)
    s = session()  # the strategy's engine is not the judge
    candidates = [candidate("2+2 = 4"), candidate("2+2 = 5"), candidate("")]
    scored = await LLMJudgeVerifier(judge).score_all(s, "2+2?", candidates)
    scores = [sc for sc in scored if sc is not None]
    assert len(scores) == 3
    assert scores[0].value > 0.9 and scores[1].value < 0.1
    assert scores[2].value == 0.0 and "empty" in scores[2].explanation  # no judge call
    assert len(judge.requests) == 2 and s.usage.completion_tokens == 2
    assert candidates[1].scores["llm-judge"] == scores[1]


async def test_score_mode_parses_a_strict_score_line() -> None:
    replies = [
        "Step one is right. Score: 1",
        "A small gap. **Score: 0.5**",
        "Score: 0",
        "Looks fine",
        "Score: 2",
    ]
    engine = ScriptedEngine(replies)
    s = session(engine)
    verifier = LLMJudgeVerifier(mode="score", max_tokens=64)
    values = [(await verifier.score(s, "q", candidate("x"))).value for _ in replies]
    assert values == [1.0, 0.5, 0.0, 0.0, 0.0]
    params = engine.requests[0].params
    assert params.max_tokens == 64 and params.temperature == 0.0 and not params.wants_logprobs
    assert read_score_line("Score: 1\nOn reflection... Score: 0").value == 0.0  # the last one
    assert read_score_line("score = \\boxed{1}").value == 1.0
    unparsable = read_score_line("It is correct.")
    assert unparsable.value == 0.0 and "Score: 0|0.5|1" in unparsable.explanation


async def test_judge_failures_score_zero_but_the_budget_still_stops() -> None:
    class Broken(FakeJudge):
        def start(self, request: GenerationRequest) -> GenerationHandle:
            raise EngineError("the judge server is down")

    broken = Broken(lambda _request: ("", {}))
    score = await LLMJudgeVerifier(broken).score(session(), "q", candidate("a"))
    assert score.value == 0.0 and "the judge server is down" in score.explanation
    spent = session(ScriptedEngine(["Yes"]), Budget(max_samples=1))
    await spent.generate([Message(role="user", content="hi")], 1)
    with pytest.raises(BudgetExhausted):
        await LLMJudgeVerifier().score(spent, "q", candidate("a"))


# --- code-exec ------------------------------------------------------------------------------

HUMANEVAL_TEST = """

METADATA = {}


def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-1, 1) == 0
"""


async def test_code_exec_humaneval() -> None:
    verifier = CodeExecVerifier(HUMANEVAL_TEST, entry_point="add")
    right = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    passed = await verifier.score(session(), "q", candidate(right))
    assert passed.value == 1.0, passed.explanation
    failed = await verifier.score(session(), "q", candidate(wrong))
    assert failed.value == 0.0
    assert "AssertionError" in failed.explanation and "candidate(1, 2) == 3" in failed.explanation


async def test_code_exec_catches_early_exits_and_timeouts() -> None:
    verifier = CodeExecVerifier(HUMANEVAL_TEST, entry_point="add", timeout_s=1)
    cheat = await verifier.check("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)")
    assert cheat.value == 0.0 and "exited before the tests finished" in cheat.explanation
    hang = await verifier.check("def add(a, b):\n    while True:\n        pass")
    assert hang.value == 0.0 and ("CPU" in hang.explanation or "timed out" in hang.explanation)
    broken = await verifier.check("def add(a, b) return a + b")
    assert broken.value == 0.0 and "SyntaxError" in broken.explanation


async def test_code_exec_mbpp_asserts() -> None:
    asserts = ["assert square(2) == 4", "assert square(3) == 9", "assert square(-1) == 1"]
    almost = "def square(x):\n    return x * x if x > 0 else 0"
    strict = await CodeExecVerifier(asserts).check(almost)
    assert strict.value == 0.0
    assert "2/3 tests passed" in strict.explanation
    assert "assert square(-1) == 1  ->  AssertionError" in strict.explanation
    partial = await CodeExecVerifier(asserts, partial_credit=True).check(almost)
    assert partial.value == pytest.approx(2 / 3)
    as_text = "import math\nassert root(16) == 4\nassert root(9) == 3"
    passed = await CodeExecVerifier(as_text).check("def root(x):\n    return math.isqrt(x)")
    assert passed.value == 1.0 and "all 2 tests passed" in passed.explanation


def test_code_exec_needs_usable_tests() -> None:
    with pytest.raises(InvalidRequestError, match="entry_point"):
        CodeExecVerifier(HUMANEVAL_TEST)
    with pytest.raises(InvalidRequestError, match="needs tests"):
        CodeExecVerifier([])


def test_code_extraction() -> None:
    text = "```bash\npip install x\n```\n```python\nA = 1\n```\nthen\n```py\nB = 2\n```"
    assert python_block(text) == "B = 2\n"
    assert python_block("```\nC = 3\n```") == "C = 3\n"
    assert python_block("```python\nD = 4\nprint(D)") == "D = 4\nprint(D)"  # cut off
    assert python_block("no code") is None
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"


# --- program-of-thought ---------------------------------------------------------------------

POT_TEMPLATE = "Let me compute.\n```python\n{code}\n```\nSo the answer is \\boxed{{{answer}}}."


async def test_program_of_thought_agreement() -> None:
    verifier = ProgramOfThoughtVerifier()
    agree = POT_TEMPLATE.format(code="print(1 / 2)", answer="\\frac{1}{2}")
    score = await verifier.score(session(), "q", candidate(agree))
    assert score.value == 1.0 and "'0.5'" in score.explanation
    disagree = POT_TEMPLATE.format(code="print(48 + 24)", answer="70")
    score = await verifier.score(session(), "q", candidate(disagree))
    assert score.value == 0.0 and "'72'" in score.explanation and "'70'" in score.explanation
    crash = POT_TEMPLATE.format(code="print(1 / 0)", answer="1")
    score = await verifier.score(session(), "q", candidate(crash))
    assert score.value == 0.0 and "ZeroDivisionError" in score.explanation
    no_code = await verifier.score(session(), "q", candidate("It is \\boxed{3}."))
    assert no_code.value == 0.0 and "no fenced Python block" in no_code.explanation
    no_answer = await verifier.score(session(), "q", candidate("```python\nprint(3)\n```"))
    assert no_answer.value == 0.0 and "states no answer" in no_answer.explanation


async def test_program_answer() -> None:
    assert await program_answer("```python\nx = 6 * 7\nprint('debug')\nprint(x)\n```") == "42"
    assert await program_answer("```python\nprint('The answer is 3.50')\n```") == "3.5"
    assert await program_answer("```python\nx = 1\n```") is None  # printed nothing
    assert await program_answer("```python\nraise SystemExit(2)\n```") is None
    assert await program_answer("no code at all") is None


# --- registry -------------------------------------------------------------------------------


def test_default_verifiers() -> None:
    s = session()
    judge = default_verifier("llm-judge", s)
    assert isinstance(judge, LLMJudgeVerifier) and judge.engine is s.engine
    assert isinstance(default_verifier("self-certainty", s), SelfCertaintyVerifier)
    assert isinstance(default_verifier("program-of-thought", s), ProgramOfThoughtVerifier)
    assert s.verifier("llm-judge") is s.verifier("llm-judge")  # set up once per session
    with pytest.raises(InvalidRequestError, match=r"verifiers=\{'math': MathVerifier"):
        default_verifier("math", s)
    with pytest.raises(InvalidRequestError, match="CodeExecVerifier"):
        s.verifier("code-exec")
    with pytest.raises(InvalidRequestError, match="unknown verifier"):
        default_verifier("vibes", s)


def test_verifier_summaries() -> None:
    summaries = verifier_summaries()
    assert [name for name, _ in summaries] == list(VERIFIER_NAMES)
    assert all(summary for _, summary in summaries)


# --- the real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_engine(smollm2_path: Path) -> Iterator[Engine]:
    from ponder.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=4)
    yield engine
    engine.close()


@pytest.mark.model
async def test_yes_no_judge_on_smollm2(smollm2_engine: Engine) -> None:
    s = Session(smollm2_engine, strategy="test")
    candidates = [
        candidate("2 + 2 = 4, so the answer is \\boxed{4}."),
        candidate("2 + 2 = 5, so the answer is \\boxed{5}."),
    ]
    scores = await LLMJudgeVerifier().score_all(s, "What is 2 + 2?", candidates)
    for score in scores:
        assert score is not None
        assert 0.0 <= score.value <= 1.0
        assert "P(yes)=" in score.explanation  # Yes / No are among the top 20 first tokens
    assert s.usage.completion_tokens == 2 and s.usage.prompt_tokens > 0
    assert s.samples == 2 and [step.step for step in s.trace] == ["verify", "verify"]
