"""Prices that turn measured tokens and seconds into dollars: what a budget in dollars
(`Budget.max_usd`) is checked against, the `cost_usd` of every `Result`, the ledger, and the costs
in `ponder bench report`.

A price file (JSON, or TOML with a ``.toml`` suffix) maps each model name, as the engine reports
it, to one of two kinds of price:

* ``{"input_usd_per_mtok": x, "output_usd_per_mtok": y}``: an API model billed per million
  tokens, prompt tokens as the engine reports them (a request's prompt is billed once however
  many samples it draws; a server that fans `n` out reports, and bills, it once per sample).
* ``{"usd_per_hour": z}``: a model on a machine of your own, which costs its hourly price for as
  long as the strategy runs (its measured wall-clock seconds per question). `ponder bench report`
  charges a stored run's items the machine time their generated tokens took instead (the run
  decodes many samples together, so an item's latency is not its share of the machine):
  `ponder.bench.machine_time`.

Without a file, the embedded engine is priced at `DEFAULT_USD_PER_HOUR`; a remote server has no
default (its machine is unknown), so its cost is None unless a price is given.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ponder.engines.types import GenerationRequest
from ponder.errors import InvalidRequestError

if TYPE_CHECKING:
    from ponder.engines.base import Engine

DEFAULT_USD_PER_HOUR = 0.10
"""The default machine cost of the embedded engine: about what a small 2-core cloud VM (the kind
ponder's reference runs are made on) costs per hour. For one model only the ratios between
strategies matter; give a price file to compare with API models or another machine."""

TOKEN_KEYS = ("input_usd_per_mtok", "output_usd_per_mtok")
HOURLY_KEY = "usd_per_hour"

CHARS_PER_TOKEN = 4
"""Characters per token when a prompt must be priced before an engine without a tokenizer of
its own has counted it (the usual rule of thumb for English text); the engine's count replaces
the estimate as soon as the request reports its usage."""


class PriceError(InvalidRequestError):
    """A price that cannot be used: a missing or unreadable price file, or a bad entry."""


class TokenPrice(BaseModel):
    """Billed per token, in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charges_tokens: ClassVar[bool] = True

    input_usd_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)
    output_usd_per_mtok: float = Field(ge=0.0, allow_inf_nan=False)

    def cost(self, input_tokens: float, output_tokens: float, seconds: float) -> float:
        """USD for `input_tokens` prompt tokens sent and `output_tokens` generated."""
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6

    def output_tokens_for(self, usd: float) -> float | None:
        """How many generated tokens `usd` buys (None: any number, they are free)."""
        if self.output_usd_per_mtok == 0:
            return None
        return max(0.0, usd) * 1e6 / self.output_usd_per_mtok

    def seconds_for(self, usd: float) -> float | None:
        """Time is free here: None."""
        return None

    def describe(self) -> str:
        return (
            f"${self.input_usd_per_mtok:g} / M input tokens, "
            f"${self.output_usd_per_mtok:g} / M output tokens"
        )


class HourlyPrice(BaseModel):
    """A machine billed by the hour, for the measured seconds a strategy runs. Questions answered
    concurrently on one machine are each charged their own wall time, so a workload's total is an
    upper bound on the machine's bill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charges_tokens: ClassVar[bool] = False

    usd_per_hour: float = Field(ge=0.0, allow_inf_nan=False)

    def cost(self, input_tokens: float, output_tokens: float, seconds: float) -> float:
        """USD for `seconds` of the machine (tokens are free: the machine is paid for anyway)."""
        return seconds * self.usd_per_hour / 3600.0

    def output_tokens_for(self, usd: float) -> float | None:
        """Tokens are free here: None."""
        return None

    def seconds_for(self, usd: float) -> float | None:
        """How many seconds of the machine `usd` buys (None: any number, it is free)."""
        if self.usd_per_hour == 0:
            return None
        return max(0.0, usd) * 3600.0 / self.usd_per_hour

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


def price_for(
    model: str, *, local: bool, prices: Mapping[str, Price | None] | None
) -> Price | None:
    """The price of `model`: from the price table when one is given (which must then name the
    model: costs that silently left one model unpriced would compare unevenly; an entry of None
    says it is known to have none, as in a server's resolved prices), else the default machine
    cost when it runs on the embedded engine (`local`), else None (unknown)."""
    if prices is not None:
        if model not in prices:
            raise PriceError(
                f"the price file has no entry for model {model!r}; add one "
                f'(e.g. "{model}": {{"{HOURLY_KEY}": {DEFAULT_USD_PER_HOUR}}})'
            )
        return prices[model]
    if local:
        return HourlyPrice(usd_per_hour=DEFAULT_USD_PER_HOUR)
    return None


def engine_price(engine: Engine, prices: Mapping[str, Price | None] | None = None) -> Price | None:
    """`price_for` an engine object: its model, and whether it is the embedded engine."""
    from ponder.engines.embedded import EmbeddedEngine

    return price_for(engine.model, local=isinstance(engine, EmbeddedEngine), prices=prices)


@runtime_checkable
class CountsPromptTokens(Protocol):
    """An engine that can tokenize a request's prompt exactly as it will evaluate it."""

    def tokenize_request(self, request: GenerationRequest) -> list[int]: ...


def estimate_prompt_tokens(engine: Engine, request: GenerationRequest) -> tuple[int, bool]:
    """The request's prompt tokens and whether the count is exact: the engine's own tokenizer
    when it has one, else `CHARS_PER_TOKEN` characters per token of the text sent."""
    if isinstance(engine, CountsPromptTokens):
        return len(engine.tokenize_request(request)), True
    if request.messages is not None:
        text = "".join(
            m.content if isinstance(m.content, str) else json.dumps(m.content)
            for m in request.messages
            if m.content is not None
        )
    else:
        text = request.prompt or ""
    return math.ceil(len(text) / CHARS_PER_TOKEN), False
