"""The `math` verifier: is the candidate's final answer the reference answer?

Answers are compared as mathematical objects with `math-verify` (so "1/2", "0.5" and
"\\frac{2}{4}" all match a reference of "\\frac{1}{2}"), through the same `math_equivalent` that
groups answers for voting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ponder.answers import extract_answer, normalize_answer
from ponder.strategies.primitives import math_equivalent
from ponder.strategies.result import Candidate, Score
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:
    from ponder.strategies.session import Session


class MathVerifier(Verifier):
    """1.0 when the candidate's final answer equals `reference` mathematically, else 0.0."""

    name: ClassVar[str] = "math"
    summary: ClassVar[str] = "Final answer equals a reference answer (math-verify equivalence)."

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self._normalized = normalize_answer(reference)

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        return self.check(candidate)

    def check(self, candidate: Candidate) -> Score:
        """The score without a session: the check needs no compute."""
        answer = candidate.answer or extract_answer(candidate.text)
        if answer is None:
            return Score(value=0.0, explanation="no final answer found in the candidate")
        if math_equivalent(answer, self._normalized) or math_equivalent(answer, self.reference):
            return Score(value=1.0, explanation=f"answer {answer!r} matches the reference")
        return Score(
            value=0.0,
            explanation=f"answer {answer!r} does not match the reference {self.reference!r}",
        )
