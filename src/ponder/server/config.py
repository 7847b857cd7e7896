"""The server's settings: one validated, frozen object that `create_app` takes and `ponder serve`
builds from its flags. Limits have safe defaults, so an app made with no config is already
protected against oversized bodies and unbounded queues."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ponder.engines.types import SamplingParams


class ServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: tuple[SecretStr, ...] = Field(
        default=(),
        description="accepted API keys (Bearer token or X-Api-Key); none: no authentication",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="larger request bodies get 413"
    )
    max_running: int = Field(
        default=32,
        ge=1,
        description="requests worked on at once; the engine batches their samples together",
    )
    max_waiting: int = Field(
        default=128, ge=0, description="requests queued for a slot; beyond that, 429"
    )
    default_strategy: str | None = Field(
        default=None, description="strategy for requests that name none; None: pass through"
    )
    default_params: dict[str, Any] = Field(default_factory=dict)
    default_max_tokens: int = Field(
        default=512, ge=1, le=131072, description="max_tokens when a request gives none"
    )
    default_temperature: float = Field(
        default=SamplingParams().temperature,
        ge=0,
        le=2,
        description="temperature when a request gives none (strategies need diverse samples)",
    )
    default_deadline_s: float | None = Field(default=None, gt=0)
    max_deadline_s: float | None = Field(
        default=3600.0, gt=0, description="longest deadline a request may ask for"
    )
    deadline_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="after the deadline, how long the strategy may take to answer from the "
        "samples it has (cancelled ones end within a step) before it is stopped outright",
    )
    progress_interval_s: float = Field(
        default=0.5, gt=0, description="seconds between progress comments on a stream"
    )
    first_event_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="a stream's headers wait up to this long for the engine's first token, so "
        "an upstream that fails at once still gets a real 502 instead of an in-stream error",
    )
    stream_chunk_chars: int = Field(
        default=24, ge=1, description="the chosen answer is streamed in pieces of about this size"
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(not k.get_secret_value() for k in keys):
            raise ValueError("API keys must not be empty")
        return keys
