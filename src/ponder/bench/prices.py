"""Prices that turn a strategy's measured tokens and seconds into dollars (`ponder bench report`).

A price file (JSON, or TOML with a ``.toml`` suffix) maps each model name, as the run records it,
to one of two kinds of price:

* ``{"input_usd_per_mtok": x, "output_usd_per_mtok": y}``: an API model billed per million
  tokens. Every sample sends the prompt again, so a strategy that draws n samples pays for the
  prompt n times, plus every token it generates.
* ``{"usd_per_hour": z}``: a model on a machine of your own, which costs its hourly price for as
  long as the strategy runs (its measured seconds per item).

Without a file, runs on the embedded engine are priced at `DEFAULT_USD_PER_HOUR`; runs against a
remote server have no default (their cost is left out, since the server's machine is unknown).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ponder.bench.store import RunConfig
from ponder.engines.factory import LOCAL
from ponder.errors import InvalidRequestError

DEFAULT_USD_PER_HOUR = 0.10
"""The default machine cost of a run on the embedded engine: about what a small 2-core cloud VM
(the kind ponder's reference runs are made on) costs per hour. For one model only the ratios
between strategies matter; give a price file to compare with API models or another machine."""

TOKEN_KEYS = ("input_usd_per_mtok", "output_usd_per_mtok")
HOURLY_KEY = "usd_per_hour"


class PriceError(InvalidRequestError):
    """The price file cannot be used: missing, unreadable, or with a bad entry."""


class TokenPrice(BaseModel):
    """Billed per token, in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_usd_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)
    output_usd_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)

    def cost(self, input_tokens: float, output_tokens: float, seconds: float) -> float:
        """USD for `input_tokens` prompt tokens sent and `output_tokens` generated."""
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6

    def describe(self) -> str:
        return (
            f"${self.input_usd_per_mtok:g} / M input tokens, "
            f"${self.output_usd_per_mtok:g} / M output tokens"
        )


class HourlyPrice(BaseModel):
    """A machine billed by the hour, for the measured seconds a strategy runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_hour: float = Field(ge=0.0, allow_inf_nan=False)

    def cost(self, input_tokens: float, output_tokens: float, seconds: float) -> float:
        """USD for `seconds` of the machine (tokens are free: the machine is paid for anyway)."""
        return seconds * self.usd_per_hour / 3600.0

    def describe(self) -> str:
        return f"${self.usd_per_hour:g} / hour of measured latency"


Price = TokenPrice | HourlyPrice


def load_prices(path: Path) -> dict[str, Price]:
    """The price file at `path`, every entry checked: one line naming the file, the model and
    what is wrong otherwise (an unknown key is refused rather than ignored, since a typo such as
    ``output_usd_per_mtoks`` would silently price generation at nothing)."""
    if not path.is_file():
        raise PriceError(f"No such price file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        raw: object = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON (use a .toml suffix for TOML)"
        raise PriceError(f"{path} is not valid {kind}: {error}") from error
    if not isinstance(raw, dict) or not raw:
        raise PriceError(
            f'{path} must map model names to prices, e.g. {{"my-model": {{"usd_per_hour": 0.1}}}}'
        )
    return {str(name): _price(path, str(name), entry) for name, entry in raw.items()}


def _price(path: Path, name: str, entry: object) -> Price:
    where = f"{path}: model {name!r}"
    if not isinstance(entry, dict):
        raise PriceError(f"{where} must be a table of prices, got {entry!r}")
    unknown = sorted(set(entry) - {*TOKEN_KEYS, HOURLY_KEY})
    if unknown:
        raise PriceError(
            f"{where}: unknown key {unknown[0]!r} (use {TOKEN_KEYS[0]} and {TOKEN_KEYS[1]}, "
            f"or {HOURLY_KEY})"
        )
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PriceError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise PriceError(f"{where}: {key} must be a non-negative number, got {value!r}")
    if HOURLY_KEY in entry:
        if len(entry) > 1:
            raise PriceError(f"{where}: give either {HOURLY_KEY} or per-token prices, not both")
        return HourlyPrice(usd_per_hour=entry[HOURLY_KEY])
    missing = [key for key in TOKEN_KEYS if key not in entry]
    if missing:
        raise PriceError(f"{where}: {missing[0]} is missing (or give {HOURLY_KEY} instead)")
    return TokenPrice(**entry)


def price_for(config: RunConfig, prices: Mapping[str, Price] | None) -> Price | None:
    """The price of a run's model: from the price file when one is given (which must then name
    the model: a report that silently left one model unpriced would compare costs unevenly),
    else the default machine cost for the embedded engine, else None (unknown)."""
    if prices is not None:
        if config.model not in prices:
            raise PriceError(
                f"the price file has no entry for model {config.model!r}; add one "
                f'(e.g. "{config.model}": {{"{HOURLY_KEY}": {DEFAULT_USD_PER_HOUR}}})'
            )
        return prices[config.model]
    if config.engine == LOCAL:
        return HourlyPrice(usd_per_hour=DEFAULT_USD_PER_HOUR)
    return None
