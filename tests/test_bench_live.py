"""Live strategy runs on a sampling run's items: like-for-like settings, grading by the run's
checker, one row per (config, item) that is never redone or duplicated, failures that leave
nothing half-stored, the arrays reports read, and the CLI (for real on SmolLM2)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.bench.checkers import make_checker
from ponder.bench.datasets import Dataset, load_dataset, parse_dataset
from ponder.bench.items import CheckerName, Item
from ponder.bench.live import (
    BenchLiveError,
    grade_answer,
    live_run,
    load_items,
    make_live_config,
    pending_items,
)
from ponder.bench.report import live_command
from ponder.bench.run import make_config
from ponder.bench.store import LiveConfig, LiveRecord, RunStore, RunStoreError
from ponder.budget import Budget
from ponder.cli import main
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    Message,
    Timings,
    Usage,
)
from ponder.errors import EngineError, InvalidRequestError
from ponder.verifiers.llm_judge import LLMJudgeVerifier
from tests.conftest import TEST_HOME
from tests.scripted_engine import ScriptedEngine

SAMPLES = 4
SEED = 100


def write_dataset(tmp_path: Path, items: int = 3) -> Path:
    path = tmp_path / "tiny.jsonl"
    rows = [{"question": f"What is {i} + 1?", "answer": i + 1} for i in range(items)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def dataset(tmp_path: Path, items: int = 3) -> Dataset:
    return load_dataset(parse_dataset(str(write_dataset(tmp_path, items))))


def make_run(tmp_path: Path, data: Dataset, model: str = "scripted") -> Path:
    """A run store with its items but no samples: a live run needs only the items."""
    path = tmp_path / "run.db"
    config = make_config(
        data,
        model=model,
        engine="local",
        samples=SAMPLES,
        max_tokens=32,
        seed=SEED,
        temperature=0.6,
        top_p=0.9,
        top_k=20,
    )
    RunStore.create_or_resume(path, config, data.items).close()
    return path


def item_number(request: GenerationRequest) -> int:
    assert request.messages is not None
    question = next(str(m.content) for m in request.messages if m.role == "user")
    return int(question.split()[2])


def right_but_item_1(request: GenerationRequest, k: int) -> str:
    """Items 0 and 2 are answered right; item 1 is answered 7 (wrong)."""
    i = item_number(request)
    return f"So it is \\boxed{{{7 if i == 1 else i + 1}}}"


def sc_config(store: RunStore, **params: object) -> LiveConfig:
    return make_live_config(store.config, "self-consistency", {"n": 2, **params})


# --- the loop on a scripted engine ------------------------------------------------------------


async def test_a_live_run_uses_the_runs_settings_and_stores_graded_results(
    tmp_path: Path,
) -> None:
    data = dataset(tmp_path)
    engine = ScriptedEngine(right_but_item_1)
    seen: list[LiveRecord] = []
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        config = sc_config(store)
        summary = await live_run(store, data, engine, config, on_result=seen.append)
        assert summary.ran == summary.done == summary.items == 3 and summary.complete
        assert summary.failed == 0 and summary.accuracy == pytest.approx(2 / 3)
        assert summary.mean_samples == 2 and summary.mean_completion_tokens == 8
        assert summary.label == "self-consistency n=2"
        # like for like: the run's sampling settings, and item i starts at its first sample's seed
        requests = sorted(engine.requests, key=item_number)
        assert [item_number(r) for r in requests] == [0, 1, 2]
        for i, request in enumerate(requests):
            params = request.params
            assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.9, 20)
            assert (params.n, params.max_tokens, params.seed) == (2, 32, SEED + i * SAMPLES)
            assert request.messages == data.items[i].prompt  # the run's prompt, nothing else
        records = store.live_records(config.key)
        assert [r.item_index for r in records] == [0, 1, 2] and len(seen) == 3
        assert [(r.answer, r.correct, r.score) for r in records] == [
            ("1", True, 1.0),
            ("7", False, 0.0),
            ("3", True, 1.0),
        ]
        first = records[0]
        assert (first.samples, first.completion_tokens, first.prompt_tokens) == (2, 8, 10)
        assert first.stopped_by is None and first.error is None and first.grade_detail is None
        steps = json.loads(first.trace)
        assert [s["step"] for s in steps] == ["sample", "vote"]
        assert steps[1]["detail"]["votes"] == {"1": 2.0}


async def test_finished_items_are_never_redone_or_stored_twice(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        config = sc_config(store)
        first = await live_run(store, data, ScriptedEngine(right_but_item_1), config, limit=2)
        assert (first.ran, first.done, first.items, first.complete) == (2, 2, 2, True)
        assert pending_items(store, config) == [2]
        idle = ScriptedEngine(right_but_item_1)
        again = await live_run(store, data, idle, config, limit=2)
        assert again.ran == 0 and again.done == 2 and idle.requests == []
        rest = await live_run(store, data, idle, config, concurrency=3)
        assert rest.ran == 1 and rest.done == 3 and len(idle.requests) == 1
        record = store.live_records(config.key)[0]
        with pytest.raises(RunStoreError, match="item 0 already has a result"):
            store.add_live(record)
        with pytest.raises(RunStoreError, match="unknown config or item"):
            store.add_live(LiveRecord(**{**record.__dict__, "config_key": "nope"}))
        assert len(store.live_records(config.key)) == 3


class Refusing(ScriptedEngine):
    """Refuses every request for item 1, as an engine that went away would."""

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if item_number(request) == 1:
            raise EngineError("the server went away")
        return super().start(request)


async def test_a_strategy_error_stops_the_run_and_keeps_what_was_stored(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        config = sc_config(store)
        with pytest.raises(BenchLiveError, match=r"item 1 failed: the server went away.*again"):
            await live_run(store, data, Refusing(right_but_item_1), config)
        assert store.live_done(config.key) == {0}
        rest = await live_run(store, data, ScriptedEngine(right_but_item_1), config)
        assert rest.ran == 2 and rest.complete


class FailingSamples(Engine):
    """Answers right, but the first sample of every request for item 2 fails."""

    def __init__(self) -> None:
        self.model = "failing"
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=False,
            max_top_logprobs=0,
            streaming=False,
            prefix_caching=False,
            cancel_sample=False,
        )

    def start(self, request: GenerationRequest) -> GenerationHandle:
        i = item_number(request)
        handle = GenerationHandle(request.params.n, lambda index: None)
        completions = [
            Completion(
                index=k,
                text=f"\\boxed{{{i + 1}}}",
                finish_reason="error" if i == 2 and k == 0 else "stop",
                completion_tokens=2,
                latency_s=0.1,
                error="out of memory" if i == 2 and k == 0 else None,
            )
            for k in range(request.params.n)
        ]
        generation = Generation(
            model=self.model, completions=completions, usage=Usage(), timings=Timings()
        )
        asyncio.get_running_loop().call_soon(handle.finish, generation)
        return handle


async def test_a_result_missing_a_failed_sample_is_not_stored(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        config = sc_config(store)
        summary = await live_run(store, data, FailingSamples(), config, concurrency=2)
        assert summary.ran == 2 and summary.failed == 1 and not summary.complete
        assert summary.first_error == "out of memory"
        assert store.live_done(config.key) == {0, 1}
        assert pending_items(store, config) == [2]


async def test_a_cascade_runs_live_with_a_judge_and_a_larger_model_each_counted_apart(
    tmp_path: Path,
) -> None:
    """Item 0's small answer is judged right and kept; items 1 and 2 are judged wrong and go to
    the larger model. Each record keeps every model's share of the tokens."""
    data = dataset(tmp_path)
    small = ScriptedEngine(right_but_item_1)

    def verdict(request: GenerationRequest, k: int) -> str:
        return "Yes" if "What is 0 + 1?" in str(request.messages) else "No"

    judge, large = ScriptedEngine(verdict), ScriptedEngine(right_but_item_1)
    judge.model, large.model = "judge", "big"
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        plain = make_live_config(store.config, "cascade", {"probe": 2, "feature": "score"})
        config = make_live_config(
            store.config,
            "cascade",
            {"probe": 2, "feature": "score", "samples": 3},
            judge_model="judge",
            escalate_model="big",
        )
        assert config.label == "cascade feature=score probe=2 samples=3 judge=judge escalate=big"
        assert (config.judge_model, config.escalate_model, config.escalate_engine) == (
            "judge",
            "big",
            None,
        )
        assert config.key != plain.model_copy(update={"params": config.params}).key
        summary = await live_run(
            store,
            data,
            small,
            config,
            verifiers={"llm-judge": LLMJudgeVerifier(engine=judge)},
            engines={"large": large},
        )
        assert summary.done == 3 and summary.accuracy == pytest.approx(2 / 3)
        records = store.live_records(config.key)
    # item 1: the larger model is scripted wrong too, so the cascade answers 7 there
    assert [r.answer for r in records] == ["1", "7", "3"]
    assert [sorted(r.by_model) for r in records] == [
        ["judge", "scripted"],
        ["big", "judge", "scripted"],
        ["big", "judge", "scripted"],
    ]
    for record in records:
        assert record.completion_tokens == sum(
            u.completion_tokens for u in record.by_model.values()
        )
        assert record.prompt_tokens == sum(u.prompt_tokens for u in record.by_model.values())
        assert record.by_model["scripted"].completion_tokens == 2 * 4  # the probe
        assert record.by_model["judge"].completion_tokens == 2  # a verdict per probe sample
    assert records[1].by_model["big"].completion_tokens == 3 * 4
    assert len(large.requests) == 2 and len(judge.requests) == 3 * 2
    with RunStore.open_readonly(store.path) as reader:
        (result,) = reader.live_results()
        command = live_command(store.path, result)
    assert command.endswith("--judge-model judge --escalate-model big")
    with pytest.raises(InvalidRequestError, match="--escalate-engine needs --escalate-model"):
        make_live_config(store.config, "cascade", escalate_engine="http://x")


# --- configs ----------------------------------------------------------------------------------


def test_equal_settings_are_one_config_and_a_chosen_label_is_another(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with RunStore.open_for_live(make_run(tmp_path, data)) as store:
        run = store.config
        plain = make_live_config(run, "self-consistency")
        spelled = make_live_config(run, "self-consistency", {"n": "8", "group_by": "math"})
        assert plain.key == spelled.key and plain.params == spelled.params
        assert plain.label == "self-consistency"
        assert spelled.label == "self-consistency group_by=math n=8"
        assert store.ensure_live_config(spelled).label == spelled.label
        assert store.ensure_live_config(plain).label == spelled.label  # the first label stays
        other = make_live_config(run, "self-consistency", {"n": 4})
        assert other.key != plain.key
        budgeted = make_live_config(
            run, "think-longer", budget=Budget(max_samples=3, max_tokens=100), max_tokens=16
        )
        assert budgeted.label == "think-longer max_samples=3 budget_tokens=100 max_tokens=16"
        assert make_live_config(run, "think-longer", max_tokens=32).max_tokens == run.max_tokens
        named = make_live_config(run, "self-consistency", label="again")
        assert named.named and named.key != plain.key and named.params == plain.params
        store.ensure_live_config(named)
        with pytest.raises(RunStoreError, match="label 'again' already names other"):
            store.ensure_live_config(
                make_live_config(run, "self-consistency", {"n": 2}, label="again")
            )
        clash = make_live_config(run, "self-consistency", {"n": 3}).model_copy(
            update={"label": "again"}
        )
        assert store.ensure_live_config(clash).label == f"again [{clash.key[:6]}]"
        with pytest.raises(InvalidRequestError, match="unknown strategy 'nope'"):
            make_live_config(run, "nope")
        with pytest.raises(InvalidRequestError, match="unknown parameter 'size'"):
            make_live_config(run, "self-consistency", {"size": 2})
        with pytest.raises(InvalidRequestError, match="--label must not be empty"):
            make_live_config(run, "self-consistency", label=" ")


async def test_live_results_are_arrays_over_the_items_done(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    path = make_run(tmp_path, data)
    with RunStore.open_readonly(path) as reader:
        assert reader.live_results() == [] and reader.live_configs() == []
        assert reader.live_done("any") == set()
    with RunStore.open_for_live(path) as store:
        two = sc_config(store)
        one = sc_config(store, n=1)
        await live_run(store, data, ScriptedEngine(right_but_item_1), two)
        await live_run(store, data, ScriptedEngine(right_but_item_1), one, limit=2)
        store.ensure_live_config(sc_config(store, n=3))  # registered, nothing done: left out
    with RunStore.open_readonly(path) as reader:
        results = reader.live_results()
        assert [r.config.label for r in results] == [two.label, one.label]
        assert len(reader.live_configs()) == 3
    full, part = results
    assert full.config == two and full.config.params["n"] == 2
    np.testing.assert_array_equal(full.item_index, [0, 1, 2])
    np.testing.assert_array_equal(full.correct, [1.0, 0.0, 1.0])
    assert full.correct.dtype == np.float64 and full.tokens.dtype == np.int64
    np.testing.assert_array_equal(full.tokens, [8, 8, 8])
    np.testing.assert_array_equal(full.samples, [2, 2, 2])
    assert full.latency_s.shape == (3,) and (full.latency_s >= 0).all()
    assert full.accuracy == pytest.approx(2 / 3)
    np.testing.assert_array_equal(part.item_index, [0, 1])
    np.testing.assert_array_equal(part.samples, [1, 1])


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    path = make_run(tmp_path, data)
    with RunStore.open_for_live(path) as store:
        with pytest.raises(RunStoreError, match="being written by another"):
            RunStore.open_for_live(path)
        with pytest.raises(RunStoreError, match="being written by another"):
            RunStore.create_or_resume(path, store.config, data.items)
    RunStore.open_for_live(path).close()


def test_changed_items_are_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    path = make_run(tmp_path, data)
    assert data.spec.path is not None
    data.spec.path.write_text(json.dumps({"question": "What is 5 + 1?", "answer": 6}) + "\n" * 3)
    with RunStore.open_for_live(path) as store, pytest.raises(BenchLiveError, match="no longer"):
        load_items(store)


async def test_answers_are_graded_by_the_runs_checker() -> None:
    def item(checker: CheckerName, reference: str) -> Item:
        return Item(
            id="x",
            question="?",
            prompt=(Message(role="user", content="?"),),
            reference=reference,
            checker=checker,
            data={"entry": {}},
        )

    math = make_checker("math")
    assert (await grade_answer(math, "1/2", item("math", "0.5"))).correct
    assert (await grade_answer(math, "\\frac{2}{4}", item("math", "1/2"))).correct
    assert not (await grade_answer(math, "3", item("math", "0.5"))).correct
    missing = await grade_answer(math, None, item("math", "0.5"))
    assert (missing.correct, missing.detail) == (False, "no answer")
    choice = make_checker("multiple-choice")
    assert (await grade_answer(choice, "B", item("multiple-choice", "B"))).correct
    gym = make_checker("reasoning-gym", lambda answer, entry: float(answer == "a b"))
    assert (await grade_answer(gym, "a b", item("reasoning-gym", "a b"))).correct


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    return CliRunner()


def test_bad_inputs_are_one_clear_line(runner: CliRunner, tmp_path: Path) -> None:
    data = dataset(tmp_path)
    run = str(make_run(tmp_path, data, model="smollm2-135m"))
    not_a_run = tmp_path / "notes.txt"
    not_a_run.write_text("notes " * 100)
    cases = [
        ([str(tmp_path / "missing.db"), "-s", "think-longer"], "No such run file"),
        ([str(tmp_path), "-s", "think-longer"], "No such run file"),
        ([str(not_a_run), "-s", "think-longer"], "not a ponder run store"),
        ([run, "-s", "thinklonger"], "unknown strategy 'thinklonger'"),
        ([run, "-s", "think-longer", "-p", "nope=1"], "unknown parameter 'nope'"),
        ([run, "-s", "self-consistency", "-p", "n=0"], "n: Input should be greater than"),
        ([run, "-s", "self-consistency", "-p", "n"], "--param takes KEY=VALUE"),
        ([run, "-s", "self-consistency", "--concurrency", "0"], "--concurrency must be at"),
        ([run, "-s", "self-consistency", "--limit", "0"], "--limit must be at least 1"),
        ([run, "-s", "self-consistency", "--max-tokens", "0"], "max_tokens: Input should be"),
        ([run, "-s", "self-consistency", "--max-samples", "0"], "max_samples: Input should be"),
        ([run, "-s", "self-consistency", "--label", ""], "--label must not be empty"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["bench", "live", *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output.replace("\n", " "), (args, result.output)
        assert "Traceback" not in result.output
    missing = runner.invoke(main, ["bench", "live", run])
    assert missing.exit_code == 2 and "--strategy" in missing.output
    with sqlite3.connect(run) as connection:  # nothing was registered by a refused command
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        assert (
            "live_configs" not in tables
            or not connection.execute("SELECT COUNT(*) FROM live_configs").fetchone()[0]
        )
    assert data.spec.path is not None
    data.spec.path.write_text(json.dumps({"question": "What is 9 + 1?", "answer": 10}) + "\n")
    changed = runner.invoke(main, ["bench", "live", run, "-s", "self-consistency"])
    assert changed.exit_code == 1 and "are no longer the ones" in changed.output


# --- the real thing on SmolLM2 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """A tiny real run made by `ponder bench run` (3 items x 2 samples), copied per test."""
    folder = tmp_path_factory.mktemp("sampled")
    out = folder / "run.db"
    runner = CliRunner(env={"PONDER_HOME": str(TEST_HOME)})
    args = ["bench", "run", "-o", str(out), "-d", str(write_dataset(folder)), "-m", "smollm2-135m"]
    result = runner.invoke(main, [*args, "-n", "2", "--max-tokens", "16", "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    return out


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT * FROM live ORDER BY config_key, item_index").fetchall()


@pytest.mark.model
def test_live_strategies_on_a_real_run_are_stored_and_resumable(
    runner: CliRunner, sampled_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run.db"
    shutil.copy(sampled_run, run)
    think = ["bench", "live", str(run), "-s", "think-longer", "-p", "min_thinking_tokens=4"]
    think += ["-p", "max_thinking_tokens=8", "-p", "answer_tokens=4", "-p", "max_extensions=1"]
    first = runner.invoke(main, [*think, "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["ran"], summary["done"], summary["items"], summary["failed"]) == (3, 3, 3, 0)
    assert summary["label"] == (
        "think-longer answer_tokens=4 max_extensions=1 max_thinking_tokens=8 min_thinking_tokens=4"
    )
    assert 0 < summary["mean_completion_tokens"] <= 8 + 4 + 8
    stored = rows(run)
    assert len(stored) == 3

    again = runner.invoke(main, think)  # nothing left: the engine is not even opened
    assert again.exit_code == 0, again.output
    assert "3/3 items done (complete)" in again.output and "ran " not in again.output
    assert rows(run) == stored

    sc = ["bench", "live", str(run), "-s", "self-consistency", "-p", "n=2", "--max-tokens", "16"]
    voted = runner.invoke(main, [*sc, "--concurrency", "2", "--json"])
    assert voted.exit_code == 0, voted.output
    assert json.loads(voted.output)["ran"] == 3
    single = runner.invoke(main, [*sc[:-4], "-p", "n=1", "--limit", "1", "--json"])
    assert json.loads(single.output)["ran"] == 1

    with RunStore.open_readonly(run) as store:
        results = store.live_results()
        assert [r.config.strategy for r in results] == [
            "think-longer",
            "self-consistency",
            "self-consistency",
        ]
        assert [r.item_index.tolist() for r in results] == [[0, 1, 2], [0, 1, 2], [0]]
        assert results[1].config.label == "self-consistency n=2"  # 16 is the run's max_tokens
        assert (results[1].samples == 2).all() and (results[2].samples == 1).all()
        assert all((r.tokens > 0).all() and (r.latency_s > 0).all() for r in results)
        assert results[0].config.params["max_thinking_tokens"] == 8
        assert len(store.samples()) == 6  # the run's own samples are untouched
    assert len(rows(run)) == 7

    # A cascade judged by, and escalating to, a second real model: no score reaches 1.5, so
    # every item is judged and escalated, and each record keeps both models' tokens apart.
    larger = "qwen2.5-coder-0.5b"
    cascade = ["bench", "live", str(run), "-s", "cascade", "-p", "probe=1", "-p", "samples=1"]
    cascade += ["-p", "feature=score", "-p", "threshold=1.5", "--max-tokens", "8", "--json"]
    escalated = runner.invoke(
        main, [*cascade, "--judge-model", larger, "--escalate-model", larger, "--limit", "2"]
    )
    assert escalated.exit_code == 0, escalated.output
    assert json.loads(escalated.output)["ran"] == 2
    with RunStore.open_readonly(run) as store:
        (config,) = [c for c in store.live_configs() if c.strategy == "cascade"]
        assert (config.judge_model, config.escalate_model) == (larger, larger)
        records = store.live_records(config.key)
    assert [r.item_index for r in records] == [0, 1]
    for record in records:
        assert set(record.by_model) == {"smollm2-135m", larger}
        small, large = record.by_model["smollm2-135m"], record.by_model[larger]
        assert 0 < small.completion_tokens <= 8 and small.prompt_tokens > 0
        assert large.prompt_tokens > small.prompt_tokens  # the judge read the solution too
        assert record.completion_tokens == small.completion_tokens + large.completion_tokens
        (route,) = [step for step in json.loads(record.trace) if step["step"] == "route"]
        assert route["detail"]["escalate"] is True


@pytest.mark.model
def test_a_real_judge_scores_a_runs_samples_once(
    runner: CliRunner, sampled_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run.db"
    shutil.copy(sampled_run, run)
    judge = ["bench", "judge", str(run), "--judge-model", "smollm2-135m", "--samples", "1"]
    first = runner.invoke(main, [*judge, "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["asked"], summary["done"], summary["judged"]) == (3, 3, 3)
    assert summary["verifier"] == "llm-judge:smollm2-135m"
    assert 0.0 <= summary["mean_score"] <= 1.0 and summary["mean_seconds"] > 0
    again = runner.invoke(main, judge)
    assert again.exit_code == 0, again.output
    assert "3/3 samples judged" in again.output and " now, in " not in again.output
    with RunStore.open_readonly(run) as store:
        stored = store.judgements("llm-judge:smollm2-135m")
    assert [(j.item_index, j.sample_index) for j in stored] == [(0, 0), (1, 0), (2, 0)]
    assert all(j.prompt_tokens > 20 and j.completion_tokens == 1 for j in stored)
    missing = runner.invoke(main, ["bench", "judge", str(tmp_path / "no.db"), "--judge-model", "x"])
    assert missing.exit_code == 1 and "holds no run" in missing.output
