"""Budgets: how much compute one question may spend, and which limit stopped it.

One `Budget` is accepted everywhere: the library (`run_strategy(..., budget=...)`), `ponder ask
--budget SPEC` and the server (a dict in the request). Any limit may be left out (unlimited):

* ``samples`` (``max_samples``): engine samples of every kind together, judge calls included;
* ``tokens`` (``max_tokens``): generated tokens of every sample together;
* ``seconds`` (``max_seconds``): a deadline, wall-clock seconds from the start;
* ``usd`` (``max_usd``): dollars, at the model's price (`ponder.planning.pricing`).

Written as text (the CLI, a header), a budget is comma-separated ``KEY=VALUE`` pairs, e.g.
``samples=16,tokens=4000,seconds=10,usd=0.002``. Samples and tokens are whole numbers; seconds
take an optional unit (``500ms``, ``10s``, ``2m``, ``1h``; none means seconds); dollars an
optional ``$`` (``usd=$0.01``). As a mapping (a server's JSON body) the same keys, short or long,
take numbers or those same strings: ``Budget.from_mapping({"max_seconds": "500ms"})``.
`Budget.model_validate` accepts the long names only and raises pydantic's `ValidationError`;
`parse` and `from_mapping` raise `BudgetError` with one clear line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from ponder.errors import InvalidRequestError

Limit = Literal["max_samples", "max_tokens", "max_seconds", "max_usd"]
LIMITS: tuple[Limit, ...] = get_args(Limit)
SHORT_NAMES: dict[str, Limit] = {
    "samples": "max_samples",
    "tokens": "max_tokens",
    "seconds": "max_seconds",
    "usd": "max_usd",
}
_NAMES: dict[str, Limit] = {**SHORT_NAMES, **{name: name for name in LIMITS}}
EXAMPLE = "samples=16,tokens=4000,seconds=10,usd=0.002"
SECOND_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_AMOUNT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)$", re.IGNORECASE)
_ADDED_LATER: tuple[Limit, ...] = ("max_seconds", "max_usd")


class BudgetError(InvalidRequestError):
    """A budget that is malformed, out of range, or that cannot be met."""


def parse_seconds(value: str) -> float:
    """``"500ms"``, ``"10s"``, ``"2m"``, ``"1h"`` or a bare number of seconds."""
    found = _AMOUNT.match(value.strip())
    if found is None:
        raise ValueError(f"expected a duration such as 10s or 500ms, got {value!r}")
    number, unit = float(found.group(1)), found.group(2).lower()
    if unit not in ("", *SECOND_UNITS):
        raise ValueError(
            f"unknown unit {found.group(2)!r} in {value!r}; use {', '.join(SECOND_UNITS)} "
            "(none means seconds)"
        )
    return number * SECOND_UNITS.get(unit, 1.0)


def parse_usd(value: str) -> float:
    """``"0.01"`` or ``"$0.01"``."""
    text = value.strip().removeprefix("$").strip()
    found = _AMOUNT.match(text)
    if found is None or found.group(2):
        raise ValueError(f"expected dollars such as 0.01 or $0.01, got {value!r}")
    return float(found.group(1))


class Budget(BaseModel):
    """Limits for one question under one strategy. `None` means unlimited.

    `max_tokens` counts generated (completion) tokens of every sample together, including samples
    cancelled part-way, verifier calls and refinements: everything the strategy made the engine do.
    `max_seconds` is a deadline: when it passes, running samples are cancelled (their tokens still
    count) and the strategy answers from what it has. `max_usd` prices all of that at the model's
    price: per token for an API model, per second of wall time for a machine of your own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_samples: int | None = Field(
        default=None, ge=1, description="engine samples of every kind together"
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="generated tokens of every sample together"
    )
    max_seconds: float | None = Field(
        default=None,
        gt=0.0,
        allow_inf_nan=False,
        description="deadline in seconds of wall time; running samples are cancelled at it",
    )
    max_usd: float | None = Field(
        default=None, gt=0.0, allow_inf_nan=False, description="dollars at the model's price"
    )

    @field_validator("max_seconds", mode="before")
    @classmethod
    def _seconds_with_unit(cls, value: object) -> object:
        return parse_seconds(value) if isinstance(value, str) else value

    @field_validator("max_usd", mode="before")
    @classmethod
    def _usd_with_sign(cls, value: object) -> object:
        return parse_usd(value) if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _omit_unset_later_limits(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Limits added after budgets were first stored appear only when set, so the digest of a
        budget dumped before they existed (a `bench live` config's key) stays the same."""
        data: dict[str, Any] = handler(self)
        for name in _ADDED_LATER:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @classmethod
    def parse(cls, spec: str) -> Budget:
        """A budget from ``KEY=VALUE,...`` text (see the module docstring)."""
        raw: dict[str, str] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise BudgetError(f"budget {spec!r}: write KEY=VALUE pairs, e.g. {EXAMPLE}")
            name = _limit_name(key)
            if name in raw:
                raise BudgetError(f"budget {spec!r}: {key.strip()} is given twice")
            raw[name] = value.strip()
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Budget:
        """A budget from a mapping with short or long keys, numbers or strings with units."""
        raw: dict[str, Any] = {}
        for key, value in data.items():
            name = _limit_name(str(key))
            if name in raw:
                raise BudgetError(f"budget: {name} is given twice")
            raw[name] = value
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise BudgetError(f"budget: {_describe_errors(exc)}") from exc

    def merged(self, other: Budget) -> Budget:
        """This budget with `other`'s limits added; a limit set in both must agree."""
        mine = self.model_dump(exclude_none=True)
        for name, value in other.model_dump(exclude_none=True).items():
            if name in mine and mine[name] != value:
                raise BudgetError(f"budget: {name} is given twice ({mine[name]} and {value})")
            mine[name] = value
        return type(self).model_validate(mine)

    def describe(self) -> str:
        """The limits in words, e.g. "16 samples, 10 s, $0.002"; "unlimited" when none."""
        parts = []
        if self.max_samples is not None:
            parts.append(f"{self.max_samples} samples")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens} tokens")
        if self.max_seconds is not None:
            parts.append(f"{self.max_seconds:g} s")
        if self.max_usd is not None:
            parts.append(f"${self.max_usd:g}")
        return ", ".join(parts) or "unlimited"


def _limit_name(key: str) -> Limit:
    key = key.strip().lower().replace("-", "_")
    found = _NAMES.get(key)
    if found is not None:
        return found
    known = ", ".join(f"{short} ({long})" for short, long in SHORT_NAMES.items())
    raise BudgetError(f"unknown budget limit {key!r}; use {known}, e.g. {EXAMPLE}")


def _describe_errors(exc: ValidationError) -> str:
    """pydantic's errors as one line: each limit, what is wrong and the value given."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "budget"
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        named = isinstance(given, dict) or error["type"] == "value_error"  # says the value itself
        suffix = "" if named else f" (got {given!r})"
        if isinstance(given, float) and not math.isfinite(given):
            message = "must be a finite number"
        problems.append(f"{where}: {message}{suffix}")
    return "; ".join(problems)


class BudgetExhausted(Exception):
    """Raised inside a strategy when a limit is reached; the runner returns the best so far."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(f"budget limit reached: {limit}")
        self.limit = limit
