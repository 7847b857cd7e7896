"""The ledger: entries from results, sums per model and per strategy, the per-1000 projection and
the Prometheus export; and the shared price helpers it relies on."""

from __future__ import annotations

import pytest

from ponder.budget import Budget
from ponder.engines.types import GenerationRequest, Message
from ponder.planning.ledger import Ledger, LedgerEntry, Totals
from ponder.planning.pricing import (
    CHARS_PER_TOKEN,
    HourlyPrice,
    TokenPrice,
    engine_price,
    estimate_prompt_tokens,
)
from ponder.strategies.registry import run_strategy
from tests.scripted_engine import ScriptedEngine

PRICE = TokenPrice(input_usd_per_mtok=1e3, output_usd_per_mtok=1e4)  # $0.001 in, $0.01 out


def entry(model: str, strategy: str, **changes: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "model": model,
        "strategy": strategy,
        "prompt_tokens": 10,
        "completion_tokens": 100,
        "samples": 4,
        "seconds": 2.0,
        "usd": 0.5,
    }
    return LedgerEntry.model_validate(fields | changes)


async def test_an_entry_is_built_from_a_result() -> None:
    engine = ScriptedEngine(["The answer is 4."], prompt_tokens=10)
    result = await run_strategy(
        "self-consistency", engine, "Q?", {"n": 3}, price=PRICE, budget=Budget(max_samples=2)
    )
    ledger = Ledger()
    made = ledger.record(result)
    assert made.model_dump(exclude={"usd"}) == {
        "model": "scripted",
        "strategy": "self-consistency",
        "prompt_tokens": 10,
        "completion_tokens": 8,
        "samples": 2,
        "seconds": result.latency_s,
        "stopped_by": "max_samples",
    }
    assert made.usd == result.cost_usd == pytest.approx(10 * 0.001 + 8 * 0.01)
    assert ledger.entries == (made,)
    assert made.describe().startswith(
        "self-consistency on scripted: 2 samples, 10 prompt + 8 completion tokens"
    )
    assert made.describe().endswith("$0.090000")


async def test_a_cascade_is_split_between_the_models_that_spent_it() -> None:
    small = ScriptedEngine(["so \\boxed{1}", "so \\boxed{2}"], prompt_tokens=10)
    large = ScriptedEngine(["so \\boxed{8}"] * 3, prompt_tokens=20)
    large.model = "big"
    cheap = TokenPrice(input_usd_per_mtok=0.0, output_usd_per_mtok=1e4)
    result = await run_strategy(
        "cascade",
        small,
        "Q?",
        {"probe": 2, "samples": 3},
        engines={"large": large},
        prices={"scripted": cheap, "big": PRICE},
    )
    assert result.model == "big" and set(result.by_model) == {"scripted", "big"}
    assert result.by_model["scripted"].samples == 2 and result.by_model["big"].samples == 3
    ledger = Ledger()
    made = ledger.record(result)
    assert made.model == "big" and made.completion_tokens == result.usage.completion_tokens
    cells = ledger.cells()
    mine, theirs = cells[("scripted", "cascade")], cells[("big", "cascade")]
    # The answering model holds the request and its time; each model its tokens and dollars.
    assert (mine.requests, theirs.requests) == (0, 1)
    assert (mine.seconds, theirs.seconds) == (0.0, result.latency_s)
    assert (mine.samples, theirs.samples) == (2, 3)
    assert mine.completion_tokens == result.by_model["scripted"].completion_tokens > 0
    assert (mine.prompt_tokens, theirs.prompt_tokens) == (10, 20)
    assert mine.usd == pytest.approx(mine.completion_tokens * 0.01)
    assert theirs.usd == pytest.approx(20 * 0.001 + theirs.completion_tokens * 0.01)
    total = ledger.total()
    assert total.requests == 1 and total.usd == pytest.approx(result.cost_usd)
    assert total.completion_tokens == result.usage.completion_tokens
    # An entry alone (no shares known) stays in one cell.
    alone = Ledger([made])
    assert list(alone.cells()) == [("big", "cascade")]


def test_sums_by_model_and_by_strategy() -> None:
    ledger = Ledger(
        [
            entry("small", "self-consistency"),
            entry("small", "best-of-n", usd=1.5, stopped_by="max_seconds"),
            entry("large", "self-consistency", samples=8, usd=None),
        ]
    )
    total = ledger.total()
    assert (total.requests, total.samples, total.completion_tokens) == (3, 16, 300)
    assert total.usd == pytest.approx(2.0) and total.unpriced == 1
    assert total.stopped_by == {"max_seconds": 1}
    by_model = ledger.by_model()
    assert set(by_model) == {"small", "large"}
    assert by_model["small"].requests == 2 and by_model["small"].usd == pytest.approx(2.0)
    assert by_model["large"].usd is None and by_model["large"].unpriced == 1
    by_strategy = ledger.by_strategy()
    assert by_strategy["self-consistency"].samples == 12
    assert by_strategy["best-of-n"].seconds == 2.0
    assert ledger.cells()[("small", "best-of-n")].stopped_by == {"max_seconds": 1}


def test_per_1000_projects_the_mean_request() -> None:
    ledger = Ledger([entry("m", "s", usd=0.25), entry("m", "s", usd=0.75, samples=8)])
    projected = ledger.per(1000)
    assert projected.requests == 1000
    assert projected.usd == pytest.approx(500.0)  # $0.50 a question
    assert projected.samples == pytest.approx(6000)
    assert projected.seconds == pytest.approx(2000)
    # dollars are projected from the priced requests only
    mixed = Ledger([entry("m", "s", usd=1.0), entry("m", "s", usd=None)]).per(10)
    assert mixed.usd == pytest.approx(10.0) and mixed.unpriced == pytest.approx(5)
    assert Ledger().per(1000) == Totals()
    assert "1000 requests" in projected.describe() and "$500.0000" in projected.describe()


def test_a_server_ledger_keeps_sums_only() -> None:
    ledger = Ledger(keep_entries=False)
    for _ in range(3):
        ledger.record(entry("m", "s"))
    assert ledger.entries == ()
    assert ledger.total().requests == 3 and ledger.total().usd == pytest.approx(1.5)


def test_prometheus_export() -> None:
    ledger = Ledger(
        [
            entry("m", "self-consistency", stopped_by="max_usd"),
            entry("m", "self-consistency"),
            entry('we"ird', "best-of-n", usd=None),
        ]
    )
    text = ledger.to_prometheus()
    lines = text.splitlines()
    assert "# TYPE ponder_ledger_requests_total counter" in lines
    assert 'ponder_ledger_requests_total{model="m",strategy="self-consistency"} 2' in lines
    assert 'ponder_ledger_samples_total{model="m",strategy="self-consistency"} 8' in lines
    assert 'ponder_ledger_usd_total{model="m",strategy="self-consistency"} 1' in lines
    assert 'ponder_ledger_requests_total{model="we\\"ird",strategy="best-of-n"} 1' in lines
    assert not any(line.startswith('ponder_ledger_usd_total{model="we') for line in lines)
    stopped = 'ponder_ledger_stopped_total{model="m",strategy="self-consistency",limit="max_usd"} 1'
    assert stopped in lines
    assert text.endswith("\n")


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        entry("m", "s", usd=-1.0)


# --- prices ---------------------------------------------------------------------------------------
def test_price_arithmetic() -> None:
    assert PRICE.output_tokens_for(0.05) == pytest.approx(5)
    assert PRICE.seconds_for(1.0) is None
    assert TokenPrice(input_usd_per_mtok=1, output_usd_per_mtok=0).output_tokens_for(1) is None
    hourly = HourlyPrice(usd_per_hour=36)
    assert hourly.seconds_for(0.01) == pytest.approx(1.0)
    assert hourly.output_tokens_for(1.0) is None
    assert HourlyPrice(usd_per_hour=0).seconds_for(1.0) is None
    assert engine_price(ScriptedEngine(["x"])) is None  # a non-embedded engine has no default


def test_prompt_estimate_without_a_tokenizer() -> None:
    text = "x" * 41
    request = GenerationRequest(messages=(Message(role="user", content=text),))
    assert estimate_prompt_tokens(ScriptedEngine(["x"]), request) == (
        -(-41 // CHARS_PER_TOKEN),
        False,
    )
