"""Verify and refine: the generate -> verify -> refine loop of DeepSeekMath-V2 (arXiv 2511.22570).

Sampling more only helps when something can tell good solutions from bad; here a strict reviewer
does, and its list of issues is also what the next attempt is told to fix. A pool of solutions is
sampled in parallel; each is reviewed (1 = completely correct and rigorous, 0.5 = minor issues,
0 = wrong); a solution that passes every review is the answer; otherwise the best few are revised
against their reviews, and the new pool is reviewed in turn, for at most `rounds` rounds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field, model_validator

from ponder.budget import BudgetExhausted
from ponder.engines.base import Engine
from ponder.engines.types import Message
from ponder.errors import PonderError
from ponder.strategies.primitives import (
    MATH_SYSTEM_PROMPT,
    Question,
    as_messages,
    question_text,
)
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result, Score
from ponder.strategies.selection import answer_by_score
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier
from ponder.verifiers.llm_judge import LLMJudgeVerifier

REVIEW_NAME = "review"
"""Key of the strategy's own review in `Candidate.scores`."""

REVIEW_SYSTEM_PROMPT = (
    "You are a strict grader of mathematical solutions. You never give credit for a "
    "correct-looking final answer alone: every step must be justified."
)
REVIEW_PROMPT = """Review the solution to the problem below. Check every step for errors, gaps and \
unjustified claims, and check the final answer.

First list the concrete issues you find (or write "No issues."). Then end with exactly one line:
Score: 1   if the solution is completely correct and rigorous,
Score: 0.5 if it is correct apart from minor issues,
Score: 0   if it is wrong, incomplete, or its final answer is incorrect.

## Problem
{problem}

## Solution
{solution}"""

REFINE_PROMPT = """Below are a problem, a previous solution to it, and a reviewer's report on that \
solution. Write a corrected, complete solution from the start: fix every issue the reviewer \
raised and any other error you find. Reason step by step, and put your final answer within \
\\boxed{{}}.

## Problem
{problem}

## Previous solution
{solution}

## Reviewer's report
{issues}"""

_SCORE = re.compile(
    r"score\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*(?:\\boxed\{)?\s*"  # "Score:", "**Score:**", "\boxed{"
    r"(1(?:\.0*)?|0?\.50*|0(?:\.0*)?)(?![\d./])",  # 1 | 0.5 | 0, not 1/2 or 0.75
    re.IGNORECASE,
)


class VerifyRefineParams(StrategyParams):
    pool: int = Field(default=4, ge=1, le=64, description="solutions sampled in parallel per round")
    rounds: int = Field(
        default=2, ge=1, le=16, description="sequential rounds (the first one samples afresh)"
    )
    verifications: int = Field(default=1, ge=1, le=16, description="reviews per solution")
    keep: int = Field(default=2, ge=1, le=64, description="best solutions revised per round")
    judge: str | None = Field(
        default=None,
        min_length=1,
        description="verifier that scores instead of the strict review (e.g. math); default: "
        "the strict review, by the configured llm-judge's engine or the session's model",
    )

    @model_validator(mode="after")
    def _keep_fits(self) -> VerifyRefineParams:
        if self.keep > self.pool:
            raise ValueError(f"keep ({self.keep}) must not exceed pool ({self.pool})")
        return self


@dataclass(frozen=True)
class Review:
    """One verification of one solution: its score and the issues the reviewer listed."""

    score: float
    issues: str


async def verify_refine(session: Session, question: Question, p: VerifyRefineParams) -> Result:
    """pool = generate(q) x pool; repeat: reviews = verify(pool); if some solution passes every
    review: answer it; else pool = refine(best `keep` of all so far, their issues)."""
    messages = as_messages(question)
    problem = question_text(question)
    judge = session.verifier(p.judge) if p.judge else None  # unknown: fails before compute
    reviewer = _reviewer(session)
    drawn: list[Candidate] = []
    reviews: dict[int, list[Review]] = {}
    try:
        pool = await session.sample(messages, p.pool, step="generate")
        for round_ in range(p.rounds):
            drawn += pool
            reviewed = await _verify(session, judge, reviewer, problem, pool, p.verifications)
            reviews.update(reviewed)
            _record_round(session, round_, pool, reviewed)
            passed = [c for c in pool if _passes(reviewed.get(c.index, []))]
            if passed:
                session.record("accept", candidate=passed[0].index, round=round_)
                break
            if round_ + 1 == p.rounds or session.exhausted:
                break
            kept = sorted(
                (c for c in drawn if c.index in reviews),
                key=lambda c: -_mean(reviews[c.index]),
            )[: p.keep]
            pool = await _refine(session, problem, kept, reviews, p.pool)
    except BudgetExhausted:
        pass
    if session.stopped_by is not None:
        session.record("stop", stopped_by=session.stopped_by)
    scores = [_mean(reviews[c.index]) if c.index in reviews else None for c in drawn]
    return answer_by_score(session, drawn, scores)


def _reviewer(session: Session) -> Engine | None:
    """The engine that writes the reviews: the judge engine of an llm-judge the caller
    configured (a second, stronger model), else None (the session's own)."""
    configured = session.verifiers.get("llm-judge")
    return configured.engine if isinstance(configured, LLMJudgeVerifier) else None


async def _verify(
    session: Session,
    judge: Verifier | None,
    reviewer: Engine | None,
    problem: str,
    pool: Sequence[Candidate],
    verifications: int,
) -> dict[int, list[Review]]:
    """Each candidate's reviews, concurrently. A candidate whose reviews could not be drawn (the
    budget ran out) is left out; one whose sample failed scores 0 without a review."""
    outcomes = await asyncio.gather(
        *(_reviews(session, judge, reviewer, problem, c, verifications) for c in pool),
        return_exceptions=True,
    )
    reviewed: dict[int, list[Review]] = {}
    for candidate, outcome in zip(pool, outcomes, strict=True):
        if isinstance(outcome, BudgetExhausted):
            continue
        if isinstance(outcome, PonderError):
            outcome = [Review(0.0, f"the review failed: {outcome}")]
        elif isinstance(outcome, BaseException):
            raise outcome
        reviewed[candidate.index] = outcome
        name = judge.name if judge is not None else REVIEW_NAME
        candidate.scores[name] = Score(value=_mean(outcome), explanation=_issues(outcome))
    if not reviewed and session.exhausted:
        raise BudgetExhausted(session.stopped_by or "max_samples")
    return reviewed


async def _reviews(
    session: Session,
    judge: Verifier | None,
    reviewer: Engine | None,
    problem: str,
    candidate: Candidate,
    n: int,
) -> list[Review]:
    if candidate.error is not None or not candidate.text.strip():
        return [Review(0.0, f"no solution to review ({candidate.error or 'empty'})")]
    if judge is not None:
        judged = await judge.score_all(session, problem, [candidate] * n)
        scores = [s for s in judged if s is not None]
        if not scores:
            raise BudgetExhausted(session.stopped_by or "max_samples")
        return [Review(s.value, s.explanation) for s in scores]
    prompt = REVIEW_PROMPT.format(problem=problem, solution=candidate.text)
    messages = [
        Message(role="system", content=REVIEW_SYSTEM_PROMPT),
        Message(role="user", content=prompt),
    ]
    generation = await session.generate(messages, n, step="verify", engine=reviewer)
    return [parse_review(c.text) for c in generation.completions]


def parse_review(text: str) -> Review:
    """The last "Score: 0 | 0.5 | 1" line and the issues listed before it. An unparsable review
    scores 0 and is kept whole as the issues."""
    found = list(_SCORE.finditer(text))
    if not found:
        return Review(0.0, f"unparsable review (scored 0): {text.strip()}")
    score = float(found[-1].group(1))
    issues = text[: found[-1].start()].strip() or "No issues listed."
    return Review(score, issues)


async def _refine(
    session: Session,
    problem: str,
    kept: Sequence[Candidate],
    reviews: dict[int, list[Review]],
    pool: int,
) -> list[Candidate]:
    """The next pool: `pool` revisions spread over the kept candidates (the best get the
    remainder), one request per kept candidate. Revisions drawn before the budget ran out are
    kept."""
    shares = [pool // len(kept) + (1 if i < pool % len(kept) else 0) for i in range(len(kept))]
    outcomes = await asyncio.gather(
        *(
            session.sample(
                [
                    Message(role="system", content=MATH_SYSTEM_PROMPT),
                    Message(
                        role="user",
                        content=REFINE_PROMPT.format(
                            problem=problem, solution=c.text, issues=_issues(reviews[c.index])
                        ),
                    ),
                ],
                n,
                step="refine",
            )
            for c, n in zip(kept, shares, strict=True)
            if n > 0
        ),
        return_exceptions=True,
    )
    revised: list[Candidate] = []
    for outcome in outcomes:
        if isinstance(outcome, BudgetExhausted | PonderError):
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        revised += outcome
    session.record("refined", kept=[c.index for c in kept], samples=len(revised))
    if not revised:
        raise BudgetExhausted(session.stopped_by or "max_samples")
    return revised


def _record_round(
    session: Session,
    round_: int,
    pool: Sequence[Candidate],
    reviewed: dict[int, list[Review]],
) -> None:
    session.record(
        "round",
        round=round_,
        scores={c.index: [r.score for r in reviewed[c.index]] for c in pool if c.index in reviewed},
        critiques={
            c.index: _short(_issues(reviewed[c.index])) for c in pool if c.index in reviewed
        },
    )


def _passes(reviews: Sequence[Review]) -> bool:
    return bool(reviews) and all(r.score >= 1.0 for r in reviews)


def _mean(reviews: Sequence[Review]) -> float:
    return sum(r.score for r in reviews) / len(reviews) if reviews else 0.0


def _issues(reviews: Sequence[Review]) -> str:
    """What the reviewers found wrong: the (distinct) issues of every review short of full
    marks."""
    critical = [r.issues for r in reviews if r.score < 1.0] or [r.issues for r in reviews[:1]]
    critical = list(dict.fromkeys(critical))
    if len(critical) == 1:
        return critical[0]
    return "\n\n".join(f"Review {i}: {issues}" for i, issues in enumerate(critical, 1))


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


VERIFY_REFINE = Strategy(
    name="verify-refine",
    summary="Generate, review strictly, refine the best against the review (DeepSeekMath-V2).",
    params=VerifyRefineParams,
    run=verify_refine,
)
