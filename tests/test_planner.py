"""The `auto` planner: fitting on synthetic runs with a known optimum, the greedy allocation,
offline replay against hand-computed expectations, cross-fitting, policy files, the CLI, the
report's rows and targets, and the live strategy (scripted engine and SmolLM2)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.bench.replay import ReplayData, majority_paths, replay
from ponder.bench.report import AUTO, AUTO_POLICY, PlannerOptions, build_report
from ponder.bench.report_files import render_markdown
from ponder.budget import Budget
from ponder.cli import main
from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.types import SamplingParams
from ponder.errors import InvalidRequestError
from ponder.planning.fit import cross_fit, evaluate, fit_policy, probe_runs
from ponder.planning.outcomes import Outcome, PlanError, folds_of, probed
from ponder.planning.policy import (
    AutoPolicy,
    Objective,
    PlanSettings,
    PolicyError,
    default_actions,
    default_rereads,
    load_auto_policy,
    load_policy,
    save_policy,
)
from ponder.strategies.registry import run_strategy
from tests.plan_runs import SAMPLES, hand_policy, mix, plan_run, replay_data, write_store
from tests.scripted_engine import ScriptedEngine

ORDERINGS = 60


def settings(**changes: object) -> PlanSettings:
    base = PlanSettings(
        probe=4,
        feature="length",
        splits=2,
        actions=default_actions(4, SAMPLES),
        objective=Objective(match=1.0),
    )
    return base.model_copy(update=changes)


# --- fitting -------------------------------------------------------------------------------------


def test_the_fit_finds_the_known_optimum() -> None:
    # Easy items are settled by the probe, hard ones need all 16 samples, hopeless ones (long,
    # all answers different) gain nothing: stop there too.
    run = plan_run(replay_data(mix()))
    policy = fit_policy([run], settings(), orderings=ORDERINGS, seed=1)
    assert policy.samples_for(4, 100.0) == 4  # unanimous probe: stop
    assert policy.samples_for(4, 200.0) == 4
    assert policy.samples_for(1, 500.0) == 4  # hopeless: do not burn the budget
    for votes in (1, 2, 3):  # hard: as many as it takes to be always right
        hard = policy.bins[int(policy.bin_of([votes], [200.0])[0])]
        assert hard.samples >= 12 and hard.accuracy == 1.0 > hard.accuracy_at_probe
    expected = policy.expected
    assert expected.best_n == SAMPLES and expected.best_accuracy == pytest.approx(0.5)
    assert expected.reached and expected.accuracy == pytest.approx(0.5)
    assert expected.tokens < 0.4 * expected.best_tokens
    assert sum(b.weight for b in policy.bins) == pytest.approx(1.0)


def test_a_token_budget_objective_spends_no_more() -> None:
    run = plan_run(replay_data(mix()))
    at_probe = fit_policy([run], settings(objective=Objective(tokens_of_n=4)), orderings=20)
    assert {b.samples for b in at_probe.bins} == {4}
    assert at_probe.expected.tokens == pytest.approx(
        (10 * 400 + 10 * 800 + 20 * 2000) / 40, rel=1e-9
    )
    budget = 2500.0
    capped = fit_policy([run], settings(objective=Objective(tokens=budget)), orderings=20)
    assert capped.expected.tokens <= budget
    assert capped.expected.accuracy > at_probe.expected.accuracy


def test_more_budget_never_buys_less_accuracy() -> None:
    # The allocation sweeps the price of a token: every budget gets the most accurate plan
    # within it, so accuracy never falls as the budget grows, and no plan overspends.
    run = plan_run(replay_data(mix()))
    accuracy = []
    for budget in (1300.0, 2000.0, 2500.0, 4000.0, 8000.0):  # the probe alone: 1300
        fitted = fit_policy([run], settings(objective=Objective(tokens=budget)), orderings=20)
        assert fitted.expected.reached and fitted.expected.tokens <= budget
        accuracy.append(fitted.expected.accuracy)
    assert accuracy == sorted(accuracy) and accuracy[-1] == pytest.approx(0.5)
    # A budget below the probe's own tokens cannot be met: every question stops at the probe.
    starved = fit_policy([run], settings(objective=Objective(tokens=10.0)), orderings=20)
    assert not starved.expected.reached and {b.samples for b in starved.bins} == {4}


def test_a_reread_spends_less_where_the_probe_cannot_tell_hard_from_hopeless() -> None:
    # By votes alone a 4-sample probe where all answers differ may be a hard item (4 answer
    # groups, the right one 7 of 16) or a hopeless one (16 different answers); at 8 samples a
    # hard item always repeats an answer, a hopeless one never does. Without a reread the probe
    # must send both to 16 samples; with one at 8 the hopeless stop there.
    run = plan_run(replay_data(mix(easy=10, hard=10, hopeless=10)))
    votes_only = settings(feature=None)
    single = fit_policy([run], votes_only, orderings=ORDERINGS, seed=1)
    staged = fit_policy(
        [run], votes_only.model_copy(update={"rereads": [8]}), orderings=ORDERINGS, seed=1
    )
    for policy in (single, staged):
        assert policy.expected.reached
        assert policy.expected.accuracy == pytest.approx(policy.expected.best_accuracy)
    assert single.samples_for(1, 0.0) == SAMPLES
    assert staged.samples_for(1, 0.0) == 8  # go on to the reread
    assert staged.samples_for(1, 0.0, read=1) == 8  # still all different: hopeless, stop
    assert staged.samples_for(2, 0.0, read=1) == SAMPLES  # a repeat: hard, draw them all
    assert staged.samples_for(8, 0.0, read=1) == 8  # unanimous: settled
    # Hopeless items cost 8 samples of 500 tokens instead of 16 (and a hard item whose first 8
    # samples already settle it stops there too).
    saved = single.expected.tokens - staged.expected.tokens
    assert saved >= 10 * 8 * 500 / 30 - 1e-6
    reached = [b.weight for b in staged.rereads[0].bins]
    assert 0 < sum(reached) < 1  # only the questions the probe sent on are read again
    # Replaying the fitted policy gives what the fit expected of it.
    table = probe_runs([run], staged.settings, orderings=ORDERINGS, seed=1)
    score = evaluate(staged, table).score()
    assert score.accuracy == pytest.approx(staged.expected.accuracy)
    assert score.tokens == pytest.approx(staged.expected.tokens)


# --- replay ------------------------------------------------------------------------------------


def one_item(groups: list[int], tokens: list[int], latency: list[float]) -> ReplayData:
    width = max(groups) + 1
    right = np.zeros((1, width), dtype=bool)
    right[0, 0] = True
    return ReplayData(
        groups=np.array([groups], dtype=np.int32),
        correct=np.array([groups]) == 0,
        tokens=np.array([tokens], dtype=np.int32),
        latency=np.array([latency], dtype=np.float32),
        confidence=np.full((1, len(groups)), np.nan, dtype=np.float32),
        group_confidence=None,
        scores={},
        group_correct=right,
    )


def test_probe_then_the_rest_costs_as_replay_accounts_it() -> None:
    data = one_item([0, 1, 0, 2], [10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0])
    table = probed(majority_paths(data, orderings=6000, seed=3), 2, [2, 4])
    tokens, latency = table.tokens.mean(axis=1), table.latency.mean(axis=1)
    # Two of the four: 2 x the mean tokens; the slowest of a random pair of latencies 1..4.
    assert tokens[0] == pytest.approx(50.0, rel=0.02)
    assert latency[0] == pytest.approx((2 + 3 + 4 + 3 + 4 + 4) / 6, rel=0.02)
    # All four: every token, and the probe's slowest plus the rest's slowest (40/6 on average).
    assert np.all(table.tokens[1] == 100)
    assert latency[1] == pytest.approx(40 / 6, rel=0.02)
    assert np.all(table.correct[1])  # the majority of all four is right
    assert np.isnan(table.confidence).all() and set(np.unique(table.votes)) <= {1, 2}


def test_weighted_paths_vote_by_score_beside_the_majority() -> None:
    # Right answer 0 alone but sure (0.9); wrong answer 1 twice, unsure (0.2 each): the majority
    # of all four is wrong, the score-weighted vote right. The probe features stay counts.
    data = one_item([0, 1, 1, 2], [10, 10, 10, 10], [1.0] * 4)
    data = dataclasses.replace(data, scores={"mean-logprob": np.array([[0.9, 0.2, 0.2, 0.1]])})
    paths = majority_paths(data, orderings=500, seed=2, weight="mean-logprob")
    assert paths.weighted is not None
    assert not paths.correct[3].any() and paths.weighted[3].all()
    assert np.array_equal(paths.weighted[0], paths.correct[0])  # one sample: the same vote
    table = probed(paths, 2, [2, 4])
    assert table.correct[1].all()  # the actions answer by the weighted vote ...
    assert not table.reference[4][0].any()  # ... the reference stays plain self-consistency
    assert set(np.unique(table.votes)) <= {1, 2}
    with pytest.raises(InvalidRequestError, match="no 'verifier' scores"):
        majority_paths(data, orderings=5, weight="verifier")


def test_leader_sums_add_up_a_value_over_the_samples_holding_the_majoritys_answer() -> None:
    data = replay_data(mix())
    shape = np.shape(data.correct)
    right = np.asarray(data.correct, dtype=np.float64)
    paths = majority_paths(
        data, orderings=30, seed=5, leader_sums={"one": np.ones(shape), "right": right}
    )
    # Summing 1 counts the leader's samples; summing "is right" counts them where it is right.
    assert np.array_equal(paths.leader_sums["one"], paths.votes.astype(np.float64))
    assert np.array_equal(paths.leader_sums["right"], paths.votes * paths.correct)
    assert paths.leader_sums["one"].shape == (paths.depth, paths.rows)
    with pytest.raises(InvalidRequestError, match="leader sum 'bad' must have shape"):
        majority_paths(data, orderings=2, leader_sums={"bad": np.ones((1, 1))})


def test_weighted_paths_agree_with_the_reports_weighted_vote() -> None:
    data = replay_data(mix())
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 1.0, size=np.shape(data.correct)).astype(np.float32)
    data = dataclasses.replace(data, scores={"mean-logprob": scores})
    paths = majority_paths(data, orderings=40, seed=4, weight="mean-logprob")
    assert paths.weighted is not None
    rows = replay(data, orderings=40, ns=[2, 8], strategies=["weighted-vote:mean-logprob"], seed=4)
    for row in rows:
        assert row.n is not None
        assert row.accuracy == pytest.approx(float(paths.weighted[row.n - 1].mean()))


def test_a_policy_replayed_against_hand_computed_expectations() -> None:
    # Stop when the 2-sample probe agrees (both right answers: 1 ordering in 6), else draw all 4.
    data = one_item([0, 0, 1, 2], [10, 10, 40, 40], [1.0] * 4)
    policy = hand_policy([(1, None, None, 4), (2, None, None, 2)], probe=2, actions=[2, 4])
    table = probed(majority_paths(data, orderings=6000, seed=5), 2, [2, 4])
    outcome = evaluate(policy, table)
    assert outcome.correct.all()
    assert outcome.samples.mean() == pytest.approx(2 / 6 + 4 * 5 / 6, rel=0.02)
    assert outcome.tokens.mean() == pytest.approx(20 / 6 + 100 * 5 / 6, rel=0.02)
    score = outcome.score()
    assert score.accuracy == 1.0 and score.items == 1


def test_cross_fitting_plays_each_fold_with_a_policy_fitted_on_the_others() -> None:
    kinds = mix(easy=5, hard=5, hopeless=10)
    table = probe_runs([plan_run(replay_data(kinds))], settings(), orderings=20, seed=0)
    outcome = cross_fit(table, settings(), folds=5, seed=0)
    assert outcome.correct.size == table.rows
    assert outcome.per_item()[:5].min() == 1.0  # easy items: always right
    assert outcome.per_item()[10:].max() == 0.0  # hopeless: never
    folds = folds_of(20, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 4, 4, 4]
    with pytest.raises(PlanError, match="at least 2 items"):
        folds_of(1, 5, seed=0)


def test_differences_from_a_reference_are_paired_over_items() -> None:
    # 4 items x 2 orderings: the plan is right on every row; the reference right on one
    # ordering of each item, so every item differs by exactly +0.5 and no resample can say
    # otherwise (an unpaired interval would be 0.5 wide).
    item = np.repeat(np.arange(4), 2)
    ones = np.ones(8)
    outcome = Outcome(item, 4, np.ones(8, dtype=bool), ones, ones, ones)
    reference = np.tile([True, False], 4)
    gaps = outcome.versus({8: reference, 16: np.ones(8, dtype=bool)})
    assert gaps[8] == pytest.approx((0.5, 0.5, 0.5))
    assert gaps[16] == pytest.approx((0.0, 0.0, 0.0))
    # Items that disagree the other way widen the interval around the mean difference.
    mixed = outcome.versus({4: np.array([True, True, True, True, False, False, False, False])})
    difference, low, high = mixed[4]
    assert difference == pytest.approx(0.5) and low < difference < high
    assert outcome.versus({}) == {}


def test_policy_lookup_takes_the_nearest_level_and_the_heaviest_bin_without_a_value() -> None:
    policy = hand_policy(
        [(1, None, 5.0, 8), (1, 5.0, None, 4), (3, None, None, 6)],
        probe=4,
        actions=[4, 6, 8],
        feature="confidence",
    )
    policy = policy.model_copy(
        update={
            "bins": [
                b.model_copy(update={"weight": w})
                for b, w in zip(policy.bins, (0.2, 0.5, 0.3), strict=True)
            ]
        }
    )
    assert policy.samples_for(1, 4.9) == 8 and policy.samples_for(1, 5.0) == 4
    assert policy.samples_for(0, 1.0) == 8  # level 0 was never seen: nearest is 1
    assert policy.samples_for(2, 9.0) == 4  # 2 is as near to 1 as to 3: the lower
    assert policy.samples_for(4, 1.0) == 6
    assert policy.samples_for(1, float("nan")) == 4  # the heavier bin of level 1


# --- policy files --------------------------------------------------------------------------------


def test_a_policy_survives_the_round_trip_and_bad_files_are_clear(tmp_path: Path) -> None:
    run = plan_run(replay_data(mix(easy=4, hard=4, hopeless=4)))
    policy = fit_policy([run], settings(), orderings=10)
    path = tmp_path / "policy.json"
    save_policy(policy, path)
    assert load_auto_policy(path) == policy
    raw = json.loads(path.read_text())
    cases = {
        "missing.json": (None, "No such policy file"),
        "text.json": ("not json", "is not JSON"),
        "other.json": ({"kind": "something-else"}, "is not a ponder policy"),
        "old.json": ({**raw, "version": 99}, "format version 99"),
        "holes.json": (
            {**raw, "bins": [{**raw["bins"][0], "low": 1.0}]},
            "must tile the line",
        ),
    }
    for name, (content, message) in cases.items():
        target = tmp_path / name
        if content is not None:
            target.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(PolicyError, match=message):
            load_policy(target)
    cascade = {**raw, "kind": "ponder.cascade-policy"}
    (tmp_path / "cascade.json").write_text(json.dumps(cascade))
    with pytest.raises(PolicyError, match=r"not a valid ponder\.cascade-policy"):
        load_auto_policy(tmp_path / "cascade.json")


def test_the_shipped_policy_loads_and_says_what_it_was_fitted_on() -> None:
    policy = load_auto_policy()
    assert isinstance(policy, AutoPolicy) and policy.probe >= 1
    (run,) = policy.fitted_on.runs
    assert run.dataset == "gsm8k" and run.model == "qwen2.5-coder-0.5b"
    assert policy.fitted_on.command.startswith("ponder plan fit benchmarks/runs/")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="start with the probe"):
        PlanSettings.model_validate({**settings().model_dump(), "actions": [8, 16]})
    with pytest.raises(ValueError, match="exactly one objective"):
        Objective(match=1.0, tokens=100.0)
    assert default_actions(4, 16) == [4, 6, 8, 12, 16]
    assert default_actions(2, 8) == [2, 3, 4, 6, 8]
    assert default_rereads(4, [4, 6, 8, 12, 16]) == [8] and default_rereads(2, [2, 4, 8]) == [4]
    for bad in ([5], [16], [4], [12, 8]):
        with pytest.raises(ValueError, match="reread"):
            PlanSettings.model_validate({**settings().model_dump(), "rereads": bad})
    # A policy must have bins for each reread its settings name, and draw no further than the
    # next read from each.
    with pytest.raises(ValueError, match="one reread at each of"):
        AutoPolicy.model_validate(
            {
                **hand_policy([(1, None, None, 4)], probe=2, actions=[2, 4, 6]).model_dump(),
                "settings": settings(probe=2, actions=[2, 4, 6], rereads=[4]).model_dump(),
            }
        )
    with pytest.raises(ValueError, match="not among the actions"):
        hand_policy([(1, None, None, 6)], probe=2, actions=[2, 4, 6], rereads={4: []})
    with pytest.raises(ValueError, match="needs at least one bin"):
        hand_policy([(1, None, None, 4)], probe=2, actions=[2, 4, 6], rereads={4: []})


def test_runs_too_small_for_the_probe_are_a_clear_error() -> None:
    run = plan_run(replay_data(mix(easy=2, hard=2, hopeless=2)))
    small = settings(probe=4, actions=[4, 8])
    few = plan_run(
        ReplayData(
            groups=np.asarray(run.data.groups)[:, :2],
            correct=np.asarray(run.data.correct)[:, :2],
            tokens=np.asarray(run.data.tokens)[:, :2],
            latency=np.asarray(run.data.latency)[:, :2],
            confidence=np.asarray(run.data.confidence)[:, :2],
            group_confidence=None,
            scores={},
            group_correct=run.data.group_correct,
        )
    )
    with pytest.raises(PlanError, match="fewer than the probe"):
        fit_policy([few], small, orderings=5)
    with pytest.raises(PlanError, match="the actions go up to 32"):
        fit_policy([run], settings(actions=[4, 32]), orderings=5)


# --- CLI and report ------------------------------------------------------------------------------


def test_cli_fit_and_show_round_trip(tmp_path: Path) -> None:
    run = write_store(tmp_path / "run.db", mix(easy=5, hard=5, hopeless=10))
    out = tmp_path / "policy.json"
    args = ["plan", "fit", str(run), "--out", str(out), "--feature", "length"]
    fitted = CliRunner().invoke(main, [*args, "--orderings", "20"])
    assert fitted.exit_code == 0, fitted.output
    assert f"wrote {out}" in fitted.output and "Refit: ponder plan fit" in fitted.output
    policy = load_auto_policy(out)
    assert policy.fitted_on.runs[0].items == [f"q{i}" for i in range(20)]
    assert policy.fitted_on.command.endswith("--orderings 20 --window 16 --seed 0")
    shown = CliRunner().invoke(main, ["plan", "show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "auto policy" in shown.output and "stop" in shown.output and "Fitted on:" in shown.output
    assert policy.settings.rereads == [8] and "reread" in shown.output  # the default reread
    as_json = CliRunner().invoke(main, ["plan", "show", str(out), "--json"])
    assert AutoPolicy.model_validate_json(as_json.output) == policy
    default = CliRunner().invoke(main, ["plan", "show"])
    assert default.exit_code == 0 and "the shipped default policy" in default.output
    # A policy that answers by a mean-logprob vote says so, and its refit command keeps it.
    weighted = CliRunner().invoke(main, [*args, "--orderings", "10", "--vote", "mean-logprob"])
    assert weighted.exit_code == 0, weighted.output
    assert "geometric-mean token probability" in " ".join(weighted.output.split())
    policy = load_auto_policy(out)
    assert policy.settings.vote == "mean-logprob"
    assert "--vote mean-logprob" in policy.fitted_on.command
    bad = CliRunner().invoke(main, [*args, "--vote", "loudest"])
    assert bad.exit_code == 2 and "loudest" in bad.output


def test_cli_bad_inputs_are_one_clear_line(tmp_path: Path) -> None:
    run = str(write_store(tmp_path / "run.db", mix(easy=2, hard=2, hopeless=2), samples=4))
    notes = tmp_path / "notes.json"
    notes.write_text('{"hello": 1}')
    cases = [
        (["fit", run, "--out", str(tmp_path / "p.json"), "--probe", "8"], "fewer than the probe"),
        (
            ["fit", run, "--out", str(tmp_path / "p.json"), "--match", "1", "--budget-n", "2"],
            "give one of",
        ),
        (["fit", str(tmp_path / "none.db"), "--out", str(tmp_path / "p.json")], "No such run file"),
        (["fit", run, "--out", str(tmp_path / "no" / "p.json")], "No such folder"),
        (["show", str(notes)], "is not a ponder policy"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["plan", *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output.replace("\n", " "), (args, result.output)
        assert "Traceback" not in result.output


def test_the_report_cross_fits_a_policy_fitted_on_its_own_run(tmp_path: Path) -> None:
    run = write_store(tmp_path / "run.db", mix(easy=5, hard=5, hopeless=10))
    policy_path = tmp_path / "policy.json"
    fitted = CliRunner().invoke(
        main,
        [
            "plan",
            "fit",
            str(run),
            "--out",
            str(policy_path),
            "--feature",
            "length",
            "--orderings",
            "10",
        ],
    )
    assert fitted.exit_code == 0, fitted.output
    policy = load_auto_policy(policy_path)
    report = build_report(
        [run],
        strategies=["majority"],
        orderings=20,
        planner=PlannerOptions(policy=policy, policy_path=policy_path),
    )
    (own,) = [row for row in report.rows if row.strategy == AUTO_POLICY]
    assert own.note is not None and own.note.startswith("cross-fitted (5 folds")
    assert own.accuracy == pytest.approx(0.5, abs=0.02) and own.n is None
    swept = sorted((row for row in report.rows if row.strategy == AUTO), key=lambda r: r.n or 0)
    assert [row.n for row in swept] == [4, 8, 16]
    majority = {row.n: row for row in report.rows if row.strategy == "majority"}
    assert swept[0].accuracy == pytest.approx(majority[4].accuracy)
    assert own.tokens < 0.5 * majority[16].tokens
    names = [check.target for check in report.targets]
    assert any("at most 50% of its tokens" in name for name in names)
    first = report.targets[0]
    assert first.met and "majority N=16" in first.detail
    # The difference from majority-16 with its paired interval, on the same orderings.
    assert own.versus_majority is not None
    difference, low, high = own.versus_majority[16]
    assert difference == pytest.approx(own.accuracy - majority[16].accuracy)
    assert low <= difference <= high and f"[{low:+.1%}, {high:+.1%}] paired" in first.detail
    assert swept[1].versus_majority is not None and list(swept[1].versus_majority) == [8]
    assert f"--policy {policy_path}" in report.command
    markdown = render_markdown(report)
    assert "## Planner and cascade" in markdown and "### auto (the policy)" in markdown
    assert "| **yes** |" in markdown
    # Another run of the same items by another model: the policy is played as it is.
    other = write_store(tmp_path / "other.db", mix(easy=5, hard=5, hopeless=10), model="m2")
    elsewhere = build_report(
        [other], strategies=["majority"], orderings=5, planner=PlannerOptions(policy=policy)
    )
    (played,) = [row for row in elsewhere.rows if row.strategy == AUTO_POLICY]
    assert played.note is not None and played.note.startswith("the policy as fitted on")


def test_the_report_cli_adds_the_shipped_policy_unless_told_not_to(tmp_path: Path) -> None:
    run = str(write_store(tmp_path / "run.db", mix(easy=3, hard=3, hopeless=4)))
    result = CliRunner().invoke(main, ["bench", "report", run, "--orderings", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert any(row["strategy"] == AUTO_POLICY for row in summary["rows"])
    assert "shipped default policy" in summary["planner"][0]
    bare = CliRunner().invoke(
        main, ["bench", "report", run, "--orderings", "5", "--no-auto", "--json"]
    )
    assert not any(
        row["strategy"] in (AUTO, AUTO_POLICY) for row in json.loads(bare.output)["rows"]
    )
    both = CliRunner().invoke(main, ["bench", "report", run, "--no-auto", "--policy", run])
    assert both.exit_code == 1 and "not both" in both.output


# --- the live strategy ---------------------------------------------------------------------------


def boxed(answer: str) -> str:
    return f"so \\boxed{{{answer}}}"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """Stop when the 2-sample probe agrees; otherwise 6 samples in all."""
    path = tmp_path / "policy.json"
    save_policy(
        hand_policy([(1, None, None, 6), (2, None, None, 2)], probe=2, actions=[2, 6]), path
    )
    return path


async def test_auto_stops_at_an_agreeing_probe(policy_file: Path) -> None:
    engine = ScriptedEngine([boxed("42")])
    result = await run_strategy("auto", engine, "Q?", {"policy": str(policy_file)})
    assert [r.params.n for r in engine.requests] == [2]
    assert result.answer == "42" and result.samples == 2
    # The policy was fitted on another model's runs: said, not refused.
    assert any("fitted on 'tiny''s runs; 'scripted' answers here" in w for w in result.warnings)
    engine.model = "tiny"
    same = await run_strategy("auto", engine, "Q?", {"policy": str(policy_file)})
    assert not any("fitted on" in w for w in same.warnings)
    (plan,) = [step.detail for step in result.trace if step.step == "plan"]
    assert plan["votes"] == 2 and plan["samples"] == 2


async def test_auto_draws_more_when_the_probe_disagrees(policy_file: Path) -> None:
    engine = ScriptedEngine(
        [boxed("1"), boxed("2"), boxed("2"), boxed("3"), boxed("2"), boxed("2")]
    )
    result = await run_strategy("auto", engine, "Q?", {"policy": str(policy_file)})
    assert [r.params.n for r in engine.requests] == [2, 4]
    assert result.answer == "2" and result.votes == {"2": 4.0, "1": 1.0, "3": 1.0}
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)


async def test_auto_answers_by_the_vote_its_policy_was_fitted_with(tmp_path: Path) -> None:
    # "1" is drawn twice and sure (logprob -0.1 a token), "2" three times and unsure (-3): the
    # majority says "2", the mean-logprob vote "1". Logprobs are asked for every sample.
    answers = ["1", "2", "2", "2", "1", "3"]
    sure = {0: -0.1, 1: -3.0, 2: -3.0, 3: -3.0, 4: -0.1, 5: -2.0}
    hand = hand_policy([(1, None, None, 6), (2, None, None, 2)], probe=2, actions=[2, 6])
    weighted = hand.model_copy(
        update={"settings": hand.settings.model_copy(update={"vote": "mean-logprob"})}
    )
    path = tmp_path / "weighted.json"
    save_policy(weighted, path)
    engine = ScriptedEngine([boxed(a) for a in answers], logprobs=lambda k, i, w: sure[k])
    result = await run_strategy("auto", engine, "Q?", {"policy": str(path)})
    assert all(r.params.logprobs for r in engine.requests)
    assert result.answer == "1"
    assert result.votes["1"] == pytest.approx(2 * np.exp(-0.1))
    assert result.votes["2"] == pytest.approx(3 * np.exp(-3.0))
    total = sum(result.votes.values())
    assert result.vote_share == pytest.approx(result.votes["1"] / total)
    (vote,) = [step.detail for step in result.trace if step.step == "vote"]
    assert vote["kind"] == "mean-logprob"
    # The same samples under the majority policy answer "2".
    engine = ScriptedEngine([boxed(a) for a in answers], logprobs=lambda k, i, w: sure[k])
    plain = await run_strategy(
        "auto", engine, "Q?", {"policy": str(policy_file_of(hand, tmp_path))}
    )
    assert plain.answer == "2" and not any(r.params.logprobs for r in engine.requests)


def policy_file_of(policy: AutoPolicy, folder: Path) -> Path:
    path = folder / "plain.json"
    save_policy(policy, path)
    return path


async def test_auto_rereads_everything_drawn_where_its_policy_says(tmp_path: Path) -> None:
    # A split probe of 2 goes on to 4 and is read again: three of four agreeing stop there,
    # fewer go on to 6.
    staged = hand_policy(
        [(1, None, None, 4), (2, None, None, 2)],
        probe=2,
        actions=[2, 4, 6],
        rereads={4: [(2, None, None, 6), (3, None, None, 4)]},
    )
    path = policy_file_of(staged, tmp_path)
    engine = ScriptedEngine([boxed("1"), boxed("2"), boxed("2"), boxed("2")])
    settled = await run_strategy("auto", engine, "Q?", {"policy": str(path)})
    assert [r.params.n for r in engine.requests] == [2, 2]
    assert settled.answer == "2" and settled.samples == 4
    plans = [step.detail for step in settled.trace if step.step == "plan"]
    assert [(p["read"], p["votes"], p["samples"]) for p in plans] == [(2, 1, 4), (4, 3, 4)]
    engine = ScriptedEngine([boxed(a) for a in ("1", "2", "3", "2", "2", "2")])
    unsettled = await run_strategy("auto", engine, "Q?", {"policy": str(path)})
    assert [r.params.n for r in engine.requests] == [2, 2, 2]
    assert unsettled.answer == "2" and unsettled.votes == {"2": 4.0, "1": 1.0, "3": 1.0}
    plans = [step.detail for step in unsettled.trace if step.step == "plan"]
    assert [(p["read"], p["votes"], p["samples"]) for p in plans] == [(2, 1, 4), (4, 2, 6)]


async def test_auto_respects_the_budget(policy_file: Path) -> None:
    engine = ScriptedEngine([boxed("1"), boxed("2")])  # two words a sample
    capped = await run_strategy(
        "auto", engine, "Q?", {"policy": str(policy_file)}, budget=Budget(max_tokens=8)
    )
    # The probe spent 4 tokens; the 4 left buy two more 2-token samples, not four.
    assert [r.params.n for r in engine.requests] == [2, 2]
    assert capped.usage.completion_tokens <= 8
    engine = ScriptedEngine([boxed("1"), boxed("2")])
    few = await run_strategy(
        "auto", engine, "Q?", {"policy": str(policy_file)}, budget=Budget(max_samples=3)
    )
    assert few.samples == 3 and few.stopped_by == "max_samples"


async def test_auto_with_a_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="No such policy file"):
        await run_strategy("auto", ScriptedEngine(["x"]), "Q?", {"policy": str(tmp_path / "no")})


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=4)
    yield engine
    engine.close()


@pytest.mark.model
async def test_auto_on_the_model(engine: EmbeddedEngine, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    policy = hand_policy(
        [(1, None, 1.0, 4), (1, 1.0, None, 2), (2, None, None, 2)],
        probe=2,
        actions=[2, 4],
        feature="confidence",
    )
    save_policy(policy, path)
    result = await run_strategy(
        "auto",
        engine,
        "What is 2 + 3?",
        {"policy": str(path)},
        sampling=SamplingParams(max_tokens=24, temperature=0.8, seed=7),
    )
    (plan,) = [step.detail for step in result.trace if step.step == "plan"]
    assert plan["confidence"] is not None and plan["confidence"] > 0  # logprobs came back
    assert result.samples == plan["samples"] in (2, 4)
    assert all(c.logprobs for c in result.candidates)
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
