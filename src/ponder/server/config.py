"""The server's settings: one validated, frozen object that `create_app` takes and `ponder serve`
builds from its flags. Limits have safe defaults, so an app made with no config is already
protected against oversized bodies and unbounded queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ponder.engines.types import SamplingParams
from ponder.planning.pricing import HourlyPrice, TokenPrice


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
    default_deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="the deadline (budget max_seconds) of requests that give none",
    )
    max_deadline_s: float | None = Field(
        default=3600.0, gt=0, description="longest deadline a request may ask for"
    )
    deadline_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="after the deadline, how long a strategy that has not answered (busy with "
        "work that is not an engine request, such as running its samples' code) may take "
        "before it is stopped outright and the samples it has are voted on",
    )
    prices: dict[str, TokenPrice | HourlyPrice] | None = Field(
        default=None,
        description="price per served model (`ponder serve --prices FILE`), which must then name "
        "every one; None: the embedded engine at the default machine cost, remote ones unpriced",
    )
    auto_policy: Path | None = Field(
        default=None,
        description="the auto strategy's policy file (`ponder serve --policy FILE`, from `ponder "
        "plan fit`); None: the shipped one. Requests may not name one: the server reads no file "
        "a client names",
    )
    cascade_policy: Path | None = Field(
        default=None,
        description="the cascade's policy file (`ponder serve --cascade-policy FILE`, from "
        "`ponder plan fit-cascade`); None: the cascade's default rule, which requests may change",
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

    @model_validator(mode="after")
    def _default_deadline_allowed(self) -> Self:
        default, most = self.default_deadline_s, self.max_deadline_s
        if default is not None and most is not None and default > most:
            raise ValueError(
                f"the default deadline ({default:g}s) exceeds the longest allowed ({most:g}s)"
            )
        return self

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(not k.get_secret_value() for k in keys):
            raise ValueError("API keys must not be empty")
        return keys
