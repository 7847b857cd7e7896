"""The ledger: what each request cost (tokens, samples, seconds, dollars) per model and per
strategy, and what a workload costs per 1000 questions at a given policy.

Every `Result` carries its own accounting (usage, samples, latency, `cost_usd`), so a ledger entry
is built from one (`LedgerEntry.from_result`). A `Ledger` keeps running sums per (model, strategy),
so a long-lived server can record every request in constant memory (`keep_entries=False`), and
`to_prometheus` renders those sums as counters for `/metrics`.

    ledger = Ledger()
    for question in questions:
        ledger.record(await run_strategy("self-consistency", engine, question))
    print(ledger.per(1000).usd)  # dollars per 1000 questions at this policy
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ponder.budget import Limit
from ponder.prometheus import Counter, exposition

if TYPE_CHECKING:
    from ponder.strategies.result import Result


class LedgerEntry(BaseModel):
    """One request's cost. `usd` is None when its model had no price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    strategy: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    samples: int = Field(ge=0)
    seconds: float = Field(ge=0.0)
    usd: float | None = Field(default=None, ge=0.0)
    stopped_by: Limit | None = None

    @classmethod
    def from_result(cls, result: Result) -> LedgerEntry:
        return cls(
            model=result.model,
            strategy=result.strategy,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            samples=result.samples,
            seconds=result.latency_s,
            usd=result.cost_usd,
            stopped_by=result.stopped_by,
        )

    def describe(self) -> str:
        """One line, as `ponder ask` prints it."""
        usd = "unpriced" if self.usd is None else f"${self.usd:.6f}"
        return (
            f"{self.strategy} on {self.model}: {self.samples} samples, {self.prompt_tokens} "
            f"prompt + {self.completion_tokens} completion tokens, {self.seconds:.2f} s, {usd}"
        )


class Totals(BaseModel):
    """Sums over requests, or (from `per`) their projection to a number of requests: counts are
    floats so a projection keeps its fractions. `usd` sums the priced requests only (None when
    none was priced); `unpriced` says how many were left out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    samples: float = 0.0
    seconds: float = 0.0
    usd: float | None = None
    unpriced: float = 0.0
    stopped_by: dict[str, float] = Field(
        default_factory=dict, description="requests each limit ended"
    )

    @classmethod
    def of(cls, entry: LedgerEntry) -> Totals:
        """One request's totals."""
        return cls(
            requests=1,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            samples=entry.samples,
            seconds=entry.seconds,
            usd=entry.usd,
            unpriced=1 if entry.usd is None else 0,
            stopped_by={} if entry.stopped_by is None else {entry.stopped_by: 1},
        )

    def __add__(self, other: Totals) -> Totals:
        stopped = dict(self.stopped_by)
        for limit, count in other.stopped_by.items():
            stopped[limit] = stopped.get(limit, 0.0) + count
        usd = self.usd if other.usd is None else (self.usd or 0.0) + other.usd
        return Totals(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            samples=self.samples + other.samples,
            seconds=self.seconds + other.seconds,
            usd=usd,
            unpriced=self.unpriced + other.unpriced,
            stopped_by=stopped,
        )

    def per(self, requests: float = 1000) -> Totals:
        """What `requests` requests like these would cost: the mean request times `requests`
        (dollars: the mean priced request's)."""
        if self.requests == 0:
            return Totals()
        scale = requests / self.requests
        priced = self.requests - self.unpriced
        return Totals(
            requests=requests,
            prompt_tokens=self.prompt_tokens * scale,
            completion_tokens=self.completion_tokens * scale,
            samples=self.samples * scale,
            seconds=self.seconds * scale,
            usd=None if self.usd is None or priced == 0 else self.usd / priced * requests,
            unpriced=self.unpriced * scale,
            stopped_by={limit: count * scale for limit, count in self.stopped_by.items()},
        )

    def describe(self) -> str:
        usd = "unpriced" if self.usd is None else f"${self.usd:.4f}"
        if self.unpriced and self.usd is not None:
            usd += f" ({self.unpriced:g} unpriced)"
        return (
            f"{self.requests:g} requests: {self.samples:g} samples, {self.prompt_tokens:g} prompt"
            f" + {self.completion_tokens:g} completion tokens, {self.seconds:.1f} s, {usd}"
        )


def _shares(result: Result) -> dict[str, Totals] | None:
    """Each model's part of a result that drew from several, or None when there is nothing to
    split (one model, or shares that do not add up to the result's usage, as when a server
    counted requests the session did not see end)."""
    parts = result.by_model
    if len(parts) < 2 or result.model not in parts:
        return None
    prompt = sum(part.prompt_tokens for part in parts.values())
    completion = sum(part.completion_tokens for part in parts.values())
    if (prompt, completion) != (result.usage.prompt_tokens, result.usage.completion_tokens):
        return None
    whole = Totals.of(LedgerEntry.from_result(result))
    shares = {}
    for model, part in parts.items():
        answered = model == result.model
        shares[model] = Totals(
            requests=whole.requests if answered else 0.0,
            prompt_tokens=part.prompt_tokens,
            completion_tokens=part.completion_tokens,
            samples=part.samples,
            seconds=whole.seconds if answered else 0.0,
            usd=None if whole.usd is None else part.usd,
            unpriced=whole.unpriced if answered else 0.0,
            stopped_by=whole.stopped_by if answered else {},
        )
    return shares


_COUNTERS = (
    ("requests", "Requests answered by a strategy."),
    ("prompt_tokens", "Prompt tokens of every engine request."),
    ("completion_tokens", "Generated tokens, cancelled samples included."),
    ("samples", "Engine samples drawn, judge and refinement calls included."),
    ("seconds", "Wall-clock seconds requests ran."),
    ("usd", "Dollars at each model's price (priced requests only)."),
)


class Ledger:
    """Running sums of request costs per (model, strategy), and the entries themselves unless
    `keep_entries` is False (a server recording every request)."""

    def __init__(self, entries: Iterable[LedgerEntry] = (), *, keep_entries: bool = True) -> None:
        self._cells: dict[tuple[str, str], Totals] = {}
        self._entries: list[LedgerEntry] | None = [] if keep_entries else None
        for entry in entries:
            self.record(entry)

    def record(self, item: Result | LedgerEntry) -> LedgerEntry:
        """Add one request (a strategy's result, or its entry); returns the entry. A result
        that drew from several models (a cascade, a larger judge) is split by model: each
        model's cell gets the tokens, samples and dollars it spent, and the model that answered
        gets the request and its seconds."""
        entry = item if isinstance(item, LedgerEntry) else LedgerEntry.from_result(item)
        shares = _shares(item) if not isinstance(item, LedgerEntry) else None
        for model, totals in (shares or {entry.model: Totals.of(entry)}).items():
            key = (model, entry.strategy)
            self._cells[key] = self._cells.get(key, Totals()) + totals
        if self._entries is not None:
            self._entries.append(entry)
        return entry

    def add(self, model: str, strategy: str, totals: Totals) -> None:
        """Add sums counted elsewhere, without entries: a server tallies its many cheap
        pass-through requests in plain numbers and adds them here when it reports."""
        key = (model, strategy)
        self._cells[key] = self._cells.get(key, Totals()) + totals

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every entry in order (empty when the ledger keeps sums only)."""
        return tuple(self._entries or ())

    def cells(self) -> Mapping[tuple[str, str], Totals]:
        """Sums per (model, strategy): what `/metrics` exports."""
        return dict(self._cells)

    def total(self) -> Totals:
        return sum(self._cells.values(), Totals())

    def by_model(self) -> dict[str, Totals]:
        return self._grouped(0)

    def by_strategy(self) -> dict[str, Totals]:
        return self._grouped(1)

    def _grouped(self, part: int) -> dict[str, Totals]:
        found: dict[str, Totals] = {}
        for key, totals in sorted(self._cells.items()):
            found[key[part]] = found.get(key[part], Totals()) + totals
        return found

    def per(self, requests: float = 1000) -> Totals:
        """The workload's projected cost for `requests` questions (default: per 1000)."""
        return self.total().per(requests)

    def to_prometheus(self, prefix: str = "ponder_ledger") -> str:
        """The sums as Prometheus counters (text format), labelled by model and strategy, plus
        `{prefix}_stopped_total` by the limit that ended requests."""
        labels = ("model", "strategy")
        families: list[Counter] = []
        for field, help in _COUNTERS:
            counter = Counter(f"{prefix}_{field}_total", help, labels)
            for key, totals in sorted(self._cells.items()):
                value = getattr(totals, field)
                if value is not None:
                    counter.inc(*key, by=value)
            families.append(counter)
        stopped = Counter(
            f"{prefix}_stopped_total", "Requests a budget limit ended.", (*labels, "limit")
        )
        for key, totals in sorted(self._cells.items()):
            for limit, count in totals.stopped_by.items():
                stopped.inc(*key, limit, by=count)
        families.append(stopped)
        return exposition(families)
