"""What every strategy returns: the answer, the evidence behind it, and what it cost."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ponder.engines.types import Completion, FinishReason, Usage


class Candidate(BaseModel):
    """One sampled solution and the final answer extracted from it."""

    index: int
    text: str
    answer: str | None = Field(description="normalised final answer; None when none was found")
    finish_reason: FinishReason
    completion_tokens: int
    latency_s: float
    error: str | None = None

    @classmethod
    def from_completion(cls, completion: Completion, answer: str | None) -> Candidate:
        return cls(
            index=completion.index,
            text=completion.text,
            answer=answer,
            finish_reason=completion.finish_reason,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            error=completion.error,
        )


class Result(BaseModel):
    """The outcome of one question under one strategy."""

    strategy: str
    model: str
    answer: str | None
    vote_share: float = Field(ge=0.0, le=1.0, description="votes for the answer / all samples")
    votes: dict[str, int] = Field(description="answer -> number of samples, most votes first")
    candidates: list[Candidate]
    usage: Usage
    latency_s: float
    warnings: list[str] = Field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.usage.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0
