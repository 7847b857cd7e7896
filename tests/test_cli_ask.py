"""`ponder ask` end to end: the real SmolLM2 model through the CLI, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ponder.cli import main
from tests.conftest import TEST_HOME


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, smollm2_path: Path) -> CliRunner:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    return CliRunner()


@pytest.mark.model
def test_ask_json_has_answer_votes_candidates_usage_latency(runner: CliRunner) -> None:
    args = ["ask", "What is 2+3?", "-m", "smollm2-135m", "-n", "3", "--max-tokens", "24"]
    result = runner.invoke(main, [*args, "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= {"answer", "votes", "candidates", "usage", "latency_s"}
    assert len(out["candidates"]) == 3
    assert {"text", "answer", "completion_tokens"} <= set(out["candidates"][0])
    assert out["usage"]["prompt_tokens"] > 0
    assert out["usage"]["completion_tokens"] == sum(
        c["completion_tokens"] for c in out["candidates"]
    )
    answers = [c["answer"] for c in out["candidates"] if c["answer"] is not None]
    assert sum(out["votes"].values()) == len(answers)
    if answers:
        assert out["answer"] == max(out["votes"], key=out["votes"].get)
    again = runner.invoke(main, [*args, "--seed", "1", "--json"])
    assert [c["text"] for c in json.loads(again.stdout)["candidates"]] == [
        c["text"] for c in out["candidates"]
    ]


@pytest.mark.model
def test_ask_human_report(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["ask", "What is 10 - 4?", "-m", "smollm2-135m", "-n", "2", "--max-tokens", "16"]
    )
    assert result.exit_code == 0, result.output
    assert "Answer:" in result.stdout
    assert "2 samples" in result.stdout and "tokens/s" in result.stdout
    assert "ledger: self-consistency on smollm2-135m: 2 samples" in result.stdout
    assert "priced at $0.1 / hour of measured latency" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   "], "question is empty"),
        (["ask", "Q?", "-n", "0"], "n: Input should be greater than or equal to 1"),
        (["ask", "Q?", "--temperature", "-2"], "temperature"),
        (["ask", "Q?", "-m", "no-such-model"], "no-such-model"),
        (["ask", "Q?", "-m", "/nowhere/model.gguf"], "/nowhere/model.gguf"),
        (["ask", "Q?", "--engine", "ftp://host"], "unknown engine"),
        (["ask", "Q?", "-s", "no-such-strategy"], "unknown strategy 'no-such-strategy'"),
        (["ask", "Q?", "-p", "bogus=1"], "unknown parameter 'bogus'"),
        (["ask", "Q?", "-p", "n"], "--param takes KEY=VALUE"),
        (["ask", "Q?", "-p", "n=0"], "n: Input should be greater than or equal to 1"),
        (["ask", "Q?", "--max-samples", "0"], "max_samples"),
        (["ask", "Q?", "--budget", "seconds=10x"], "unknown unit 'x' in '10x'; use ms, s, m, h"),
        (["ask", "Q?", "-b", "minutes=3"], "unknown budget limit 'minutes'; use samples"),
        (["ask", "Q?", "--budget", "usd=-1"], "max_usd: Input should be greater than 0"),
        (
            ["ask", "Q?", "--budget", "tokens=0"],
            "max_tokens: Input should be greater than or equal",
        ),
        (["ask", "Q?", "--budget", "samples"], "write KEY=VALUE pairs"),
        (["ask", "Q?", "--max-samples", "2", "-b", "samples=3"], "max_samples is given twice"),
        (["ask", "Q?", "--prices", "/nowhere/prices.json"], "No such price file"),
    ],
)
def test_bad_input_is_one_clear_line(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_server_is_a_clear_error(runner: CliRunner) -> None:
    from tests.llama_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = runner.invoke(main, ["ask", "Q?", "--engine", url, "-m", "x", "-n", "1"])
    assert result.exit_code == 1
    assert "127.0.0.1" in result.output
    assert "Traceback" not in result.output


def test_question_from_stdin(runner: CliRunner) -> None:
    result = runner.invoke(main, ["ask", "-"], input="   \n")
    assert result.exit_code == 1 and "question is empty" in result.output


def test_strategies_are_listed_with_their_parameters() -> None:
    result = CliRunner().invoke(main, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert "self-consistency" in listing
    (n,) = [p for p in listing["self-consistency"]["params"] if p["name"] == "n"]
    assert n["default"] == 8 and n["range"] == ">= 1, <= 256"
    human = CliRunner().invoke(main, ["strategies"])
    assert "self-consistency" in human.stdout and "reasoning paths" in human.stdout


@pytest.mark.model
def test_ask_with_a_sample_budget(runner: CliRunner) -> None:
    args = ["ask", "What is 1+1?", "-m", "smollm2-135m", "--max-tokens", "8", "--json"]
    result = runner.invoke(main, [*args, "-p", "n=4", "--budget", "samples=2,seconds=5m"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["candidates"]) == 2 and out["samples"] == 2
    assert out["stopped_by"] == "max_samples"
    ledger = out["ledger"]
    assert ledger["samples"] == 2 and ledger["strategy"] == "self-consistency"
    assert ledger["completion_tokens"] == out["usage"]["completion_tokens"]
    assert ledger["usd"] == out["cost_usd"] and out["cost_usd"] > 0
    assert out["price"] == "$0.1 / hour of measured latency"
    again = runner.invoke(main, [*args, "-p", "n=4", "--max-samples", "2"])  # the shorthand
    assert json.loads(again.stdout)["samples"] == 2


def _prices(tmp_path: Path, input_usd: float, output_usd: float) -> str:
    path = tmp_path / "prices.json"
    price = {"input_usd_per_mtok": input_usd, "output_usd_per_mtok": output_usd}
    path.write_text(json.dumps({"smollm2-135m": price}))
    return str(path)


@pytest.mark.model
def test_ask_with_a_dollar_budget_at_a_token_price(runner: CliRunner, tmp_path: Path) -> None:
    prices = _prices(tmp_path, 0.0, 1e6)  # a dollar a generated token, prompts free
    args = ["ask", "Tell me a long story.", "-m", "smollm2-135m", "-n", "3", "--json"]
    result = runner.invoke(main, [*args, "--prices", prices, "--budget", "usd=5"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["stopped_by"] == "max_usd"
    tokens = out["usage"]["completion_tokens"]
    # each sample may generate what $5 buys; steps decoded before the cancellation reached the
    # engine are counted too
    assert 5 <= tokens <= 15
    assert out["cost_usd"] == pytest.approx(tokens * 1.0)
    assert out["ledger"]["usd"] == pytest.approx(tokens * 1.0)
    assert out["price"] == "$0 / M input tokens, $1e+06 / M output tokens"


@pytest.mark.model
def test_an_unreachable_dollar_budget_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    prices = _prices(tmp_path, 1e6, 1e6)  # a dollar a token, prompt tokens too
    args = ["ask", "What is 2+3?", "-m", "smollm2-135m", "--prices", prices, "-b", "usd=3"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "max_usd=$3 cannot be met: the prompt alone (" in result.output
    assert "Traceback" not in result.output


def test_a_dollar_budget_needs_a_price_for_a_remote_model(runner: CliRunner) -> None:
    from tests.llama_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = runner.invoke(main, ["ask", "Q?", "--engine", url, "-m", "x", "-b", "usd=0.01"])
    assert result.exit_code == 1
    assert "max_usd needs a price for model 'x'" in result.output


@pytest.mark.model
def test_ask_best_of_n_with_a_separate_judge_model(runner: CliRunner) -> None:
    args = ["ask", "What is 3+4? Answer with a number.", "-m", "smollm2-135m", "--json"]
    args += ["-s", "best-of-n", "-p", "n=2", "-p", "verifier=llm-judge", "--max-tokens", "12"]
    result = runner.invoke(main, [*args, "--judge-model", "smollm2-135m", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["strategy"] == "best-of-n"
    judged = [c for c in out["candidates"] if "llm-judge" in c["scores"]]
    answered = [c for c in out["candidates"] if c["answer"] is not None]
    assert len(judged) == len(answered)
    judge_calls = [s for s in out["trace"] if s["step"] == "verify" and "n" in s["detail"]]
    assert len(judge_calls) == len(answered)  # one judge request per answered candidate
    assert out["samples"] == 2 + len(judge_calls)
    assert out["usage"]["completion_tokens"] == sum(s["tokens"] for s in out["trace"])
