"""`ponder bench report`: the run-store adapter replay reads (complete items only, traces laid out
as online DeepConf expects, the self-certainty verifier's own scores), price files, the Pareto
frontier, and the report files and CLI on small synthetic stores (no model runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.bench.items import DatasetSpec, Item
from ponder.bench.machine_time import measure
from ponder.bench.replay import available_strategies
from ponder.bench.report import (
    COST_TOLERANCE,
    PLOTS,
    ReportError,
    build_report,
    complete_items,
    group_confidence_trace,
    pareto_front,
    replay_data,
)
from ponder.bench.report_files import render_markdown, write_report
from ponder.bench.store import (
    NO_ANSWER,
    LiveConfig,
    LiveRecord,
    RunConfig,
    RunStore,
    SampleRecord,
)
from ponder.cli import main
from ponder.engines.types import Message, TokenLogprob, TopLogprob
from ponder.planning.pricing import (
    DEFAULT_USD_PER_HOUR,
    HourlyPrice,
    PriceError,
    TokenPrice,
    load_prices,
    price_for,
)
from ponder.strategies.result import Candidate, ModelUsage
from ponder.verifiers.confidence import group_confidences
from ponder.verifiers.self_certainty import SelfCertaintyVerifier
from tests.plan_runs import KINDS, finish_items_in_turn, write_store

WINDOW = 4
SAMPLES = 4
ITEMS = 3

# Per item: each sample's answer group and grade. Item 1's group 1 holds a right and a wrong
# sample (a grader disagreeing with itself), item 2 is left one sample short (partial).
GROUPS = [[0, 0, 1, NO_ANSWER], [0, 1, 1, 2], [0, 1, 0, 0]]
CORRECT = [[True, True, False, False], [False, True, False, False], [True, False, True, True]]


def items() -> tuple[Item, ...]:
    return tuple(
        Item(
            id=f"q{i}",
            question=f"{i}+1?",
            prompt=(Message(role="user", content=f"{i}+1?"),),
            reference=str(i + 1),
            checker="math",
            data={},
        )
        for i in range(ITEMS)
    )


def config(**changes: object) -> RunConfig:
    base = RunConfig(
        dataset=DatasetSpec(name="gsm8k"),
        dataset_fingerprint="abc",
        items=ITEMS,
        model="tiny-model",
        engine="local",
        samples=SAMPLES,
        max_tokens=32,
        temperature=0.8,
        top_p=1.0,
        top_k=0,
        seed=0,
        top_logprobs=5,
        prompt_template="math-boxed-v1",
        ponder_version="0.1.0",
    )
    return base.model_copy(update=changes)


def token_confidence(item: int, sample: int) -> np.ndarray:
    """A distinct trace per sample; sample 3 is shorter than the window."""
    size = 2 if sample == 3 else 6 + 2 * sample + item
    return (1.0 + 0.5 * np.cos(np.arange(size) + 3 * item + sample)).astype(np.float32)


def token_logprob(item: int, sample: int) -> np.ndarray:
    size = token_confidence(item, sample).size
    return (-0.1 * (1 + sample) - 0.01 * np.arange(size) - 0.05 * item).astype(np.float32)


def record(item: int, sample: int) -> SampleRecord:
    group = GROUPS[item][sample]
    return SampleRecord(
        item_index=item,
        sample_index=sample,
        seed=item * SAMPLES + sample,
        text=f"sample {item}/{sample}",
        finish_reason="stop",
        answer=None if group == NO_ANSWER else f"a{group}",
        answer_group=group,
        score=float(CORRECT[item][sample]),
        correct=CORRECT[item][sample],
        grade_detail=None,
        completion_tokens=int(token_confidence(item, sample).size) + 1,
        latency_s=0.5 + 0.25 * sample + item,
        token_confidence=token_confidence(item, sample),
        token_logprob=token_logprob(item, sample),
    )


def make_store(path: Path, *, partial: bool = True, **changes: object) -> Path:
    """A run with every sample of items 0 and 1 and, if `partial`, all but the last of item 2."""
    with RunStore.create_or_resume(path, config(**changes), items()) as store:
        for i in range(ITEMS):
            for j in range(SAMPLES):
                if not (partial and i == 2 and j == SAMPLES - 1):
                    store.add_sample(record(i, j))
            store.set_prompt_tokens(i, 10 + i)
    return path


def add_live(
    path: Path,
    label: str,
    correct: dict[int, bool],
    live: LiveConfig | None = None,
    by_model: dict[int, dict[str, ModelUsage]] | None = None,
) -> LiveConfig:
    """Store a live config's results on the items in `correct`: 40 + item tokens each, or the
    sum of the models' in `by_model` where it has the item."""
    live = live or LiveConfig(
        strategy="verify-refine", params={"rounds": 2}, max_tokens=32, label=label
    )
    with RunStore.open_for_live(path) as store:
        live = store.ensure_live_config(live)
        for item, ok in correct.items():
            models = (by_model or {}).get(item, {})
            store.add_live(
                LiveRecord(
                    config_key=live.key,
                    item_index=item,
                    answer="1",
                    correct=ok,
                    score=float(ok),
                    grade_detail=None,
                    completion_tokens=sum(u.completion_tokens for u in models.values())
                    or 40 + item,
                    prompt_tokens=sum(u.prompt_tokens for u in models.values()) or 30,
                    samples=3,
                    latency_s=2.0,
                    stopped_by=None,
                    error=None,
                    trace="[]",
                    by_model=models,
                )
            )
    return live


# --- the adapter ------------------------------------------------------------------------------


def test_replay_data_uses_complete_items_only(tmp_path: Path) -> None:
    with RunStore.open_readonly(make_store(tmp_path / "run.db")) as store:
        assert complete_items(store) == [0, 1]
        data = replay_data(store, window=WINDOW)
        with pytest.raises(ReportError, match=r"item 2 of .* is not complete"):
            replay_data(store, window=WINDOW, items=[0, 2])
        only = replay_data(store, window=WINDOW, items=[1])
    assert (data.items, data.samples) == (2, SAMPLES)
    np.testing.assert_array_equal(data.groups, GROUPS[:2])
    np.testing.assert_array_equal(data.correct, CORRECT[:2])
    np.testing.assert_array_equal(
        data.tokens, [[record(i, j).completion_tokens for j in range(4)] for i in range(2)]
    )
    np.testing.assert_allclose(data.latency, [[0.5, 0.75, 1.0, 1.25], [1.5, 1.75, 2.0, 2.25]])
    # A group is right when any of its samples is: item 1's group 1 is mixed, so right.
    np.testing.assert_array_equal(data.group_correct, [[True, False, False], [False, True, False]])
    np.testing.assert_array_equal(only.groups, [GROUPS[1]])


def test_confidence_traces_and_scores_are_deepconfs_and_the_verifiers(tmp_path: Path) -> None:
    with RunStore.open_readonly(make_store(tmp_path / "run.db")) as store:
        data = replay_data(store, window=WINDOW)
    assert data.group_confidence is not None
    deepconf = SelfCertaintyVerifier(window=WINDOW)
    by_logprob = SelfCertaintyVerifier(mode="mean-logprob", window=WINDOW)
    assert set(data.scores) == {"self-certainty", "mean-logprob"}
    for i in range(2):
        for j in range(SAMPLES):
            conf, logprob = token_confidence(i, j), token_logprob(i, j)
            trace = data.group_confidence[i][j]
            groups = group_confidences(conf, WINDOW)
            assert trace.size == conf.size and trace.dtype == np.float32
            # Online DeepConf reads: +inf before the first full window, then one per token,
            # and the trace's minimum is the sample's confidence.
            np.testing.assert_array_equal(
                trace[conf.size - groups.size :], groups.astype(np.float32)
            )
            assert np.isinf(trace[: conf.size - groups.size]).all()
            assert data.confidence[i, j] == trace.min()
            assert data.confidence[i, j] == np.float32(groups.min())
            # Scores are the self-certainty verifier's own, on the sample's full trace.
            candidate = Candidate(
                index=j,
                text="",
                answer=None,
                finish_reason="stop",
                completion_tokens=conf.size,
                latency_s=0.0,
                logprobs=[
                    TokenLogprob(
                        token="t",
                        logprob=float(lp),
                        top_logprobs=[TopLogprob(token="t", logprob=-float(c))],
                    )
                    for c, lp in zip(conf, logprob, strict=True)
                ],
            )
            assert data.scores["self-certainty"][i, j] == pytest.approx(
                deepconf.check(candidate).value, rel=1e-6
            )
            assert data.scores["mean-logprob"][i, j] == pytest.approx(
                by_logprob.check(candidate).value, rel=1e-6
            )


def test_group_confidence_trace_layout() -> None:
    assert group_confidence_trace(np.zeros(0), 4).size == 0
    short = group_confidence_trace([1.0, 3.0], 4)  # one group, the mean, at the last token
    np.testing.assert_array_equal(short, [np.inf, 2.0])
    exact = group_confidence_trace([1.0, 2.0, 3.0, 6.0], 4)
    np.testing.assert_array_equal(exact, [np.inf, np.inf, np.inf, 3.0])
    longer = group_confidence_trace([1.0, 2.0, 3.0, 6.0, 2.0], 4)
    np.testing.assert_array_equal(longer, [np.inf, np.inf, np.inf, 3.0, 3.25])


def test_a_run_without_top_logprobs_has_no_deepconf_scores(tmp_path: Path) -> None:
    with RunStore.open_readonly(make_store(tmp_path / "run.db", top_logprobs=0)) as store:
        data = replay_data(store, window=WINDOW)
    assert set(data.scores) == {"mean-logprob"}


# --- prices -----------------------------------------------------------------------------------


def test_prices_per_token_and_per_hour(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "api-model": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 2},
                "tiny-model": {"usd_per_hour": 3.6},
            }
        )
    )
    prices = load_prices(path)
    api, local = prices["api-model"], prices["tiny-model"]
    assert isinstance(api, TokenPrice) and isinstance(local, HourlyPrice)
    assert api.cost(1e6, 1e6, 99.0) == pytest.approx(2.5)
    assert api.cost(2000, 500, 0.0) == pytest.approx((2000 * 0.5 + 500 * 2) / 1e6)
    assert local.cost(1e6, 1e6, 10.0) == pytest.approx(0.01)
    toml = tmp_path / "prices.toml"
    toml.write_text('["tiny-model"]\nusd_per_hour = 3.6\n')
    assert load_prices(toml) == {"tiny-model": local}
    assert price_for(config().model, local=True, prices=prices) == local
    default = HourlyPrice(usd_per_hour=DEFAULT_USD_PER_HOUR)
    assert price_for(config().model, local=True, prices=None) == default
    assert price_for(config().model, local=False, prices=None) is None
    with pytest.raises(PriceError, match="no entry for model 'other'"):
        price_for("other", local=True, prices=prices)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "must map model names to prices"),
        ('{"m": 3}', "model 'm' must be a table of prices"),
        ('{"m": {"usd_per_hour": -1}}', "usd_per_hour must be a non-negative number"),
        ('{"m": {"usd_per_hour": "cheap"}}', "usd_per_hour must be a number"),
        ('{"m": {"usd_per_hour": true}}', "usd_per_hour must be a number"),
        ('{"m": {"usd_per_hr": 1}}', "unknown key 'usd_per_hr'"),
        ('{"m": {"input_usd_per_mtok": 1}}', "output_usd_per_mtok is missing"),
        (
            '{"m": {"usd_per_hour": 1, "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}}',
            "either usd_per_hour or per-token prices",
        ),
    ],
)
def test_bad_price_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceError, match=message):
        load_prices(path)


def test_missing_and_bad_toml_price_files(tmp_path: Path) -> None:
    with pytest.raises(PriceError, match="No such price file"):
        load_prices(tmp_path / "nope.json")
    bad = tmp_path / "prices.toml"
    bad.write_text("m = [")
    with pytest.raises(PriceError, match="is not valid TOML"):
        load_prices(bad)


# --- the Pareto frontier ----------------------------------------------------------------------


def test_pareto_front_on_hand_made_points() -> None:
    points = [
        (1.0, 0.5),  # 0: the cheapest
        (2.0, 0.4),  # 1: beaten by 0
        (2.0, 0.7),  # 2
        (3.0, 0.7),  # 3: as accurate as 2 for more
        (1.002, 0.5),  # 4: ties with 0 within the tolerance; 0 is listed first
        (4.0, 0.9),  # 5
        (3.99, 0.6),  # 6: beaten by 2
        (1.0, 0.5),  # 7: an exact duplicate of 0
    ]
    assert pareto_front(points) == [0, 2, 5]
    # Exact comparisons: point 4 is dearer than 0 by 0.2 %, so beaten; 7 still ties with 0.
    assert pareto_front(points, tolerance=0.0) == [0, 2, 5]
    assert pareto_front([(1.0, 0.5), (0.999, 0.5)], tolerance=0.0) == [1]
    assert pareto_front([(1.0, 0.5), (0.999, 0.5)]) == [0]
    assert pareto_front([(1.0, 0.5), (1.0 + COST_TOLERANCE / 2, 0.6)]) == [1]
    assert pareto_front([]) == []


# --- the report -------------------------------------------------------------------------------


def test_the_report_holds_every_strategy_at_every_n_and_the_live_results(tmp_path: Path) -> None:
    run = make_store(tmp_path / "run.db")
    live = add_live(run, "verify-refine rounds=2", {0: True, 1: False, 2: True})
    out = tmp_path / "report"
    report = build_report([run], orderings=20, window=WINDOW, out=out)
    with RunStore.open_readonly(run) as store:
        names = available_strategies(replay_data(store, window=WINDOW))
    replayed = [row for row in report.rows if row.kind == "replay"]
    assert [(row.strategy, row.n) for row in replayed] == [(s, n) for s in names for n in (1, 2, 4)]
    assert report.items_used == 2 and report.runs[0].items_complete == 2
    assert report.runs[0].prompt_tokens == pytest.approx(10.5)
    majority = next(row for row in replayed if row.strategy == "majority" and row.n == 4)
    # Cost at the default machine price: the machine time of the tokens x $/hour.
    with RunStore.open_readonly(run) as store:
        per_token = store.machine_time().seconds_per_token
    assert per_token is not None and report.runs[0].machine_seconds_per_token == per_token
    usd_per_token = per_token * DEFAULT_USD_PER_HOUR / 3600
    assert majority.cost_usd == pytest.approx(majority.tokens * usd_per_token)
    oracle = [row for row in replayed if row.strategy == "pass@k"]
    assert all(row.oracle and not row.pareto for row in oracle)
    assert any(row.pareto for row in report.rows)
    # The live config: one point over the items used (item 2 is incomplete, so left out).
    (point,) = [row for row in report.rows if row.kind == "live"]
    assert (point.strategy, point.n, point.items) == (live.label, None, 2)
    assert point.accuracy == 0.5 and point.ci_low <= 0.5 <= point.ci_high
    assert (point.tokens, point.latency_s, point.samples) == (40.5, 2.0, 3.0)
    assert point.cost_usd == pytest.approx(40.5 * usd_per_token)

    written = write_report(report, out)
    assert {path.name for path in written} == {"report.md", "summary.json", *PLOTS.values()}
    for name in PLOTS.values():
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == len(names) * 3 + 1
    assert summary["runs"][0]["config"]["model"] == "tiny-model"
    markdown = (out / "report.md").read_text()
    assert "2 / 2 / 3" in markdown  # items used / complete / in run
    assert "**Partial:** only the 2 items" in markdown
    assert (
        f"ponder bench run --out {run} --dataset gsm8k --limit 3 --model tiny-model --samples 4 "
        "--max-tokens 32 --seed 0 --temperature 0.8 --top-p 1 --top-k 0 --top-logprobs 5"
    ) in markdown
    assert f"ponder bench report {run} --orderings 20 --window 4 --out {out}" in markdown
    assert f"ponder bench live {run} --strategy verify-refine -p rounds=2" in markdown
    assert "### deepconf-online" in markdown and "| verify-refine rounds=2 | 50.0% [" in markdown
    assert "1 answer group holds samples graded both right and wrong" in markdown
    assert "## Best per budget" in markdown and "## Pareto-optimal points" in markdown


def test_a_live_run_on_some_items_does_not_compete_with_points_on_all(tmp_path: Path) -> None:
    # Right on the one item it ran, and cheap: on that item alone it would beat every point.
    run = make_store(tmp_path / "run.db")
    live = add_live(run, "verify-refine rounds=2", {0: True})
    report = build_report([run], orderings=5, window=WINDOW)
    (point,) = [row for row in report.rows if row.kind == "live"]
    assert (point.items, point.accuracy, point.pareto) == (1, 1.0, ())
    assert any(row.pareto for row in report.rows)
    picks = [pick.point for tier in report.budgets for pick in tier.best.values() if pick]
    assert picks and not any(live.label in name for name in picks)
    assert "1 of the 2 items used" in render_markdown(report)


def test_a_live_config_that_drew_from_two_models_is_priced_at_each_ones_price(
    tmp_path: Path,
) -> None:
    run = make_store(tmp_path / "run.db")
    cascade = LiveConfig(
        strategy="cascade",
        params={"probe": 2},
        max_tokens=32,
        label="cascade escalate=big",
        escalate_model="big",
    )
    usage = {
        name: ModelUsage(prompt_tokens=p, completion_tokens=c, seconds=1.0)
        for name, (p, c) in {"tiny-model": (10, 20), "big": (30, 60)}.items()
    }
    by_model = {0: {"tiny-model": usage["tiny-model"]}, 1: usage}
    cascade = add_live(run, cascade.label, {0: True, 1: True}, cascade, by_model)
    with RunStore.open_readonly(run) as store:
        (first, second) = store.live_records(cascade.key)
        assert set(first.by_model) == {"tiny-model"} and set(second.by_model) == {
            "tiny-model",
            "big",
        }
        assert second.by_model["big"] == ModelUsage(
            prompt_tokens=30, completion_tokens=60, seconds=1.0
        )
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "tiny-model": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
                "big": {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0},
            }
        )
    )
    report = build_report(
        [run], strategies=["majority"], prices=load_prices(prices), orderings=2, window=WINDOW
    )
    (point,) = [row for row in report.rows if row.kind == "live"]
    small = 10 * 1.0 + 20 * 2.0
    assert point.cost_usd == pytest.approx((small + small + 30 * 10.0 + 60 * 20.0) / 2 / 1e6)
    assert point.tokens == 50.0  # both models' tokens, as the strategy spent them
    assert "--escalate-model big" in render_markdown(report)
    missing = tmp_path / "one.json"
    missing.write_text(json.dumps({"tiny-model": {"usd_per_hour": 1.0}}))
    with pytest.raises(PriceError, match="no entry for model 'big'"):
        build_report([run], strategies=["majority"], prices=load_prices(missing), orderings=2)


def test_two_models_on_the_same_items_make_one_report(tmp_path: Path) -> None:
    first = make_store(tmp_path / "a.db")
    second = make_store(tmp_path / "b.db", partial=False, model="other-model")
    report = build_report(
        [first, second], strategies=["majority", "pass@k"], orderings=5, window=WINDOW
    )
    assert report.items_used == 2  # item 2 is complete in b only
    assert {row.run for row in report.rows} == {"tiny-model", "other-model"}
    assert len(report.rows) == 2 * 2 * 3
    markdown = render_markdown(report)
    assert "| other-model | 4 | 100.0%" in markdown and "tiny-model · majority N=1" in markdown
    same = build_report(
        [first, make_store(tmp_path / "c.db")], strategies=["majority"], orderings=2
    )
    assert {row.run for row in same.rows} == {"tiny-model (a)", "tiny-model (c)"}
    other = make_store(tmp_path / "d.db", dataset=DatasetSpec(name="math500"))
    with pytest.raises(ReportError, match=r"different datasets: .* has gsm8k, .* has math500"):
        build_report([first, other])


def test_a_run_being_written_can_be_reported(tmp_path: Path) -> None:
    path = make_store(tmp_path / "run.db")
    with RunStore.create_or_resume(path, config(), items()) as writer:  # holds the writer lock
        writer.add_sample(record(2, SAMPLES - 1))
        report = build_report([path], strategies=["majority"], orderings=2, window=WINDOW)
    assert report.items_used == 3


# --- the CLI ----------------------------------------------------------------------------------


def test_the_cli_writes_the_report_beside_the_run(tmp_path: Path) -> None:
    run = make_store(tmp_path / "run.db")
    result = CliRunner().invoke(
        main, ["bench", "report", str(run), "--orderings", "5", "--window", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["items_used"] == 2 and summary["orderings"] == 5
    assert (tmp_path / "run-report" / "report.md").is_file()
    plain = CliRunner().invoke(
        main,
        ["bench", "report", str(run), "--strategies", "majority, esc", "-o", str(tmp_path / "r")],
    )
    assert plain.exit_code == 0, plain.output
    assert "2 items used (of 3)" in plain.output
    assert "tokens (N=1): majority N=1" in plain.output


def test_bad_inputs_are_one_clear_line(tmp_path: Path) -> None:
    run = str(make_store(tmp_path / "run.db"))
    empty = tmp_path / "empty.db"
    RunStore.create_or_resume(empty, config(), items()).close()
    not_a_run = tmp_path / "notes.txt"
    not_a_run.write_text("notes " * 100)
    prices = tmp_path / "prices.json"
    prices.write_text('{"tiny-model": {"usd_per_hour": -2}}')
    other = make_store(tmp_path / "other.db", dataset=DatasetSpec(name="math500"))
    cases = [
        ([str(tmp_path / "missing.db")], "No such run file"),
        ([str(not_a_run)], "not a ponder run store"),
        ([str(empty)], "has no complete item yet: 0 of 3 items have all 4 samples"),
        ([run, "--strategies", "majority,nope"], "unknown strategy 'nope'; available: majority"),
        ([run, "--strategies", " , "], "--strategies is empty"),
        ([run, "--prices", str(tmp_path / "none.json")], "No such price file"),
        ([run, "--prices", str(prices)], "usd_per_hour must be a non-negative number"),
        ([run, "--orderings", "0"], "--orderings must be at least 1"),
        ([run, "--window", "0"], "--window must be at least 1"),
        ([run, run], "is given twice"),
        ([run, str(other)], "the runs are over different datasets"),
        ([run, "--out", run], "is a file; give --out a folder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["bench", "report", *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output.replace("\n", " "), (args, result.output)
        assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["bench", "report"])
    assert missing.exit_code == 2 and "Missing argument" in missing.output


def test_costs_follow_a_token_price_file(tmp_path: Path) -> None:
    run = make_store(tmp_path / "run.db")
    prices = tmp_path / "prices.toml"
    prices.write_text('["tiny-model"]\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 4.0\n')
    report = build_report(
        [run],
        strategies=["majority"],
        prices=load_prices(prices),
        prices_path=prices,
        orderings=2,
        window=WINDOW,
    )
    for row in report.rows:
        want = (10.5 * row.samples * 1.0 + row.tokens * 4.0) / 1e6
        assert row.cost_usd == pytest.approx(want)
    assert f"--prices {prices}" in report.command
    assert math.isfinite(report.budgets[0].best["cost"].budget)  # type: ignore[union-attr]
    assert report.runs[0].machine_seconds_per_token is None
    assert "machine" not in report.runs[0].price  # type: ignore[operator]


# --- machine time -----------------------------------------------------------------------------


def test_machine_time_is_the_time_some_sample_was_in_flight() -> None:
    # Samples in flight over [0, 10], [2, 12], [11, 20]; the run stops and is resumed for
    # [1000, 1010] and [1005, 1008]: 30 s of sampling, 980 s left out.
    machine = measure(
        [10.0, 12.0, 20.0, 1010.0, 1008.0], [10.0, 10.0, 9.0, 10.0, 3.0], [100, 200, 300, 50, 50]
    )
    assert (machine.tokens, machine.pauses) == (700, 1)
    assert machine.active_s == pytest.approx(30.0) and machine.idle_s == pytest.approx(980.0)
    assert machine.seconds_per_token == pytest.approx(30.0 / 700)
    assert measure([], [], []).seconds_per_token is None


def test_an_hourly_price_charges_the_machine_time_of_the_tokens(tmp_path: Path) -> None:
    """16 samples of equal length decoded together take one sample's latency, but 16 times the
    machine: under an hourly price N = 16 costs 16 x N = 1, while the latency stays one
    sample's. Pauses between items (the run stopped and resumed) are not charged."""
    run = write_store(tmp_path / "run.db", [KINDS["easy"]] * 3, latency=2.0)
    finish_items_in_turn(run, 2.0, gap=600.0)
    with RunStore.open_readonly(run) as store:
        machine = store.machine_time()
    assert (machine.tokens, machine.pauses) == (3 * 16 * 100, 2)
    assert machine.active_s == pytest.approx(6.0) and machine.idle_s == pytest.approx(1200.0)
    per_token = 6.0 / 4800
    report = build_report([run], strategies=["majority"], orderings=3)
    by_n = {row.n: row for row in report.rows}
    for n, row in by_n.items():
        assert row.latency_s == pytest.approx(2.0)
        assert row.cost_usd == pytest.approx(
            (n or 0) * 100 * per_token * DEFAULT_USD_PER_HOUR / 3600
        )
    assert by_n[16].cost_usd == pytest.approx(16 * (by_n[1].cost_usd or 0.0))
    budgets = [tier.best["cost"] for tier in report.budgets]
    assert budgets[-1] is not None and budgets[0] is not None
    assert budgets[-1].budget == pytest.approx(16 * budgets[0].budget)
    assert report.runs[0].machine_seconds_per_token == pytest.approx(per_token)
    markdown = render_markdown(report)
    assert (
        "tiny: $0.1 / hour of machine time; the run generated 800 tokens/s over 0.00167 h of "
        "active sampling (0.33 h in 2 pauses with no sample in flight"
    ) in markdown
    assert "a generated token costs 0.00125 machine-seconds" in markdown
    assert "the machine time its generated tokens took" in markdown
