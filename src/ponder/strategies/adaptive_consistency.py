"""Adaptive sampling for self-consistency: draw a few samples at a time and stop as soon as the
vote is settled, instead of always paying for n.

Rules:
- "beta" (Aggarwal et al. 2023, Adaptive-Consistency): with v1 >= v2 votes for the two leading
  answers, stop once P(p1 > p2) >= `confidence` under the posterior Beta(v1 + 1, v2 + 1). The rule
  is checked as each sample finishes, so samples still running in that round are cancelled.
- "esc" (Li et al. 2024, Escape Sky-high Cost): draw windows of `window` samples; stop after the
  first window whose answers all agree.

Either way the answer is the majority vote over every sample that finished on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field

from ponder.answers import extract_answer
from ponder.budget import BudgetExhausted
from ponder.engines.types import Completion
from ponder.strategies.primitives import Question, as_messages, group_answers, weighted_vote
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session


class AdaptiveConsistencyParams(StrategyParams):
    rule: Literal["beta", "esc"] = Field(
        default="beta",
        description="stopping rule: 'beta' (posterior of the leading answer) or 'esc' "
        "(a window whose answers all agree)",
    )
    max_samples: int = Field(default=16, ge=1, le=256, description="samples to draw at most")
    batch: int = Field(
        default=2, ge=1, le=256, description="beta: samples drawn concurrently per round"
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="beta: stop once P(leading answer is the true majority) reaches this",
    )
    window: int = Field(
        default=4, ge=2, le=256, description="esc: samples per window; a unanimous window stops"
    )


def beta_majority_probability(v1: int, v2: int) -> float:
    """P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1): the posterior probability that the answer with v1
    votes is more likely than the one with v2 (uniform prior, the two answers alone).

    Exact, in integers: for integer a, b, 1 - I_{1/2}(a, b) = P(Binomial(a + b - 1, 1/2) < a),
    so the result is a sum of binomial coefficients over 2^(a + b - 1), rounded once to float.
    """
    if v1 < 0 or v2 < 0:
        raise ValueError("vote counts must be non-negative")
    a, b = v1 + 1, v2 + 1
    trials = a + b - 1
    return float(Fraction(sum(math.comb(trials, k) for k in range(a)), 2**trials))


def _leading_counts(votes: dict[str, float]) -> tuple[int, int]:
    counts = [*sorted((int(v) for v in votes.values()), reverse=True), 0, 0]
    return counts[0], counts[1]


def _beta_check(answers: Sequence[str | None], confidence: float) -> tuple[bool, dict[str, Any]]:
    _, votes = weighted_vote(group_answers(answers))
    v1, v2 = _leading_counts(votes)
    probability = beta_majority_probability(v1, v2)
    stop = probability >= confidence
    return stop, {"rule": "beta", "v1": v1, "v2": v2, "p": probability, "stop": stop}


def _esc_check(window: Sequence[str | None]) -> tuple[bool, dict[str, Any]]:
    unanimous = bool(window) and None not in window and len(set(window)) == 1
    return unanimous, {"rule": "esc", "window": list(window), "stop": unanimous}


async def adaptive_consistency(
    session: Session, question: Question, p: AdaptiveConsistencyParams
) -> Result:
    messages = as_messages(question)
    candidates: list[Candidate] = []
    voters: list[Candidate] = []  # samples that finished on their own (not cancelled by us)
    round_size = p.batch if p.rule == "beta" else p.window
    settled = False
    while not settled and len(candidates) < p.max_samples and not session.exhausted:
        k = min(round_size, p.max_samples - len(candidates))
        earlier = [c.answer for c in voters]
        settled_mid_round = False

        def enough(finished: list[Completion], earlier: list[str | None] = earlier) -> bool:
            nonlocal settled_mid_round
            done = [extract_answer(c.text) for c in finished if c.finish_reason != "cancelled"]
            settled_mid_round = _beta_check(earlier + done, p.confidence)[0]
            return settled_mid_round

        try:
            drawn = await session.sample(messages, k, enough=enough if p.rule == "beta" else None)
        except BudgetExhausted:
            break
        candidates += drawn
        # Samples still running when the vote settled were cancelled by us: they do not vote.
        voters += [c for c in drawn if not (settled_mid_round and c.finish_reason == "cancelled")]
        if p.rule == "beta":
            settled, stat = _beta_check([c.answer for c in voters], p.confidence)
        else:  # esc: this round is the window; compare answers up to equivalence
            settled, stat = _esc_check(group_answers([c.answer for c in voters])[-len(drawn) :])
        session.record("stop-check", samples=len(candidates), voters=len(voters), **stat)

    groups = group_answers([c.answer for c in voters])
    answer, votes = weighted_vote(groups)
    session.record("vote", votes=votes, settled=settled, samples=len(candidates))
    share = votes.get(answer, 0.0) / len(voters) if answer is not None else 0.0
    return session.result(answer, candidates, votes, share=share)


ADAPTIVE_CONSISTENCY = Strategy(
    name="adaptive-consistency",
    summary="Sample a few at a time and stop once the majority is settled "
    "(Aggarwal et al. 2023; ESC, Li et al. 2024).",
    params=AdaptiveConsistencyParams,
    run=adaptive_consistency,
)
