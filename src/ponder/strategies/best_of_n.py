"""Verifier-guided selection: sample n solutions, score each with a verifier, then either take the
best-scored one (best-of-n) or let every group of equivalent answers collect the sum of its scores
(verifier-weighted majority vote, as in DiVeRSe, Li et al. 2023). The verifier is chosen by name,
so the same code serves a free confidence score (self-certainty), a judge model or a checker."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ponder.budget import BudgetExhausted
from ponder.strategies.primitives import (
    Question,
    as_messages,
    group_answers,
    question_text,
    weighted_vote,
)
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.selection import answer_by_score
from ponder.strategies.session import Session


class VerifiedSamplingParams(StrategyParams):
    n: int = Field(default=8, ge=1, le=256, description="solutions to sample")
    verifier: str = Field(
        default="self-certainty",
        min_length=1,
        description="verifier that scores each solution (self-certainty, llm-judge, math, ...)",
    )
    top_logprobs: int = Field(
        default=20,
        ge=0,
        le=20,
        description="alternatives per token to sample when the verifier reads logprobs",
    )


async def _sample_and_score(
    session: Session, question: Question, p: VerifiedSamplingParams
) -> tuple[list[Candidate], list[str | None], list[float]]:
    """The candidates, their answer groups and their scores (aligned). Samples that hold no final
    answer cannot be chosen, so they are not judged (no judge tokens) and score 0."""
    verifier = session.verifier(p.verifier)  # an unknown verifier fails before any compute
    options: dict[str, Any] = {}
    if verifier.needs_logprobs:
        options = {"logprobs": True, "top_logprobs": p.top_logprobs}
    try:
        candidates = await session.sample(as_messages(question), p.n, **options)
    except BudgetExhausted:
        return [], [], []
    groups = group_answers([c.answer for c in candidates])
    answered = [c for c, g in zip(candidates, groups, strict=True) if g is not None]
    await verifier.score_all(session, question_text(question), answered)
    name = verifier.name
    scores = [c.scores[name].value if name in c.scores else 0.0 for c in candidates]
    judged = {
        c.index: s for c, s, g in zip(candidates, scores, groups, strict=True) if g is not None
    }
    session.record("verify", verifier=name, scores=judged)
    return candidates, groups, scores


async def best_of_n(session: Session, question: Question, p: VerifiedSamplingParams) -> Result:
    """The single best-scored candidate wins; ties go to the answer more of the tied candidates
    share, then to the earliest. Votes are each answer's best score."""
    candidates, _, scores = await _sample_and_score(session, question, p)
    return answer_by_score(session, candidates, scores)


async def verifier_weighted_vote(
    session: Session, question: Question, p: VerifiedSamplingParams
) -> Result:
    """Each group of equivalent answers collects the sum of its candidates' scores."""
    candidates, groups, scores = await _sample_and_score(session, question, p)
    answer, votes = weighted_vote(groups, scores)
    session.record("vote", votes=votes)
    return session.result(answer, candidates, votes)


BEST_OF_N = Strategy(
    name="best-of-n",
    summary="Sample n solutions, score each with a verifier, answer with the best-scored one.",
    params=VerifiedSamplingParams,
    run=best_of_n,
)

WEIGHTED_VOTE = Strategy(
    name="weighted-vote",
    summary="Sample n solutions and vote, each weighted by its verifier score (Li et al. 2023).",
    params=VerifiedSamplingParams,
    run=verifier_weighted_vote,
)
