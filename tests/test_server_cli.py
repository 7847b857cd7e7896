"""`ponder serve`: flags become the app's config (prices, the escalation model); bad flags fail
before anything starts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ponder.cli import main
from ponder.engines.base import Engine
from ponder.planning.pricing import HourlyPrice
from ponder.server.service import ServerState
from tests.scripted_engine import ScriptedEngine


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for uvicorn.run: records what the command would have served."""
    seen: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:
        seen["state"] = app.state.ponder
        seen.update(options)

    monkeypatch.setattr("uvicorn.run", run)
    return seen


def test_flags_become_the_config(started: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_KEYS", "k-one, k-two")
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--port",
            "9123",
            "--engine",
            "http://127.0.0.1:1/v1",
            "--api-key-env",
            "PONDER_TEST_KEYS",
            "--strategy",
            "self-consistency",
            "--max-running",
            "3",
            "--deadline",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    state: ServerState = started["state"]
    config = state.config
    assert [k.get_secret_value() for k in config.api_keys] == ["k-one", "k-two"]
    assert config.default_strategy == "self-consistency"
    assert (config.max_running, config.default_deadline_s) == (3, 30)
    assert (started["host"], started["port"]) == ("127.0.0.1", 9123)
    assert "k-one" not in result.output and "PONDER_TEST_KEYS" in result.output


def test_prices_and_the_escalation_model_are_opened_at_startup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened: list[tuple[str, str | None]] = []

    def open_engine(spec: str, model: str | None, **_: Any) -> Engine:
        opened.append((spec, model))
        engine = ScriptedEngine(["\\boxed{4}"])
        engine.model = model or "default"
        return engine

    seen: dict[str, Any] = {}

    def run(app: Any, **_: Any) -> None:
        async def start() -> None:
            async with app.router.lifespan_context(app):
                state: ServerState = app.state.ponder
                seen["roles"] = {role: e.model for role, e in state.roles.items()}
                seen["prices"] = dict(state.prices)

        asyncio.run(start())

    monkeypatch.setattr("ponder.engines.factory.open_engine", open_engine)
    monkeypatch.setattr("uvicorn.run", run)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"small": {"usd_per_hour": 0.5}, "big": {"usd_per_hour": 2.0}}))
    args = ["serve", "-m", "small", "--prices", str(prices), "--max-deadline", "60"]
    larger = ["--escalate-model", "big", "--escalate-engine", "http://big.test/v1"]
    result = CliRunner().invoke(main, [*args, *larger])
    assert result.exit_code == 0, result.output
    assert opened == [("local", "small"), ("http://big.test/v1", "big")]
    assert seen["roles"] == {"large": "big"}
    assert seen["prices"] == {
        "small": HourlyPrice(usd_per_hour=0.5),
        "big": HourlyPrice(usd_per_hour=2.0),  # the escalation model is priced too
    }
    prices.write_text(json.dumps({"small": {"usd_per_hour": 0.5}}))
    missing = CliRunner().invoke(main, [*args, *larger])
    assert missing.exit_code == 1 and "no entry for model 'big'" in missing.output

    opened.clear()
    assert (
        CliRunner().invoke(main, ["serve", "-m", "small", "--escalate-model", "big"]).exit_code == 0
    )
    assert opened == [("local", "small"), ("local", "big")]  # by default where the model runs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key-env", "PONDER_TEST_UNSET_VAR"], "holds no key"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--max-running", "0"], "max_running"),
        (["--escalate-engine", "http://big.test/v1"], "--escalate-engine needs --escalate-model"),
        (["--prices", "no-such-prices.json"], "No such price file: no-such-prices.json"),
        (["--deadline", "100", "--max-deadline", "10"], "the default deadline (100s) exceeds"),
        (["--strategy", "cascade"], "--strategy cascade needs --escalate-model M"),
        (["--policy", "no-such-policy.json"], "No such policy file: no-such-policy.json"),
        (["--cascade-policy", "cascade.json"], "--cascade-policy needs --escalate-model M"),
    ],
)
def test_bad_flags_fail_cleanly(started: dict[str, Any], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "state" not in started
