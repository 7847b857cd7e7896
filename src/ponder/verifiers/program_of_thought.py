"""The `program-of-thought` verifier: for word problems solved with code, the candidate's Python
(its last fenced block) must print the answer the candidate states in its prose.

The program runs in the sandbox; its last printed line is its answer. Agreement is mathematical
(`math_equivalent`), so "0.5" printed and "\\frac{1}{2}" stated agree. A program that crashes,
times out or prints nothing, or a candidate with no code or no stated answer, scores 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ponder.answers import extract_answer, find_answer_phrase, find_boxed_answer, normalize_answer
from ponder.strategies.primitives import math_equivalent
from ponder.strategies.result import Candidate, Score
from ponder.verifiers.base import Verifier
from ponder.verifiers.code_exec import python_block, without_code_blocks
from ponder.verifiers.sandbox import run_python

if TYPE_CHECKING:
    from ponder.strategies.session import Session

DEFAULT_TIMEOUT_S = 5.0


async def program_answer(text: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """The normalised answer the Python block in `text` prints, or None if there is no block or
    the program fails or prints nothing (for strategies that want the executed answer)."""
    answer, _ = await run_program(text, timeout_s)
    return answer


async def run_program(text: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str | None, str]:
    """(the program's answer, or None; what happened, for an explanation)."""
    code = python_block(text)
    if code is None:
        return None, "the candidate has no fenced Python block"
    try:
        result = await run_python(code, timeout_s=timeout_s, cpu_s=max(1, round(timeout_s)))
    except OSError as error:
        return None, f"could not start the sandbox: {error}"
    if not result.ok:
        return None, f"the program failed: {result.error_summary()}"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        return None, "the program printed nothing"
    answer = printed_answer(lines[-1])
    if not answer:
        return None, f"the program's last line has no answer: {lines[-1]!r}"
    return answer, f"the program printed {lines[-1]!r}"


def printed_answer(line: str) -> str:
    """A printed line as an answer: its boxed value or "answer is ..." phrase if it has one,
    else the whole line ("42.0" gives "42", "x**2 + 1" stays an expression)."""
    raw = find_boxed_answer(line) or find_answer_phrase(line) or line
    return normalize_answer(raw)


class ProgramOfThoughtVerifier(Verifier):
    """1.0 when the candidate's program prints the answer the candidate states, else 0.0."""

    name: ClassVar[str] = "program-of-thought"
    summary: ClassVar[str] = (
        "Run the solution's Python in a sandbox; its printed result must equal the stated answer."
    )

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        return await self.check(candidate.text)

    async def check(self, text: str) -> Score:
        """The score without a session (running the program costs no model compute)."""
        stated = extract_answer(without_code_blocks(text))
        if stated is None:
            return Score(value=0.0, explanation="the candidate states no answer outside its code")
        executed, what = await run_program(text, self.timeout_s)
        if executed is None:
            return Score(value=0.0, explanation=what)
        if math_equivalent(executed, stated):
            return Score(value=1.0, explanation=f"{what}, which agrees with {stated!r}")
        return Score(value=0.0, explanation=f"{what}, but the candidate states {stated!r}")
