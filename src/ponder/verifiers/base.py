"""The verifier protocol: a verifier scores one candidate in [0, 1] and says why.

Verifiers that need compute (a judge model, a program run) draw it through the `Session`, so their
tokens land in the same usage and budget as the strategy's own samples.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

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
    ) -> list[Score]:
        """Score every candidate (concurrently) and record each on `candidate.scores[name]`."""
        scores = await asyncio.gather(*(self.score(session, question, c) for c in candidates))
        for candidate, score in zip(candidates, scores, strict=True):
            candidate.scores[self.name] = score
        return list(scores)
