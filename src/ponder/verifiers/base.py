"""The verifier protocol: a verifier scores one candidate in [0, 1] and says why.

Verifiers that need compute (a judge model, a program run) draw it through the `Session`, so their
tokens land in the same usage and budget as the strategy's own samples.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from ponder.budget import BudgetExhausted
from ponder.strategies.result import Candidate, Score

if TYPE_CHECKING:
    from ponder.strategies.session import Session


class Verifier(ABC):
    """Scores candidates. Subclasses set `name` and implement `score`."""

    name: ClassVar[str]
    needs_logprobs: ClassVar[bool] = False
    """True when the verifier reads the candidate's token logprobs (sample with logprobs on)."""

    @abstractmethod
    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        """Judge one candidate. A failure inside (a crash, a timeout) is a Score of 0 with the
        reason as its explanation, never an exception that sinks the request."""

    async def score_all(
        self, session: Session, question: str, candidates: Sequence[Candidate]
    ) -> list[Score | None]:
        """Score every candidate concurrently and record each on `candidate.scores[name]`.

        Waits for every call, so none is left running unaccounted. A candidate the budget left no
        room to judge gets None (and the session a warning); any other error propagates.
        """
        outcomes = await asyncio.gather(
            *(self.score(session, question, c) for c in candidates), return_exceptions=True
        )
        scores: list[Score | None] = []
        for candidate, outcome in zip(candidates, outcomes, strict=True):
            if isinstance(outcome, Score):
                candidate.scores[self.name] = outcome
                scores.append(outcome)
            elif isinstance(outcome, BudgetExhausted):
                scores.append(None)
            else:
                raise outcome
        if starved := scores.count(None):
            session.warnings.append(
                f"verifier {self.name!r} ran out of budget; {starved} candidate(s) left unscored"
            )
        return scores
