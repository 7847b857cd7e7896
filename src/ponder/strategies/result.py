"""What every strategy returns: the answer, the evidence behind it, what it cost, and how it got
there (a step-by-step trace)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ponder.budget import Limit
from ponder.engines.types import Completion, FinishReason, TokenLogprob, Usage


class Score(BaseModel):
    """A verifier's judgement of one candidate: 0 (wrong) .. 1 (right), and why."""

    value: float = Field(ge=0.0, le=1.0)
    explanation: str = ""


class Candidate(BaseModel):
    """One sampled solution, the final answer extracted from it, and the scores it received."""

    index: int = Field(description="position among all samples the strategy drew")
    text: str
    answer: str | None = Field(description="normalised final answer; None when none was found")
    finish_reason: FinishReason
    completion_tokens: int
    latency_s: float
    scores: dict[str, Score] = Field(default_factory=dict, description="verifier name -> score")
    error: str | None = None
    logprobs: list[TokenLogprob] | None = Field(default=None, exclude=True, repr=False)

    @classmethod
    def from_completion(cls, completion: Completion, answer: str | None, index: int) -> Candidate:
        return cls(
            index=index,
            text=completion.text,
            answer=answer,
            finish_reason=completion.finish_reason,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            error=completion.error,
            logprobs=completion.logprobs,
        )


class TraceStep(BaseModel):
    """One thing the strategy did, in order: sampled, voted, verified, refined, stopped..."""

    step: str
    at_s: float = Field(description="seconds since the strategy started")
    tokens: int = Field(default=0, description="tokens this step generated")
    detail: dict[str, Any] = Field(default_factory=dict)


class ModelUsage(BaseModel):
    """What one model did for a result: a cascade's two models, or a judge beside the sampler,
    are priced apart (each at its own price), so a result keeps each one's share."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0.0, description="wall time its requests ran")
    samples: int = Field(default=0, ge=0, description="samples drawn from it")
    usd: float | None = Field(default=None, description="its share of `cost_usd` (None: unpriced)")


class Result(BaseModel):
    """The outcome of one question under one strategy."""

    strategy: str
    model: str
    answer: str | None
    vote_share: float = Field(ge=0.0, le=1.0, description="weight of the answer / all weight")
    votes: dict[str, float] = Field(description="answer -> votes (or weight), largest first")
    candidates: list[Candidate]
    voters: list[int] | None = Field(
        default=None,
        description="indices of the candidates the answer was chosen from, when not all of them "
        "(a cascade that escalated: the larger model's); the reply's text comes from these",
    )
    usage: Usage
    by_model: dict[str, ModelUsage] = Field(
        default_factory=dict,
        description="`usage` split by the model that spent it, with each one's seconds",
    )
    latency_s: float
    samples: int = Field(description="engine samples drawn, judge and refinement calls included")
    stopped_by: Limit | None = Field(default=None, description="the budget limit that ended it")
    cost_usd: float | None = Field(
        default=None, description="dollars at the model's price (None: no price known)"
    )
    warnings: list[str] = Field(default_factory=list)
    trace: list[TraceStep] = Field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.usage.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0
