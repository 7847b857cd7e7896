"""Verifier-guided selection: sample n solutions, score each with a verifier, then either take the
best-scored one (best-of-n) or let every group of equivalent answers collect the sum of its scores
(verifier-weighted majority vote, as in DiVeRSe, Li et al. 2023). The verifier is chosen by name,
so the same code serves a free confidence score (self-certainty), a judge model or a checker."""

from __future__ import annotations

import asyncio
from collections import Counter
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
from ponder.strategies.result import Candidate, Result, Score
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier


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
    await _score(session, verifier, question_text(question), answered)
    name = verifier.name
    scores = [c.scores[name].value if name in c.scores else 0.0 for c in candidates]
    judged = {
        c.index: s for c, s, g in zip(candidates, scores, groups, strict=True) if g is not None
    }
    session.record("verify", verifier=name, scores=judged)
    return candidates, groups, scores


async def _score(
    session: Session, verifier: Verifier, question: str, candidates: list[Candidate]
) -> None:
    """Score in place, concurrently, like `Verifier.score_all`, but wait for every call before
    deciding: a judge call still running when another hits the budget finishes and is counted
    rather than left running unaccounted. Budget-starved candidates stay unscored (0), so the
    choice degrades to a majority vote instead of failing the request."""
    outcomes = await asyncio.gather(
        *(verifier.score(session, question, c) for c in candidates), return_exceptions=True
    )
    starved = 0
    for candidate, outcome in zip(candidates, outcomes, strict=True):
        if isinstance(outcome, Score):
            candidate.scores[verifier.name] = outcome
        elif isinstance(outcome, BudgetExhausted):
            starved += 1
        else:
            raise outcome
    if starved:
        session.warnings.append(
            f"verifier {verifier.name!r} ran out of budget; {starved} unscored candidate(s) "
            "count as 0"
        )


async def best_of_n(session: Session, question: Question, p: VerifiedSamplingParams) -> Result:
    """The single best-scored candidate wins; ties go to the answer with more samples, then to the
    earliest candidate. Votes are each answer's best score."""
    candidates, groups, scores = await _sample_and_score(session, question, p)
    answered = [(i, g) for i, g in enumerate(groups) if g is not None]
    counts = Counter(g for _, g in answered)
    ranked = sorted(answered, key=lambda ig: (-scores[ig[0]], -counts[ig[1]], ig[0]))
    best: dict[str, float] = {}
    for i, group in ranked:  # a group's first appearance is its best candidate
        best.setdefault(group, scores[i])
    answer = next(iter(best), None)
    chosen = candidates[ranked[0][0]].index if ranked else None
    session.record("select", candidate=chosen, votes=best)
    return session.result(answer, candidates, best)


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
