"""`ponder serve`: flags become the app's config; bad flags fail before anything starts."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from ponder.cli import main
from ponder.server.service import ServerState


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key-env", "PONDER_TEST_UNSET_VAR"], "holds no key"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--max-running", "0"], "max_running"),
    ],
)
def test_bad_flags_fail_cleanly(started: dict[str, Any], args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "state" not in started
