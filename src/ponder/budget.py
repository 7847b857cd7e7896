"""Budgets: how much compute one question may spend, and which limit stopped it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Limit = Literal["max_samples", "max_tokens"]


class Budget(BaseModel):
    """Limits for one question under one strategy. `None` means unlimited.

    `max_tokens` counts generated (completion) tokens of every sample together, including samples
    cancelled part-way, verifier calls and refinements: everything the strategy made the engine do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_samples: int | None = Field(
        default=None, ge=1, description="engine samples of every kind together"
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="generated tokens of every sample together"
    )


class BudgetExhausted(Exception):
    """Raised inside a strategy when a limit is reached; the runner returns the best so far."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(f"budget limit reached: {limit}")
        self.limit = limit
