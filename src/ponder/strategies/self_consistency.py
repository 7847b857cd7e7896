"""Self-consistency (Wang et al. 2022): sample n reasoning paths, answer by majority vote, with
answers grouped by mathematical equivalence rather than string equality."""

from __future__ import annotations

from pydantic import Field

from ponder.strategies.primitives import Question, as_messages, group_answers, weighted_vote
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Result
from ponder.strategies.session import Session


class SelfConsistencyParams(StrategyParams):
    n: int = Field(default=8, ge=1, le=256, description="reasoning paths to sample")


async def self_consistency(
    session: Session, question: Question, p: SelfConsistencyParams
) -> Result:
    candidates = await session.sample(as_messages(question), p.n)
    answer, votes = weighted_vote(group_answers([c.answer for c in candidates]))
    session.record("vote", votes=votes)
    share = votes.get(answer, 0.0) / len(candidates) if answer is not None else 0.0
    return session.result(answer, candidates, votes, share=share)


SELF_CONSISTENCY = Strategy(
    name="self-consistency",
    summary="Sample n reasoning paths and answer by majority vote (Wang et al. 2022).",
    params=SelfConsistencyParams,
    run=self_consistency,
)
