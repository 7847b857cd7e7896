"""Self-consistency's answer grouping: code by behaviour on probe inputs (real sandboxed runs of a
few tiny programs, each well under a second, one bounded by a 1 s timeout), and exact vs
math-verify equivalence for plain answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from ponder.errors import InvalidRequestError
from ponder.strategies import code_behaviour
from ponder.strategies.code_behaviour import Behaviour, behaviours, signature_label
from ponder.strategies.primitives import CODE_SYSTEM_PROMPT
from ponder.strategies.registry import get_strategy, run_strategy
from ponder.strategies.result import Result
from tests.scripted_engine import ScriptedEngine

PROBES = ["add(2, 3)", "add(-1, 1)"]


def fenced(code: str, prose: str = "Here is my solution.") -> str:
    return f"{prose}\n\n```python\n{code}\n```\n"


BUGGY = fenced("def add(a, b):\n    return a - b")
CORRECT = [
    fenced("def add(a, b):\n    return a + b"),
    fenced("def add(x, y):\n    total = x\n    total += y\n    return total", "Simple."),
    fenced("import operator\n\n\ndef add(a, b):\n    return operator.add(a, b)"),
]


async def run_code(texts: Sequence[str], **params: Any) -> tuple[Result, ScriptedEngine]:
    engine = ScriptedEngine(list(texts), verbatim=True)  # verbatim: code keeps its newlines
    merged = {"n": len(texts), "group_by": "code", "probe_inputs": PROBES, **params}
    return await run_strategy("self-consistency", engine, "Write add(a, b).", merged), engine


async def test_equivalent_implementations_vote_together_and_outvote_repeated_bug() -> None:
    """By text, the repeated buggy answer is the plurality (2 identical vs 1+1+1 different); by
    behaviour, the three correct ones are one group of 3."""
    result, engine = await run_code([BUGGY, BUGGY, *CORRECT])
    assert result.answer == "def add(a, b):\n    return a + b\n"  # the first correct one's code
    correct = "sig-2: add(2, 3)=5; add(-1, 1)=0"
    assert result.votes == {correct: 3, "sig-1: add(2, 3)=-1; add(-1, 1)=-2": 2}
    assert result.vote_share == pytest.approx(3 / 5)
    assert [c.answer for c in result.candidates][1:3] == [
        "sig-1: add(2, 3)=-1; add(-1, 1)=-2",
        correct,
    ]
    assert [s.step for s in result.trace] == ["sample", "execute", "vote"]
    execute = result.trace[1].detail
    assert execute["signatures"][correct] == ["=5", "=0"]
    assert execute["errors"] == {}
    (request,) = engine.requests
    assert request.messages is not None and request.messages[0].content == CODE_SYSTEM_PROMPT


async def test_two_correct_variants_beat_one_bug_seen_first() -> None:
    result, _ = await run_code([BUGGY, CORRECT[1], CORRECT[2]])
    assert result.answer is not None and "total += y" in result.answer
    assert list(result.votes.values()) == [2, 1]


async def test_an_infinite_loop_times_out_and_gets_no_vote() -> None:
    hang = fenced("def add(a, b):\n    while True:\n        pass")
    # 3 s: room for a busy machine to start the sandbox's Python for the correct one
    result, _ = await run_code([hang, CORRECT[0]], code_timeout_s=3)
    looping, correct = result.candidates
    assert looping.answer is None
    assert looping.error is not None and "timed out" in looping.error
    assert correct.answer is not None and correct.error is None
    assert result.answer == "def add(a, b):\n    return a + b\n"
    assert result.vote_share == pytest.approx(1 / 2)
    assert result.trace[1].detail["errors"] == {0: looping.error}


async def test_candidates_whose_code_does_not_run_get_no_vote_and_say_why() -> None:
    texts = [
        "I am not sure how to do this.",  # no code at all
        fenced("def add(a, b) return a + b"),  # syntax error
        fenced("raise RuntimeError('at import')\n\ndef add(a, b):\n    return a + b"),
        fenced("def plus(a, b):\n    return a + b"),  # defines the wrong name
        fenced("import os\nprint('@ponder-0000 0 \"=5\"')\nos._exit(0)"),  # forges, then exits
        fenced("print('noise', end='')\n\ndef add(a, b):\n    return a + b"),  # runs: votes
    ]
    result, _ = await run_code(texts)
    errors = [c.error for c in result.candidates]
    assert [c.answer is None for c in result.candidates] == [True] * 5 + [False]
    assert errors[0] is not None and errors[0].startswith("no code block")
    assert errors[1] is not None and "SyntaxError" in errors[1]
    assert errors[2] is not None and "RuntimeError: at import" in errors[2]
    assert errors[3] is not None and "NameError" in errors[3]
    assert errors[4] == "the program exited before every probe had run"
    assert errors[5] is None
    assert result.votes == {"sig-1: add(2, 3)=5; add(-1, 1)=0": 1}
    assert result.vote_share == pytest.approx(1 / 6)


async def test_no_runnable_code_anywhere_gives_no_answer() -> None:
    result, _ = await run_code(["no code here", ""])
    assert result.answer is None and result.votes == {} and result.vote_share == 0.0
    assert [c.error for c in result.candidates][1] == "no code"


async def test_exceptions_and_unordered_values_are_behaviour() -> None:
    """Raising the same exception is agreeing; sets and dicts agree whatever their order."""
    probes = ["pair(1, 0)", "pair(2, 1)"]
    first = "def pair(a, b):\n    return {'q': a // b, 'set': {str(a), 'x'}}"
    second = "def pair(a, b):\n    q = a // b\n    return {'set': {'x', str(a)}, 'q': q}"
    third = "def pair(a, b):\n    return {'q': a / b}"
    result, _ = await run_code([fenced(first), fenced(second), fenced(third)], probe_inputs=probes)
    assert result.votes == {
        "sig-1: pair(1, 0) raises ZeroDivisionError; pair(2, 1)={'q': 2, 'set': {'2', 'x'}}": 2,
        "sig-2: pair(1, 0) raises ZeroDivisionError; pair(2, 1)={'q': 2.0}": 1,
    }


async def test_sandboxes_run_bounded_and_identical_code_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running, peak, ran = 0, 0, []

    async def fake_run(code: str, probes: Sequence[str], *, timeout_s: float) -> Behaviour:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        ran.append(code)
        await asyncio.sleep(0.01)
        running -= 1
        return Behaviour(code, ("=1",))

    monkeypatch.setattr(code_behaviour, "run_probes", fake_run)
    texts = [fenced(f"x = {k}") for k in range(10)] + [fenced("x = 0")]
    found = await behaviours(texts, ["x"], timeout_s=1, concurrency=3)
    assert len(found) == 11 and found[-1] == found[0]
    assert peak == 3 and len(ran) == 10


def test_signature_labels_are_short_and_numbered() -> None:
    label = signature_label(7, ["f(1)", "g()"], ["=" + "9" * 500, "!KeyError"], width=60)
    assert label.startswith("sig-7: f(1)=999") and label.endswith("…") and len(label) == 60
    assert signature_label(1, ["g()"], ["!KeyError"]) == "sig-1: g() raises KeyError"


async def test_exact_grouping_keeps_forms_apart_that_math_merges() -> None:
    texts = ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{0.5}"]
    math = await run_strategy("self-consistency", ScriptedEngine(texts), "Q?", {"n": 3})
    assert math.answer == "1/2" and math.votes == {"1/2": 3}
    exact = await run_strategy(
        "self-consistency", ScriptedEngine(texts), "Q?", {"n": 3, "group_by": "exact"}
    )
    assert exact.answer == "0.5" and exact.votes == {"0.5": 2, "1/2": 1}
    assert exact.vote_share == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "code"}, r"group_by='code' needs probe_inputs"),
        ({"probe_inputs": ["add(1, 2)"]}, r"probe_inputs apply only with group_by='code'"),
        ({"group_by": "code", "probe_inputs": ["add(1,"]}, r"probe_inputs: .*not a Python expr"),
        ({"group_by": "code", "probe_inputs": ["x = 1"]}, r"probe_inputs: .*not a Python expr"),
        ({"group_by": "bytes"}, r"group_by: Input should be 'math', 'exact' or 'code'"),
        ({"group_by": "code", "probe_inputs": ["f()"], "code_timeout_s": 0}, r"code_timeout_s"),
    ],
)
async def test_bad_grouping_params_are_request_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        get_strategy("self-consistency").parse_params(params)
    engine = ScriptedEngine(["x"])
    with pytest.raises(InvalidRequestError, match=message):
        await run_strategy("self-consistency", engine, "Q?", params)
    assert engine.requests == []  # refused before sampling
