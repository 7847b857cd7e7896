"""What a stored run's items cost on a machine priced by the hour: the machine time their tokens
took, not their latency.

A run decodes many sequences together (every sample of the items in flight shares the engine's
batch), so an item's latency is not the machine time it used: 16 samples decoded together take
little longer than one, yet they keep 16 times the work on the machine. An item's cost is its
share of the machine: its generated tokens x the run's machine seconds per generated token,
measured from the run's samples (`measure`). Token prices are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ponder.planning.pricing import HourlyPrice, Price, TokenPrice

if TYPE_CHECKING:
    from ponder.bench.store import RunStore


@dataclass(frozen=True)
class MachineTime:
    """A run's active sampling time (some sample in flight), the completion tokens generated in
    it, and the idle time left out (the run stopped and resumed, or between requests)."""

    active_s: float
    tokens: int
    idle_s: float = 0.0
    pauses: int = 0

    @property
    def seconds_per_token(self) -> float | None:
        """Machine seconds per generated token (None: nothing measured)."""
        if self.tokens <= 0 or self.active_s <= 0:
            return None
        return self.active_s / self.tokens

    def describe(self, price: HourlyPrice) -> str:
        """`price` as the report's Cost line states it: with the rate that turns it per token."""
        per_token = self.seconds_per_token
        if per_token is None:
            return f"${price.usd_per_hour:g} / hour of machine time; no sampling time measured"
        idle = (
            f" ({self.idle_s / 3600:.2g} h in {self.pauses} "
            f"{'pause' if self.pauses == 1 else 'pauses'} with no sample in flight, such as the "
            "run stopped and resumed, left out)"
            if self.pauses
            else ""
        )
        return (
            f"${price.usd_per_hour:g} / hour of machine time; the run generated "
            f"{1 / per_token:,.3g} tokens/s over {self.active_s / 3600:.3g} h of active "
            f"sampling{idle}, so a generated token costs {per_token:.3g} machine-seconds"
        )


def measure(
    finished_at: npt.ArrayLike, latency_s: npt.ArrayLike, tokens: npt.ArrayLike
) -> MachineTime:
    """The active time and tokens of samples that finished at `finished_at` (epoch seconds),
    each `latency_s` after its request started, with `tokens` completion tokens each. The machine
    is busy while any sample is in flight: active time is the length of the union of the samples'
    intervals, so a run stopped and resumed in another session is charged its sampling only, with
    no threshold to guess (a long sample is busy time however long it took)."""
    end = np.asarray(finished_at, dtype=np.float64)
    start = end - np.asarray(latency_s, dtype=np.float64)
    counts = np.asarray(tokens, dtype=np.int64)
    if end.size == 0:
        return MachineTime(0.0, 0)
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reached = np.maximum.accumulate(end)
    gaps = start[1:] - reached[:-1]
    idle = gaps[gaps > 0]
    span = float(reached[-1] - start[0])
    return MachineTime(
        active_s=span - float(idle.sum()),
        tokens=int(counts.sum()),
        idle_s=float(idle.sum()),
        pauses=int(idle.size),
    )


@dataclass(frozen=True)
class RunPrice:
    """The price a report applies to a run's items, in words, and the run's machine time where
    the price is hourly. `price` None: unpriced (`note` says why when a price was given)."""

    price: Price | None
    description: str | None
    machine: MachineTime | None = None
    note: str | None = None


def run_price(store: RunStore, price: Price | None) -> RunPrice:
    """`price` as it applies to the items of the run in `store`: a token price as it is; an hourly
    price as the equal token price of the machine time a generated token takes in this run, so
    every cost (linear in prompt tokens, generated tokens and seconds) stays one `Price.cost`."""
    if not isinstance(price, HourlyPrice):
        return RunPrice(price, None if price is None else price.describe())
    machine = store.machine_time()
    description = machine.describe(price)
    per_token = machine.seconds_per_token
    if per_token is None:
        note = f"{store.path.name}: unpriced: {description} (no sample with tokens stored)"
        return RunPrice(None, description, machine, note)
    usd_per_mtok = price.usd_per_hour / 3600.0 * per_token * 1e6
    equal = TokenPrice(input_usd_per_mtok=0.0, output_usd_per_mtok=usd_per_mtok)
    return RunPrice(equal, description, machine)
