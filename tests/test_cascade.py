"""The small-to-large cascade: the search on synthetic runs with a known optimum, cross-fitting,
the CLI and the report, and the live strategy's decisions on scripted engines and SmolLM2."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.bench.judging import JudgeArrays, judge_key
from ponder.bench.report import (
    CASCADE,
    CASCADE_ORACLE,
    PlannerOptions,
    build_report,
)
from ponder.bench.report_files import render_markdown
from ponder.budget import Budget, BudgetError
from ponder.cli import main
from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.types import SamplingParams
from ponder.errors import InvalidRequestError
from ponder.planning.cascade import (
    cascade_table,
    cross_fit,
    fit_cascade,
    oracle,
    play,
    reduce_to,
    search,
    shared_items,
)
from ponder.planning.outcomes import PlanError, PlanRun
from ponder.planning.policy import load_cascade_policy, save_policy
from ponder.planning.pricing import (
    DEFAULT_USD_PER_HOUR,
    HourlyPrice,
    PriceError,
    TokenPrice,
    estimate_prompt_tokens,
)
from ponder.planning.runs import load_run
from ponder.server.execution import answer_text
from ponder.strategies.registry import run_strategy
from ponder.verifiers.llm_judge import LLMJudgeVerifier
from tests.conftest import TEST_HOME
from tests.plan_runs import Kind, plan_run, replay_data, write_store
from tests.scripted_engine import ScriptedEngine

PER_TOKEN = TokenPrice(input_usd_per_mtok=0.0, output_usd_per_mtok=1.0)
SMALL_EASY = Kind([0, 0, 0, 0], 50, 9.0)
"""The small model always right and unanimous."""
SMALL_HARD = Kind([1, 2, 3, 4], 50, 9.0)
"""The small model always wrong, every answer different."""
LARGE = Kind([0, 0, 0, 0], 1000, 9.0)
"""The large model always right, at 20x the tokens."""


def pair(easy: int = 10, hard: int = 10) -> tuple[PlanRun, PlanRun]:
    small = plan_run(
        replay_data([SMALL_EASY] * easy + [SMALL_HARD] * hard, confidence=False), price=PER_TOKEN
    )
    large = plan_run(replay_data([LARGE] * (easy + hard)), model="big", price=PER_TOKEN)
    return small, large


def test_the_search_finds_the_cheapest_cascade_that_reaches_the_target() -> None:
    # Two small samples tell easy (unanimous) from hard (split) questions; one large sample is
    # always right. Only the hard half should go to the large model.
    small, large = pair()
    policy = fit_cascade(small, large, target=0.95, orderings=20)
    assert (policy.probe, policy.feature, policy.samples) == (2, "share", 1)
    assert 0.5 < policy.threshold <= 1.0 and policy.cost_unit == "usd"
    expected = policy.expected
    assert expected.accuracy == 1.0 and expected.escalated == pytest.approx(0.5)
    assert expected.cost == pytest.approx((100 + 0.5 * 1000) / 1e6)
    assert expected.large_best_n == 1 and expected.large_best_cost == pytest.approx(1000 / 1e6)
    assert expected.reached
    assert policy.small_model == "tiny" and policy.large_model == "big"


def test_an_unreachable_target_takes_the_most_accurate_cascade() -> None:
    small, large = pair()
    policy = fit_cascade(small, large, target=1.5, orderings=5)
    assert not policy.expected.reached and policy.expected.accuracy == 1.0


def test_playing_a_cascade_counts_both_models() -> None:
    small, large = pair(easy=1, hard=1)
    table = cascade_table(small, large, orderings=4)
    rows = np.ones(table.rows, dtype=bool)
    choice, reached = search(table, rows, 0.95)
    outcome = play(table, choice, rows)
    hard = table.item == 1
    assert reached and outcome.correct.all()
    assert np.all(outcome.tokens[hard] == 100 + 1000) and np.all(outcome.tokens[~hard] == 100)
    assert np.all(outcome.samples[hard] == 3) and np.all(outcome.samples[~hard] == 2)
    assert outcome.cost is not None and np.allclose(outcome.cost, outcome.tokens / 1e6)


def test_cross_fitting_the_cascade() -> None:
    small, large = pair()
    table = cascade_table(small, large, orderings=10)
    outcome, escalated = cross_fit(table, target=0.95, folds=5)
    assert outcome.per_item().min() == 1.0 and escalated == pytest.approx(0.5)
    with pytest.raises(PlanError, match="fraction of the large model"):
        cross_fit(table, target=0.0)


def test_the_oracle_router_bounds_what_any_router_can_do() -> None:
    # The small model is as sure when wrong as when right, so no router tells the two apart and
    # the searched cascade escalates everything; the oracle escalates only the wrong half.
    sure_wrong = Kind([1, 1, 1, 1], 50, 9.0)
    kinds = [SMALL_EASY] * 10 + [sure_wrong] * 10
    small = plan_run(replay_data(kinds, confidence=False), price=PER_TOKEN)
    large = plan_run(replay_data([LARGE] * 20), model="big", price=PER_TOKEN)
    table = cascade_table(small, large, orderings=5)
    bound, k, m = oracle(table, 0.95)
    assert (k, m) == (1, 1) and bound.correct.all()
    assert bound.cost is not None
    assert bound.cost.mean() == pytest.approx((50 + 0.5 * 1000) / 1e6)
    assert np.all(bound.samples[table.item >= 10] == 2) and np.all(bound.samples[:10] == 1)
    every = np.ones(table.rows, dtype=bool)
    choice, reached = search(table, every, 0.95)
    searched = play(table, choice, every)
    assert reached and searched.cost is not None
    assert searched.cost.mean() >= (50 + 1000) / 1e6 > bound.cost.mean()
    with pytest.raises(PlanError, match="fraction of the large model"):
        oracle(table, 0.0)


def judged(run: PlanRun, score: np.ndarray, judge: str = "big") -> PlanRun:
    """`run` with every sample judged by `judge`: `score` each, 100 prompt tokens, 1 generated."""
    ones = np.ones(np.shape(score))
    arrays = JudgeArrays(judge_key(judge), score, 100 * ones, ones, 0.1 * ones)
    return dataclasses.replace(run, judges={arrays.verifier: arrays})


def test_a_judges_score_routes_where_the_small_models_own_signals_cannot() -> None:
    # As in the oracle test, the small model is as sure when wrong as when right; the large
    # model's judgements tell the two apart, so the fit routes on them, escalates only the
    # wrong half, and pays for judging every probe (a prompt token at the output price here,
    # since the price has no input price).
    sure_wrong = Kind([1, 1, 1, 1], 50, 9.0)
    small = plan_run(
        replay_data([SMALL_EASY] * 10 + [sure_wrong] * 10, confidence=False), price=PER_TOKEN
    )
    large = plan_run(replay_data([LARGE] * 20), model="big", price=PER_TOKEN)
    right = np.asarray(small.data.correct, dtype=np.float64)
    policy = fit_cascade(judged(small, right), large, target=0.95, orderings=10)
    assert (policy.feature, policy.probe, policy.samples) == ("score", 1, 1)
    assert policy.expected.accuracy == 1.0 and policy.expected.escalated == pytest.approx(0.5)
    assert policy.expected.cost == pytest.approx((50 + 101 + 0.5 * 1000) / 1e6)
    table = cascade_table(judged(small, right), large, orderings=10)
    assert table.features == ("share", "confidence", "score")
    every = np.ones(table.rows, dtype=bool)
    outcome = play(table, policy, every)
    assert outcome.correct.all() and outcome.cost is not None
    assert outcome.cost.mean() == pytest.approx(policy.expected.cost)
    # The judge's score is the mean over the probe samples holding its answer.
    two = table.small.score
    assert two is not None and set(np.unique(two[2])) <= {0.0, 1.0}
    # Judgements by another model, or none, leave the feature out; a policy needing it fails.
    other = cascade_table(judged(small, right, judge="someone"), large, orderings=2)
    assert other.features == ("share", "confidence")
    with pytest.raises(PlanError, match="judged none of the small run's samples"):
        play(other, policy, np.ones(other.rows, dtype=bool))
    unpriced = cascade_table(
        judged(dataclasses.replace(small, price=None), right), large, orderings=2
    )
    assert unpriced.cost_unit == "tokens" and unpriced.small.judging is not None
    assert np.all(unpriced.small.judging[1] == 1)  # one generated token per judgement


def test_the_search_answers_by_the_weighted_vote_where_only_it_reaches_the_target() -> None:
    # The large model's right answer is drawn once in four, but surely (mean-logprob score 0.9
    # against 0.2): its plain majority is right a quarter of the time at best, its weighted vote
    # of all four always. A target of 1.5 x the majority's best (a quarter) needs the weighted
    # vote.
    unsure, _ = pair(easy=0, hard=6)
    flat = {"mean-logprob": np.full(np.shape(unsure.data.groups), 0.5)}
    small = dataclasses.replace(unsure, data=dataclasses.replace(unsure.data, scores=flat))
    data = replay_data([Kind([0, 1, 1, 2], 100, 9.0)] * 6)
    surely = np.where(np.asarray(data.groups) == 0, 0.9, 0.2)
    large = plan_run(
        dataclasses.replace(data, scores={"mean-logprob": surely}), model="big", price=PER_TOKEN
    )
    table = cascade_table(small, large, orderings=30)
    assert table.votes == ["majority", "mean-logprob"]
    every = np.ones(table.rows, dtype=bool)
    choice, reached = search(table, every, 1.5)
    best = table.best_large(every)[1]
    assert best == pytest.approx(0.25, abs=0.05)  # the reference stays the plain majority
    assert reached and choice.vote == "mean-logprob"
    assert play(table, choice, every).correct.mean() >= 1.5 * best
    # Without logprobs in both runs only the majority is searched.
    assert cascade_table(unsure, large, orderings=2).votes == ["majority"]


def test_without_prices_costs_are_tokens() -> None:
    small, large = pair()
    unpriced = plan_run(large.data, model="big")
    policy = fit_cascade(small, unpriced, orderings=5)
    assert policy.cost_unit == "tokens" and policy.expected.cost == pytest.approx(600.0)


def test_runs_must_share_items() -> None:
    assert shared_items(["a", "b", "c"], ["c", "a"]) == ([0, 2], [1, 0])
    with pytest.raises(PlanError, match="share no complete item"):
        shared_items(["a"], ["b"])
    small, large = pair(easy=2, hard=2)
    assert reduce_to(small, [3, 0]).data.items == 2
    assert reduce_to(small, [3, 0]).source.items == ["q3", "q0"]
    with pytest.raises(PlanError, match="same items in the same order"):
        cascade_table(small, reduce_to(large, [0]))


# --- CLI and report ------------------------------------------------------------------------------


def stores(
    tmp_path: Path, fingerprint: str = "fp", dataset: str = "gsm8k", items: int = 12
) -> tuple[Path, Path]:
    small = write_store(tmp_path / "small.db", [SMALL_EASY] * 6 + [SMALL_HARD] * 6, samples=4)
    large = write_store(
        tmp_path / "large.db",
        [LARGE] * items,
        samples=4,
        model="big",
        latency=8.0,
        fingerprint=fingerprint,
        dataset=dataset,
    )
    return small, large


def test_cli_fit_cascade_and_show(tmp_path: Path) -> None:
    small, large = stores(tmp_path)
    out = tmp_path / "cascade.json"
    result = CliRunner().invoke(
        main,
        ["plan", "fit-cascade", str(small), str(large), "--out", str(out), "--orderings", "10"],
    )
    assert result.exit_code == 0, result.output
    policy = load_cascade_policy(out)
    # Priced by measured seconds (local models): the large model's 8 s samples cost the most.
    assert policy.cost_unit == "usd" and policy.expected.reached
    assert policy.probe >= 2 and policy.expected.escalated == pytest.approx(0.5)
    assert policy.fitted_on.command.startswith("ponder plan fit-cascade")
    shown = CliRunner().invoke(main, ["plan", "show", str(out)])
    assert shown.exit_code == 0 and "cascade policy" in shown.output and "escalated" in shown.output
    wrong = CliRunner().invoke(main, ["bench", "report", str(small), "--policy", str(out)])
    assert wrong.exit_code == 1 and "is a cascade policy" in wrong.output


def test_cli_fit_cascade_on_runs_of_different_lengths(tmp_path: Path) -> None:
    # The large run has only the first 8 items (another --limit, so another fingerprint): the
    # fit uses the items the two runs share.
    small, large = stores(tmp_path, fingerprint="other", items=8)
    out = tmp_path / "c.json"
    result = CliRunner().invoke(
        main, ["plan", "fit-cascade", str(small), str(large), "--out", str(out), "--orderings", "5"]
    )
    assert result.exit_code == 0, result.output
    assert load_cascade_policy(out).fitted_on.runs[0].items == [f"q{i}" for i in range(8)]


def test_cli_fit_cascade_on_a_large_run_that_starts_later(tmp_path: Path) -> None:
    # The large run was sampled with --skip 4: items q4..q11 of the same dataset, which the
    # small run holds too (a held-out part sampled later).
    small, _ = stores(tmp_path)
    later = write_store(
        tmp_path / "later.db",
        [LARGE] * 8,
        samples=4,
        model="big",
        latency=8.0,
        ids=[f"q{i}" for i in range(4, 12)],
        fingerprint="later",
        skip=4,
    )
    out = tmp_path / "c.json"
    result = CliRunner().invoke(
        main, ["plan", "fit-cascade", str(small), str(later), "--out", str(out), "--orderings", "5"]
    )
    assert result.exit_code == 0, result.output
    assert load_cascade_policy(out).fitted_on.runs[0].items == [f"q{i}" for i in range(4, 12)]
    report = build_report([small, later], strategies=["majority"], orderings=2)
    assert report.items_used == 8 and report.dataset == "gsm8k from item 5"


def test_cli_fit_cascade_bad_inputs(tmp_path: Path) -> None:
    small, large = stores(tmp_path, dataset="math")
    result = CliRunner().invoke(
        main, ["plan", "fit-cascade", str(small), str(large), "--out", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 1 and "over different datasets:" in result.output
    disjoint = write_store(
        tmp_path / "disjoint.db", [LARGE] * 2, samples=4, model="big", ids=["x", "y"]
    )
    result = CliRunner().invoke(
        main, ["plan", "fit-cascade", str(small), str(disjoint), "--out", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 1 and "share no complete item" in result.output


def test_the_report_adds_the_cascade_and_checks_its_target(tmp_path: Path) -> None:
    small, large = stores(tmp_path)
    report = build_report(
        [small, large],
        strategies=["majority"],
        orderings=10,
        planner=PlannerOptions(cascade=True),
    )
    (row,) = [r for r in report.rows if r.strategy == CASCADE]
    assert row.run == "big" and row.accuracy == 1.0 and row.cost_usd is not None
    assert row.note is not None and "50% escalated" in row.note
    (bound,) = [r for r in report.rows if r.strategy == CASCADE_ORACLE]
    assert bound.oracle and bound.accuracy == 1.0 and not bound.pareto
    (check,) = [c for c in report.targets if "cascade" in c.target]
    assert check.run == "big" and "of the accuracy" in check.detail
    assert "an oracle router (a bound, not a strategy) reaches 100.0%" in check.detail
    assert "--cascade" in report.command and "--no-auto" in report.command
    assert "### cascade" in render_markdown(report)
    cli = CliRunner().invoke(
        main,
        ["bench", "report", str(small), str(large), "--cascade", "--no-auto", "--json"],
    )
    assert cli.exit_code == 0, cli.output
    assert any(r["strategy"] == CASCADE for r in json.loads(cli.output)["rows"])
    one = CliRunner().invoke(main, ["bench", "report", str(small), "--cascade"])
    assert one.exit_code == 1 and "needs exactly two runs" in one.output
    twin = write_store(tmp_path / "twin.db", [SMALL_EASY] * 12, samples=4)
    same = CliRunner().invoke(main, ["bench", "report", str(small), str(twin), "--cascade"])
    assert same.exit_code == 1 and "two different models" in same.output


def test_the_cascade_is_costed_in_machine_time(tmp_path: Path) -> None:
    """Both runs priced by the hour: each model's tokens cost its run's machine-seconds per token
    (small: 12 items x 1 s over 12 x 4 x 50 tokens; large: 12 x 8 s over 12 x 4 x 1000), in the
    report, in the cascade fit and in the target's cost ratio."""
    small, large = stores(tmp_path)
    usd_per_second = DEFAULT_USD_PER_HOUR / 3600
    per_token = {"tiny": 12 * 1.0 / (12 * 4 * 50), "big": 12 * 8.0 / (12 * 4 * 1000)}
    loaded = load_run(large)
    assert loaded.price == TokenPrice(
        input_usd_per_mtok=0.0, output_usd_per_mtok=usd_per_second * per_token["big"] * 1e6
    )
    table = cascade_table(load_run(small), loaded, orderings=3)
    assert table.cost_unit == "usd"
    assert np.allclose(table.large.cost[2], 2 * 1000 * per_token["big"] * usd_per_second)
    report = build_report(
        [small, large], strategies=["majority"], orderings=10, planner=PlannerOptions(cascade=True)
    )
    for row in (r for r in report.rows if r.strategy == "majority"):
        want = row.tokens * per_token[row.run] * usd_per_second
        assert row.cost_usd == pytest.approx(want)
    (cascade,) = [r for r in report.rows if r.strategy == CASCADE]
    assert cascade.cost_usd is not None
    best = next(r for r in report.rows if r.run == "big" and r.strategy == "majority" and r.n == 1)
    assert best.cost_usd == pytest.approx(1000 * per_token["big"] * usd_per_second)
    assert best.cost_usd is not None
    (check,) = [c for c in report.targets if "cascade" in c.target]
    assert f"at {cascade.cost_usd / best.cost_usd:.0%} of the cost" in check.detail


# --- the live strategy ---------------------------------------------------------------------------


def boxed(answer: str) -> str:
    return f"so \\boxed{{{answer}}}"


def engines(
    small_texts: list[str], large_texts: list[str]
) -> tuple[ScriptedEngine, ScriptedEngine]:
    small, large = ScriptedEngine(small_texts), ScriptedEngine(large_texts)
    large.model = "big"
    return small, large


def route(result_trace: list[dict[str, object]]) -> dict[str, object]:
    (found,) = result_trace
    return found


async def test_a_confident_small_model_answers_alone() -> None:
    small, large = engines([boxed("7")], [boxed("8")])
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 3, "samples": 2}, engines={"large": large}
    )
    assert result.answer == "7" and result.model == "scripted" and result.samples == 3
    assert not large.requests
    decision = route([s.detail for s in result.trace if s.step == "route"])
    assert decision["escalate"] is False and decision["share"] == 1.0


async def test_an_unsure_small_model_escalates_and_both_are_counted() -> None:
    small, large = engines([boxed("1"), boxed("2")], [boxed("8"), boxed("8"), boxed("9")])
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 2, "samples": 3}, engines={"large": large}
    )
    assert [r.params.n for r in small.requests] == [2] and [r.params.n for r in large.requests] == [
        3
    ]
    assert result.answer == "8" and result.votes == {"8": 2.0, "9": 1.0}
    assert result.model == "big" and result.samples == 5 and len(result.candidates) == 5
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert sorted(result.by_model) == ["big", "scripted"]  # each model's share, priced apart
    assert result.by_model["scripted"].completion_tokens == sum(
        c.completion_tokens for c in result.candidates[:2]
    )
    assert result.by_model["big"].completion_tokens == sum(
        c.completion_tokens for c in result.candidates[2:]
    )
    assert result.vote_share == pytest.approx(2 / 3)
    assert [s.step for s in result.trace] == ["probe", "route", "escalate", "vote"]


async def test_a_weighted_vote_asks_both_models_for_logprobs() -> None:
    # The large model draws "1" twice and surely (logprob -0.1 a token), "2" three times unsure
    # (-3): the majority says "2", the mean-logprob vote "1".
    sure = {0: -0.1, 1: -3.0, 2: -3.0, 3: -3.0, 4: -0.1}
    small = ScriptedEngine([boxed("5"), boxed("6")], logprobs=lambda k, i, w: -1.0)
    large = ScriptedEngine(
        [boxed(a) for a in ("1", "2", "2", "2", "1")], logprobs=lambda k, i, w: sure[k]
    )
    large.model = "big"
    params = {"probe": 2, "samples": 5, "vote": "mean-logprob"}
    result = await run_strategy("cascade", small, "Q?", params, engines={"large": large})
    assert all(r.params.logprobs for r in small.requests + large.requests)
    assert result.answer == "1" and result.model == "big"
    assert result.votes["1"] == pytest.approx(2 * np.exp(-0.1))
    (vote,) = [s.detail for s in result.trace if s.step == "vote"]
    assert vote["kind"] == "mean-logprob"


async def test_the_confidence_feature_reads_the_probes_logprobs() -> None:
    for logprob, escalates in ((-2.0, False), (-0.5, True)):

        def constant(k: int, i: int, word: str, value: float = logprob) -> float:
            return value

        small = ScriptedEngine([boxed("7")], logprobs=constant)
        large = ScriptedEngine([boxed("8")])
        params = {"probe": 2, "samples": 1, "feature": "confidence", "threshold": 1.0}
        result = await run_strategy("cascade", small, "Q?", params, engines={"large": large})
        decision = route([s.detail for s in result.trace if s.step == "route"])
        assert decision["confidence"] == pytest.approx(-logprob)
        assert decision["escalate"] is escalates and bool(large.requests) is escalates
        assert small.requests[0].params.top_logprobs == 20


async def test_a_judge_of_the_probes_answer_decides_the_escalation() -> None:
    # The larger model judges the samples that hold the probe's answer ("7", twice of three);
    # a Yes keeps the small answer, a No escalates. The judge's calls are counted.
    for verdict, escalates in (("Yes", False), ("No", True)):
        small, large = engines([boxed("7"), boxed("7"), boxed("5")], [boxed("8")])
        judge = ScriptedEngine([verdict])
        judge.model = "judge"
        params = {"probe": 3, "samples": 1, "feature": "score", "threshold": 0.5}
        result = await run_strategy(
            "cascade",
            small,
            "Q?",
            params,
            engines={"large": large},
            verifiers={"llm-judge": LLMJudgeVerifier(engine=judge)},
        )
        assert len(judge.requests) == 2  # the two samples holding "7", not the "5"
        decision = route([s.detail for s in result.trace if s.step == "route"])
        assert decision["score"] == (1.0 if verdict == "Yes" else 0.0)
        assert decision["escalate"] is escalates and bool(large.requests) is escalates
        assert result.answer == ("8" if escalates else "7")
        drawn = sum(c.completion_tokens for c in result.candidates)
        assert result.usage.completion_tokens > drawn  # the judge's tokens count too
    with pytest.raises(InvalidRequestError, match="unknown verifier 'no-such'"):
        await run_strategy(
            "cascade",
            ScriptedEngine(["x"]),
            "Q?",
            {"feature": "score", "verifier": "no-such"},
            engines={"large": ScriptedEngine(["y"])},
        )


async def test_the_budget_can_stop_the_escalation() -> None:
    small, large = engines([boxed("1"), boxed("2")], [boxed("8")])
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 2}, engines={"large": large}, budget=Budget(max_samples=2)
    )
    assert not large.requests and result.answer == "1" and result.stopped_by == "max_samples"


async def test_a_policy_file_sets_the_rule(tmp_path: Path) -> None:
    small_run, large_run = pair()
    path = tmp_path / "cascade.json"
    save_policy(fit_cascade(small_run, large_run, orderings=5), path)  # probe 2, share, m = 1
    small, large = engines([boxed("1"), boxed("2")], [boxed("8")])
    result = await run_strategy(
        "cascade", small, "Q?", {"policy": str(path)}, engines={"large": large}
    )
    assert [r.params.n for r in small.requests] == [2] and [r.params.n for r in large.requests] == [
        1
    ]
    assert result.answer == "8"
    assert any("fitted with 'tiny' as the small model" in w for w in result.warnings)


async def test_a_policy_fitted_on_a_judge_routes_on_that_judges_score(tmp_path: Path) -> None:
    sure_wrong = Kind([1, 1, 1, 1], 50, 9.0)
    small_run = plan_run(
        replay_data([SMALL_EASY] * 10 + [sure_wrong] * 10, confidence=False), price=PER_TOKEN
    )
    large_run = plan_run(replay_data([LARGE] * 20), model="big", price=PER_TOKEN)
    right = np.asarray(small_run.data.correct, dtype=np.float64)
    path = tmp_path / "judged.json"
    save_policy(fit_cascade(judged(small_run, right), large_run, orderings=5), path)
    assert load_cascade_policy(path).feature == "score"
    for verdict, escalated in (("No", True), ("Yes", False)):
        small, large = engines([boxed("1")], [boxed("8")])
        judge = ScriptedEngine([verdict])
        judge.model = "big"
        result = await run_strategy(
            "cascade",
            small,
            "Q?",
            {"policy": str(path)},
            engines={"large": large},
            verifiers={"llm-judge": LLMJudgeVerifier(engine=judge)},
        )
        assert bool(large.requests) is escalated and len(judge.requests) == 1
        assert result.answer == ("8" if escalated else "1")
        assert not any("judges here" in w for w in result.warnings)
    # Judged by the small model itself (no --judge-model), it warns.
    small, large = engines([boxed("1"), "Yes"], [boxed("8")])
    result = await run_strategy(
        "cascade", small, "Q?", {"policy": str(path)}, engines={"large": large}
    )
    assert any("fitted on 'big''s judgements; 'scripted' judges here" in w for w in result.warnings)


async def test_bad_set_ups_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="needs a second engine 'large'"):
        await run_strategy("cascade", ScriptedEngine(["x"]), "Q?")
    with pytest.raises(InvalidRequestError, match="give a policy file or probe, not both"):
        await run_strategy("cascade", ScriptedEngine(["x"]), "Q?", {"policy": "p.json", "probe": 2})
    auto_policy = tmp_path / "auto.json"
    auto_policy.write_text(
        (Path(__file__).parent.parent / "src/ponder/planning/default_policy.json").read_text()
    )
    with pytest.raises(InvalidRequestError, match="is an auto policy"):
        await run_strategy(
            "cascade",
            ScriptedEngine(["x"]),
            "Q?",
            {"policy": str(auto_policy)},
            engines={"large": ScriptedEngine(["y"])},
        )


SMALL_PRICE = TokenPrice(input_usd_per_mtok=1e3, output_usd_per_mtok=1e4)  # $0.001 in, $0.01 out
LARGE_PRICE = TokenPrice(input_usd_per_mtok=1e4, output_usd_per_mtok=1e5)  # $0.01 in, $0.1 out
PRICES = {"scripted": SMALL_PRICE, "big": LARGE_PRICE}


async def test_each_model_is_priced_at_its_own_price() -> None:
    small, large = engines([boxed("1"), boxed("2")], [boxed("8")])  # 2 tokens a sample
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 2, "samples": 3}, engines={"large": large}, prices=PRICES
    )
    assert len(large.requests) == 1 and result.usage.prompt_tokens == 10 + 10
    small_part = 10 * 0.001 + 2 * 2 * 0.01
    large_part = 10 * 0.01 + 3 * 2 * 0.1
    assert result.cost_usd == pytest.approx(small_part + large_part)
    # Unescalated, only the small model's price counts.
    sure, unused = engines([boxed("7")], [boxed("8")])
    alone = await run_strategy(
        "cascade", sure, "Q?", {"probe": 2}, engines={"large": unused}, prices=PRICES
    )
    assert not unused.requests and alone.cost_usd == pytest.approx(small_part)


async def test_an_hourly_large_model_is_charged_the_seconds_it_ran() -> None:
    small, large = engines([boxed("1"), boxed("2")], [" ".join(["8"] * 20)])
    large.step_s = 0.005
    result = await run_strategy(
        "cascade",
        small,
        "Q?",
        {"probe": 2, "samples": 2},
        engines={"large": large},
        prices={
            "scripted": TokenPrice(input_usd_per_mtok=0, output_usd_per_mtok=0),
            "big": HourlyPrice(usd_per_hour=3600),  # $1 a second
        },
    )
    assert result.answer == "8" and result.cost_usd is not None
    # the large model's requests ran for part of the run, never longer than the whole run
    assert 0 < result.cost_usd <= result.latency_s


async def test_a_dollar_budget_caps_the_large_request_at_the_large_price() -> None:
    small, large = engines([boxed("1"), boxed("2")], [" ".join(["8"] * 50)])
    cap = 0.35
    result = await run_strategy(
        "cascade",
        small,
        "Q?",
        {"probe": 2, "samples": 3},
        engines={"large": large},
        prices=PRICES,
        budget=Budget(max_usd=cap),
    )
    probe_cost = 10 * 0.001 + 4 * 0.01
    prompt, _ = estimate_prompt_tokens(large, large.requests[0])
    # the dollars left after the probe buy this many tokens at the large model's price
    assert large.requests[0].params.max_tokens == int((cap - probe_cost - prompt * 0.01) / 0.1)
    assert result.stopped_by == "max_usd"
    assert result.cost_usd is not None and result.cost_usd >= cap


async def test_a_dollar_budget_needs_a_price_for_every_engine() -> None:
    small, large = engines([boxed("1"), boxed("2")], [boxed("8")])
    with pytest.raises(BudgetError, match="max_usd needs a price for model 'big' \\(the 'large'"):
        await run_strategy(
            "cascade",
            small,
            "Q?",
            engines={"large": large},
            price=SMALL_PRICE,
            budget=Budget(max_usd=1),
        )
    with pytest.raises(PriceError, match="no entry for model 'big'"):
        await run_strategy(
            "cascade", small, "Q?", engines={"large": large}, prices={"scripted": SMALL_PRICE}
        )
    assert not small.requests and not large.requests  # refused before anything was spent
    # Without a dollar budget an unpriced large model leaves the cost unknown, and says so.
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 2}, engines={"large": large}, price=SMALL_PRICE
    )
    assert large.requests and result.cost_usd is None
    assert any("model 'big' ('large' engine) has no price" in w for w in result.warnings)


async def test_an_escalated_answer_is_told_in_the_large_models_words() -> None:
    # The small model's first sample already says 8; the reply must be the large model's.
    small, large = engines([boxed("8"), boxed("2")], ["large: \\boxed{8}", "large: \\boxed{9}"])
    result = await run_strategy(
        "cascade", small, "Q?", {"probe": 2, "samples": 3}, engines={"large": large}
    )
    assert result.answer == "8" and result.voters == [2, 3, 4]
    assert answer_text(result) == "large: \\boxed{8}"
    sure, spare = engines([boxed("7")], [boxed("8")])
    alone = await run_strategy("cascade", sure, "Q?", {"probe": 2}, engines={"large": spare})
    assert alone.voters is None and answer_text(alone) == boxed("7")


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=4)
    yield engine
    engine.close()


@pytest.mark.model
async def test_cascade_on_the_model(engine: EmbeddedEngine) -> None:
    # SmolLM2 on both sides; a threshold above any vote share always escalates.
    result = await run_strategy(
        "cascade",
        engine,
        "What is 2 + 3?",
        {"probe": 2, "samples": 2, "threshold": 1.5},
        engines={"large": engine},
        sampling=SamplingParams(max_tokens=24, temperature=0.8, seed=3),
    )
    assert result.samples == 4 and len(result.candidates) == 4
    assert [s.step for s in result.trace] == ["probe", "route", "escalate", "vote"]
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.usage.completion_tokens == sum(s.tokens for s in result.trace)
    # one model on both sides: its machine is charged once, for the run's wall time
    assert result.cost_usd == pytest.approx(result.latency_s * DEFAULT_USD_PER_HOUR / 3600)


@pytest.mark.model
def test_ask_cascade_with_an_escalation_model(
    monkeypatch: pytest.MonkeyPatch, smollm2_path: Path
) -> None:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    args = ["ask", "What is 2+3?", "-m", "smollm2-135m", "-s", "cascade", "--max-tokens", "16"]
    rule = ["-p", "probe=2", "-p", "samples=1", "-p", "threshold=1.5", "--seed", "2", "--json"]
    result = CliRunner().invoke(main, [*args, *rule, "--escalate-model", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["samples"] == 3 and [s["step"] for s in out["trace"]][-2:] == ["escalate", "vote"]
    missing = CliRunner().invoke(main, [*args, *rule])
    assert missing.exit_code == 1 and "--escalate-model" in missing.output
