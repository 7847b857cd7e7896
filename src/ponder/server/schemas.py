"""The wire format: OpenAI's chat and text completion requests and responses, plus ponder's own
`ponder` fields.

Requests are validated strictly (no type coercion; unknown top-level fields are errors, so a
typo such as ``temprature`` is reported instead of silently ignored). Every field OpenAI's API
accepts is accepted; the ones ponder's engines cannot honour are checked in `unsupported` and
rejected only when set to something other than their neutral value. Messages keep unknown fields
(``name``, ``tool_calls``, ``tool_call_id``, ...) as OpenAI allows, so a conversation reaches the
strategy and the engine unchanged. ``top_k`` and ``min_p`` are accepted as vLLM and llama.cpp do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.budget import Limit
from ponder.engines.types import Message

_STRICT = ConfigDict(extra="forbid", strict=True)


class PonderOptions(BaseModel):
    """The ``ponder`` body field: which strategy to run and how much it may spend."""

    model_config = _STRICT

    strategy: str | None = Field(
        default=None,
        max_length=200,
        description="strategy name, optionally with arguments ('self-consistency:8'); "
        "'none' passes the request straight through",
    )
    params: dict[str, Any] | None = Field(default=None, description="the strategy's parameters")
    budget: dict[str, int | float | str] | None = Field(
        default=None,
        description="limits, short or long names: samples (max_samples), tokens (max_tokens, all "
        "samples together), seconds (max_seconds, a deadline: the best answer found by then is "
        "returned; 10, '500ms', '2m') and usd (max_usd, dollars at the model's price; 0.01 or "
        "'$0.01')",
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class _CommonRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = _STRICT

    model: str = Field(
        default="",
        max_length=512,
        description="a served model, optionally prefixed by a strategy: "
        "'self-consistency:8/qwen2.5-coder-0.5b'; empty means the default model",
    )
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=512)
    ponder: PonderOptions | None = None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for the first field set to something ponder cannot do, else None."""
        if self.presence_penalty or self.frequency_penalty:
            field = "presence_penalty" if self.presence_penalty else "frequency_penalty"
            return field, f"{field} is not supported by ponder's engines; leave it at 0"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported by ponder's engines"
        return None


class ChatCompletionRequest(_CommonRequest):
    messages: list[Message] = Field(min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=131072)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None

    def unsupported(self) -> tuple[str, str] | None:
        found = super().unsupported()
        if found is not None:
            return found
        if self.tools or self.functions:
            field = "tools" if self.tools else "functions"
            return field, f"{field} (function calling) is not supported by ponder's engines"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format", "only response_format {'type': 'text'} is supported"
        return None


class CompletionRequest(_CommonRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=128)

    def unsupported(self) -> tuple[str, str] | None:
        found = super().unsupported()
        if found is not None:
            return found
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            return "prompt", "give one prompt per request (a string, or a list of one string)"
        if self.echo:
            return "echo", "echo is not supported"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of is not supported; use the best-of-n strategy instead"
        return None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# --- responses -------------------------------------------------------------------------------


class UsageOut(BaseModel):
    """Every token the request made the engine process, cancelled samples included."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CandidateOut(BaseModel):
    index: int
    answer: str | None
    finish_reason: str
    completion_tokens: int
    latency_s: float
    scores: dict[str, float] = Field(default_factory=dict)
    error: str | None = None


class EngineRequestOut(BaseModel):
    """One engine request the strategy made: its samples and what they cost together (prompt
    tokens are counted per request, not per sample, which is what the engine processed)."""

    model: str = Field(description="the model that served it (a cascade's escalations differ)")
    n: int
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: list[str]


class PonderInfo(BaseModel):
    """What the strategy did and what it cost; the same figures are in the X-Ponder-* headers."""

    strategy: str
    source: str = Field(description="who chose the strategy: header, body, model or default")
    params: dict[str, Any]
    model: str
    answer: str | None = Field(description="the extracted final answer the strategy chose")
    vote_share: float
    votes: dict[str, float]
    samples: int
    stopped_by: Limit | None = Field(
        description="the budget limit that ended the strategy: max_samples, max_tokens, "
        "max_seconds (the deadline) or max_usd; null when it finished on its own"
    )
    deadline_reached: bool = Field(description="whether the deadline (max_seconds) ended it")
    cost_usd: float | None = Field(
        default=None, description="dollars at the model's price; null when no price is known"
    )
    candidates: list[CandidateOut]
    requests: list[EngineRequestOut]
    usage: UsageOut
    wall_s: float = Field(description="seconds the strategy ran")
    queued_s: float = Field(description="seconds the request waited for a slot")
    warnings: list[str]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    ponder: PonderInfo | None = None


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: UsageOut
    ponder: PonderInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ponder"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    strategies: list[str] = Field(
        description="strategies a model name can be prefixed with: 'STRATEGY[:ARGS]/MODEL'"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str]
    running: int
    waiting: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
