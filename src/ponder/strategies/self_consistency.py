"""Self-consistency (Wang et al. 2022): sample n reasoning paths, answer by majority vote."""

from __future__ import annotations

from ponder.engines.base import Engine
from ponder.engines.types import SamplingParams
from ponder.strategies.primitives import (
    EventCallback,
    Question,
    as_messages,
    candidates_of,
    majority_vote,
    sample,
)
from ponder.strategies.result import Result


async def self_consistency(
    engine: Engine,
    question: Question,
    params: SamplingParams,
    on_event: EventCallback | None = None,
) -> Result:
    generation = await sample(engine, as_messages(question), params, on_event)
    candidates = candidates_of(generation)
    answer, votes = majority_vote([c.answer for c in candidates])
    return Result(
        strategy="self-consistency",
        model=generation.model,
        answer=answer,
        vote_share=votes.get(answer, 0) / len(candidates) if answer is not None else 0.0,
        votes=votes,
        candidates=candidates,
        usage=generation.usage,
        latency_s=generation.timings.total_s,
        warnings=generation.warnings,
    )
