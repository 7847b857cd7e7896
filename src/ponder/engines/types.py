"""The data that crosses the engine protocol: what a caller asks for and what comes back.

Inputs are validated pydantic models (a bad request fails here, with the field named, before it
costs compute); outputs are plain pydantic models so every front end can serialise them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

FinishReason = Literal["stop", "length", "cancelled", "error"]


class Message(BaseModel):
    """One chat message. Extra fields (name, tool_calls, tool_call_id, ...) are kept unchanged so
    multi-turn and tool conversations reach the model intact."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class SamplingParams(BaseModel):
    """How to sample. `temperature=0` means greedy; `top_k=0` and `top_p=1` disable those cuts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(default=1, ge=1, le=256, description="number of samples to draw")
    max_tokens: int = Field(default=512, ge=1, le=131072, description="new tokens per sample")
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 disables top-k")
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, description="makes embedded sampling reproducible")
    stop: tuple[str, ...] = Field(default=(), max_length=16)
    logprobs: bool = Field(default=False, description="return each sampled token's logprob")
    top_logprobs: int = Field(
        default=0, ge=0, le=20, description="alternatives per token (implies logprobs)"
    )
    ignore_eos: bool = Field(
        default=False, description="keep generating past end-of-text (for benchmarks)"
    )

    @model_validator(mode="after")
    def _check(self) -> SamplingParams:
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        return self

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs or self.top_logprobs > 0


class GenerationRequest(BaseModel):
    """Either chat `messages` (formatted with the model's own chat template) or a raw `prompt`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    params: SamplingParams = SamplingParams()
    continue_final: bool = Field(
        default=False,
        description="the last message is a partial assistant reply to continue (a prefill), "
        "as budget forcing and step-wise search need",
    )

    @model_validator(mode="after")
    def _exactly_one_input(self) -> GenerationRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        if self.prompt is not None and not self.prompt:
            raise ValueError("`prompt` must not be empty")
        if self.continue_final and (self.messages is None or self.messages[-1].role != "assistant"):
            raise ValueError("`continue_final` needs messages ending with an assistant message")
        return self

    @classmethod
    def chat(
        cls, messages: list[dict[str, Any]] | list[Message], **params: Any
    ) -> GenerationRequest:
        msgs = tuple(m if isinstance(m, Message) else Message.model_validate(m) for m in messages)
        return cls(messages=msgs, params=SamplingParams(**params))


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """The sampled token, its logprob under the (untempered) model, and the top alternatives."""

    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class Completion(BaseModel):
    """One sample. Cancelled and failed samples are kept: their tokens were paid for."""

    index: int
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    latency_s: float = Field(description="seconds from the request's start to this sample's end")
    error: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Timings(BaseModel):
    """Wall-clock split of one request. `queued_s` is time spent waiting for engine capacity."""

    queued_s: float = 0.0
    prompt_s: float | None = None
    total_s: float = 0.0


class Generation(BaseModel):
    """Everything one request produced, in sample-index order."""

    model: str
    completions: list[Completion]
    usage: Usage
    timings: Timings
    warnings: list[str] = Field(
        default_factory=list, description="where the backend gave less than asked, and how"
    )


class SampleDelta(BaseModel):
    """New text for one sample while it is being generated."""

    index: int
    text: str
    tokens: int
    logprobs: list[TokenLogprob] | None = None


class SampleFinished(BaseModel):
    completion: Completion


SampleEvent = SampleDelta | SampleFinished


class Capabilities(BaseModel):
    """What an engine can do natively, so strategies can plan (and callers are told honestly)."""

    parallel_n: bool = Field(description="draws n samples from one prompt evaluation / request")
    logprobs: bool
    max_top_logprobs: int
    streaming: bool
    prefix_caching: bool
    cancel_sample: bool = Field(description="can stop one sample while others continue")
