"""The server's ledger: what its requests cost (tokens, samples, seconds, dollars) per model and
per strategy, which `/metrics` exports as ``ponder_ledger_*`` counters.

A strategy run is recorded from its `Result`, as anywhere else (`Ledger.record`). Pass-through
requests are many and each is cheap to serve (the relay path exists for that), so each is tallied
here in plain numbers, a few dict updates and no model objects, and the tallies are added to the
ledger, under the strategy `PASSTHROUGH`, whenever it is read.
"""

from __future__ import annotations

from ponder.engines.types import Usage
from ponder.planning.ledger import Ledger, Totals
from ponder.planning.pricing import Price
from ponder.strategies.result import Result

PASSTHROUGH = "passthrough"
"""The ledger's strategy label for requests that ran no strategy."""

_REQUESTS, _PROMPT, _COMPLETION, _SAMPLES, _SECONDS, _USD, _PRICED = range(7)


class Accounts:
    """One app's ledger (kept on its `ServerState`, so two apps never share it)."""

    def __init__(self) -> None:
        self._ledger = Ledger(keep_entries=False)
        self._tallies: dict[str, list[float]] = {}

    def record(self, result: Result) -> None:
        """A strategy run, as its result accounts for it."""
        self._ledger.record(result)

    def record_passthrough(
        self, model: str, usage: Usage, samples: int, seconds: float, price: Price | None
    ) -> None:
        """One pass-through request: its usage and wall time, priced at `price` (None:
        unpriced)."""
        tally = self._tallies.get(model)
        if tally is None:
            tally = self._tallies[model] = [0.0] * 7
        tally[_REQUESTS] += 1
        tally[_PROMPT] += usage.prompt_tokens
        tally[_COMPLETION] += usage.completion_tokens
        tally[_SAMPLES] += samples
        tally[_SECONDS] += seconds
        if price is not None:
            tally[_USD] += price.cost(usage.prompt_tokens, usage.completion_tokens, seconds)
            tally[_PRICED] += 1

    @property
    def ledger(self) -> Ledger:
        """The ledger, pass-through tallies included."""
        for model, tally in self._tallies.items():
            priced = tally[_PRICED]
            self._ledger.add(
                model,
                PASSTHROUGH,
                Totals(
                    requests=tally[_REQUESTS],
                    prompt_tokens=tally[_PROMPT],
                    completion_tokens=tally[_COMPLETION],
                    samples=tally[_SAMPLES],
                    seconds=tally[_SECONDS],
                    usd=tally[_USD] if priced else None,
                    unpriced=tally[_REQUESTS] - priced,
                ),
            )
        self._tallies.clear()
        return self._ledger

    def render(self) -> str:
        """The ledger's counters in Prometheus' text format."""
        return self.ledger.to_prometheus()
