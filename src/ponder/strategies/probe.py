"""Reading a probe: the few samples the `auto` planner and the cascade draw first, summarised by
the same features their policies were fitted on (`ponder.planning.policy`): how many of them the
leading answer holds, their mean DeepConf lowest-group confidence, and their mean length."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ponder.engines.base import Engine
from ponder.planning.policy import Vote
from ponder.strategies.primitives import group_answers, weighted_vote
from ponder.strategies.result import Candidate
from ponder.strategies.session import Session
from ponder.verifiers.confidence import lowest_group_confidence, mean_logprob, token_confidences
from ponder.verifiers.self_certainty import mean_logprob_score


@dataclass(frozen=True)
class ProbeReading:
    """A probe's answer and features (`confidence` NaN: no logprobs came back)."""

    answer: str | None
    votes: int
    share: float
    confidence: float
    length: float
    table: dict[str, float]

    def feature(self, name: str | None) -> float:
        """The value of a policy's splitting feature ("confidence", "length"; None: 0)."""
        if name == "confidence":
            return self.confidence
        if name == "length":
            return self.length
        return 0.0

    def describe(self) -> dict[str, Any]:
        """For the trace."""
        return {
            "votes": self.votes,
            "share": self.share,
            "confidence": None if math.isnan(self.confidence) else self.confidence,
            "length": self.length,
        }


def read_probe(candidates: Sequence[Candidate], window: int) -> ProbeReading:
    """The probe's majority (answers grouped by math equivalence) and its features; the share
    is the leader's votes over all probe samples, answered or not, as offline replay counts."""
    answer, table = weighted_vote(group_answers([c.answer for c in candidates]))
    votes = int(table.get(answer, 0.0)) if answer is not None else 0
    confidences = [
        lowest_group_confidence(token_confidences(c.logprobs), window)
        for c in candidates
        if c.logprobs
    ]
    return ProbeReading(
        answer=answer,
        votes=votes,
        share=votes / len(candidates) if candidates else 0.0,
        confidence=float(np.mean(confidences)) if confidences else math.nan,
        length=float(np.mean([c.completion_tokens for c in candidates])) if candidates else 0.0,
        table=table,
    )


def confidence_sampling(
    session: Session, top_logprobs: int, needed: bool, engine: Engine | None = None
) -> dict[str, Any]:
    """Sampling overrides that bring back the logprobs a confidence feature or a weighted vote
    needs, when it is `needed` and the engine (default: the session's) can give them (else a
    warning: the feature is then missing, the vote a plain majority)."""
    if not needed:
        return {}
    engine = session.engine if engine is None else engine
    capabilities = engine.capabilities
    if not capabilities.logprobs:
        warning = f"{engine.model} returns no logprobs: its confidence is unknown"
        if warning not in session.warnings:
            session.warnings.append(warning)
        return {}
    alternatives = min(top_logprobs, capabilities.max_top_logprobs)
    return {"logprobs": True, **({"top_logprobs": alternatives} if alternatives > 0 else {})}


def final_vote(candidates: list[Candidate], vote: Vote) -> tuple[str | None, dict[str, float]]:
    """The policy's vote over every sample drawn. A mean-logprob vote weighs each sample by
    exp(its mean token logprob), a sample without logprobs by 0 (as offline replay scores it);
    with no logprobs at all (an engine that returns none) it is a plain majority."""
    answers = group_answers([c.answer for c in candidates])
    if vote == "mean-logprob" and any(c.logprobs for c in candidates):
        weights = [
            float(mean_logprob_score(mean_logprob(c.logprobs))) if c.logprobs else 0.0
            for c in candidates
        ]
        return weighted_vote(answers, weights)
    return weighted_vote(answers)
