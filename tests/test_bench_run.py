"""The sampling run: what it asks the engine for, what it stores, how it resumes, how it fails,
and the CLI. The resume guarantee is tested for real: `ponder bench run` on SmolLM2, killed with
SIGKILL mid-run, then started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ponder.bench.datasets import Dataset, load_dataset, parse_dataset
from ponder.bench.items import JsonlFields
from ponder.bench.run import (
    BenchRunError,
    contiguous_runs,
    make_config,
    sample_run,
    sample_seed,
)
from ponder.bench.store import NO_ANSWER, RunStore, SampleRecord
from ponder.cli import main
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    Timings,
    Usage,
)
from ponder.errors import EngineError
from tests.conftest import TEST_HOME
from tests.scripted_engine import ScriptedEngine

SAMPLES = 4


def dataset(tmp_path: Path, items: int = 3) -> Dataset:
    path = tmp_path / "tiny.jsonl"
    rows = [{"q": f"What is {i} + 1?", "a": i + 1} for i in range(items)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return load_dataset(parse_dataset(str(path), fields=JsonlFields(prompt="q", answer="a")))


class SeededScript:
    """Texts as a seeded engine would give them: sample i of a request with seed s writes answer
    number (s + i) % 4, so a sample's text depends on its seed only: the right answer, two ways
    of writing the same wrong answer, or no answer."""

    def __init__(self) -> None:
        self._request: GenerationRequest | None = None
        self._index = 0

    def __call__(self, request: GenerationRequest, k: int) -> str:
        self._index = self._index + 1 if request is self._request else 0
        self._request = request
        question = str(request.messages[-1].content) if request.messages else ""
        right = int(question.split()[2]) + 1
        texts = [
            f"So it is \\boxed{{{right}}}",
            "I think \\boxed{0.5}",
            "I think \\boxed{\\frac{1}{2}}",
            "no idea",
        ]
        return texts[((request.params.seed or 0) + self._index) % 4]


def scripted() -> ScriptedEngine:
    return ScriptedEngine(SeededScript(), logprobs=lambda k, i, word: -0.25 * (i + 1))


def open_store(path: Path, data: Dataset, **settings: object) -> RunStore:
    options: dict[str, object] = {"model": "scripted", "engine": "local", "samples": SAMPLES}
    options.update(settings)
    config = make_config(data, max_tokens=32, **options)  # type: ignore[arg-type]
    return RunStore.create_or_resume(path, config, data.items)


# --- the loop on a scripted engine ------------------------------------------------------------


async def test_a_run_draws_grades_and_stores_every_sample(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    engine = scripted()
    seen: list[SampleRecord] = []
    with open_store(tmp_path / "run.db", data, seed=100) as store:
        summary = await sample_run(store, data, engine, concurrency=2, on_sample=seen.append)
        assert summary.complete and summary.drawn == 12 and summary.samples == 12
        assert summary.failed == 0 and len(seen) == 12
        requests = sorted(engine.requests, key=lambda r: r.params.seed or 0)
        assert [(r.params.n, r.params.seed, r.params.top_logprobs) for r in requests] == [
            (4, 100, 5),
            (4, 104, 5),
            (4, 108, 5),
        ]
        assert requests[0].messages == data.items[0].prompt
        samples = store.samples(1)
        assert [s.sample_index for s in samples] == [0, 1, 2, 3]
        assert [s.seed for s in samples] == [104, 105, 106, 107]
        assert [s.answer for s in samples] == ["2", "0.5", "1/2", None]
        assert [s.correct for s in samples] == [True, False, False, False]
        groups = [s.answer_group for s in samples]  # ids in order of finishing; 0.5 and 1/2 agree
        assert groups[1] == groups[2] != groups[0] and {*groups} == {0, 1, NO_ANSWER}
        assert store.prompt_tokens() == [10, 10, 10]
        first = samples[0]
        assert first.completion_tokens == 4 and first.finish_reason == "stop"
        np.testing.assert_allclose(first.token_confidence, [0.25, 0.5, 0.75, 1.0])
        np.testing.assert_allclose(first.token_logprob, [-0.25, -0.5, -0.75, -1.0])
        arrays = store.load_arrays()
        assert arrays.present.all() and arrays.correct.sum() == 3


async def complete_run(tmp_path: Path) -> tuple[Dataset, Path]:
    """A run drawn to the end: its dataset and its store's path."""
    data = dataset(tmp_path)
    path = tmp_path / "run.db"
    with open_store(path, data) as store:
        await sample_run(store, data, scripted())
    return data, path


async def test_a_resumed_run_draws_only_the_missing_samples_with_their_own_seeds(
    tmp_path: Path,
) -> None:
    data, path = await complete_run(tmp_path)
    with RunStore.open_readonly(path) as done:
        before = {(s.item_index, s.sample_index): s for s in done.samples()}
    with sqlite3.connect(path) as connection:
        connection.execute(
            "DELETE FROM samples WHERE (item_index = 0 AND sample_index IN (1, 2, 3)) "
            "OR (item_index = 2 AND sample_index IN (0, 2))"
        )
    engine = scripted()
    with open_store(path, data) as store:
        assert store.missing() == {0: [1, 2, 3], 2: [0, 2]}
        summary = await sample_run(store, data, engine)
        assert summary.drawn == 5 and summary.complete
        asked = sorted((r.params.seed, r.params.n) for r in engine.requests)
        assert asked == [(1, 3), (8, 1), (10, 1)]  # one request per contiguous run of samples
        after = {(s.item_index, s.sample_index): s for s in store.samples()}
    assert len(after) == 12
    assert {key: s.text for key, s in after.items()} == {key: s.text for key, s in before.items()}
    # answer groups continue from the stored ones: item 2's new "1/2" joins its stored "0.5"
    assert after[(2, 2)].answer == "1/2" and after[(2, 1)].answer == "0.5"
    assert after[(2, 2)].answer_group == after[(2, 1)].answer_group
    assert all(s.seed == sample_seed(store.config, *key) for key, s in after.items())


async def test_a_complete_item_killed_before_its_prompt_size_was_stored_gets_it(
    tmp_path: Path,
) -> None:
    # A kill between an item's last stored sample and the end of its request leaves the item
    # complete without a prompt size; the next run, with nothing left to draw, fills it in.
    data, path = await complete_run(tmp_path)
    with RunStore.open_readonly(path) as done:
        sizes = done.prompt_tokens()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE items SET prompt_tokens = NULL WHERE item_index = 1")
    engine = scripted()
    with open_store(path, data) as store:
        summary = await sample_run(store, data, engine)
        assert summary.drawn == 0 and not engine.requests
        refilled = store.prompt_tokens()
    assert refilled[0] == sizes[0] and refilled[2] == sizes[2]
    assert refilled[1] is not None and refilled[1] > 0


def test_contiguous_runs_are_split_at_gaps_and_at_the_request_limit() -> None:
    assert contiguous_runs([5, 1, 2, 3, 7, 8], 32) == [[1, 2, 3], [5], [7, 8]]
    assert contiguous_runs(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert contiguous_runs([], 4) == []


class FlakyEngine(Engine):
    """Fails the first sample of every request, or (with `down`) refuses item 1 entirely."""

    def __init__(self, down: bool = False) -> None:
        self.model = "flaky"
        self.down = down
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=False,
            max_top_logprobs=0,
            streaming=False,
            prefix_caching=False,
            cancel_sample=False,
        )

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self.down and "1 + 1" in str(request.messages[-1].content if request.messages else ""):
            raise EngineError("the server went away")
        handle = GenerationHandle(request.params.n, lambda index: None)
        completions = [
            Completion(
                index=i,
                text="\\boxed{1}",
                finish_reason="error" if i == 0 else "stop",
                completion_tokens=2,
                latency_s=0.1,
                error="out of memory" if i == 0 else None,
            )
            for i in range(request.params.n)
        ]
        generation = Generation(
            model=self.model, completions=completions, usage=Usage(), timings=Timings()
        )
        asyncio.get_running_loop().call_soon(handle.finish, generation)
        return handle


async def test_failed_samples_are_not_stored_and_are_drawn_again(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with open_store(tmp_path / "run.db", data) as store:
        summary = await sample_run(store, data, FlakyEngine())
        assert summary.failed == 3 and summary.first_error == "out of memory"
        assert summary.samples == 9 and not summary.complete
        assert store.missing() == {0: [0], 1: [0], 2: [0]}
        again = await sample_run(store, data, scripted())
        assert again.complete and again.drawn == 3
        assert store.samples(0)[1].token_confidence.size == 0  # that engine gave no logprobs


async def test_an_engine_failure_stops_the_run_and_keeps_what_was_stored(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    with open_store(tmp_path / "run.db", data) as store:
        with pytest.raises(BenchRunError, match=r"item 1 failed: the server went away.*again"):
            await sample_run(store, data, FlakyEngine(down=True), concurrency=1)
        assert {s.item_index for s in store.samples()} == {0}


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    return CliRunner()


def test_bad_inputs_are_one_clear_line(runner: CliRunner, tmp_path: Path) -> None:
    tiny = dataset(tmp_path)
    assert tiny.spec.path is not None
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = str(tmp_path / "run.db")
    cases = [
        (["-d", str(tmp_path / "missing.jsonl")], "No such file"),
        (["-d", str(tiny.spec.path)], "has no field 'question' (its fields: 'q', 'a')"),
        (["-d", str(tiny.spec.path), "--prompt-field", "q"], "has no field 'answer'"),
        (["-d", str(empty)], "has no items"),
        (["-d", "gsm9k"], "Unknown dataset 'gsm9k'"),
        ([], "--dataset is required to start a new run"),
        (["-d", "gsm8k", "--engine", "http://127.0.0.1:9/v1"], "give --model"),
        (["-d", "gsm8k", "-m", "no-such-model"], "no-such-model"),
        (["-d", "gsm8k", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["-d", "gsm8k", "--limit", "0"], "limit must be at least 1"),
        (["-d", "gsm8k", "--skip", "-1"], "--skip must be at least 0"),
        (["-d", "gsm8k", "--skip", "100000"], "has 1319 items; skipping 100000 leaves none"),
        (["--skip", "2"], "--dataset is required to start a new run"),
        (["-d", "gsm8k", "-n", "0"], "samples: Input should be greater than or equal to 1"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["bench", "run", "-o", out, *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output.replace("\n", " "), (args, result.output)
        assert "Traceback" not in result.output
    assert not Path(out).exists()  # nothing half-made is left behind
    not_a_run = tmp_path / "notes.txt"
    not_a_run.write_text("notes " * 100)
    result = runner.invoke(main, ["bench", "run", "-o", str(not_a_run), "-d", "gsm8k"])
    assert result.exit_code == 1 and "not a ponder run store" in result.output


def test_a_run_store_from_another_model_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    data = dataset(tmp_path)
    assert data.spec.path is not None
    path = tmp_path / "run.db"
    open_store(path, data, model="smollm2-135m", samples=2).close()
    args = ["bench", "run", "-o", str(path), "-d", str(data.spec.path), "--prompt-field", "q"]
    args += ["--answer-field", "a", "-n", "2", "--max-tokens", "32"]
    result = runner.invoke(main, [*args, "-m", "qwen2.5-coder-0.5b"])
    assert result.exit_code == 1
    assert "model is 'smollm2-135m' there, 'qwen2.5-coder-0.5b' now" in result.output
    assert "Traceback" not in result.output
    changed = runner.invoke(main, [*args, "--temperature", "0.2"])
    assert changed.exit_code == 1 and "temperature is 0.8 there, 0.2 now" in changed.output


# --- the real thing: killed with SIGKILL, then resumed ----------------------------------------


def _stored_rows(path: Path) -> dict[tuple[int, int], tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT * FROM samples").fetchall()
    except sqlite3.OperationalError:  # the run has not created its tables yet
        return {}
    finally:
        connection.close()
    return {(row[0], row[1]): row for row in rows}


@pytest.mark.model
def test_a_run_killed_with_sigkill_resumes_without_loss_or_duplicates(
    tmp_path: Path, smollm2_path: Path
) -> None:
    items, samples = 6, 4
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"question": f"What is {i} + 7?", "answer": i + 7}) for i in range(items)
        )
    )
    out = tmp_path / "run.db"
    command = [sys.executable, "-c", "from ponder.cli import main; main()", "bench", "run"]
    command += ["-d", str(path), "-m", "smollm2-135m", "-n", str(samples), "--max-tokens", "24"]
    command += ["--seed", "7", "-o", str(out)]
    env = {**os.environ, "PONDER_HOME": str(TEST_HOME)}

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while (
        len(_stored_rows(out)) < samples and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    before = _stored_rows(out)
    assert samples <= len(before) < items * samples, "the run ended before it could be killed"

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{items * samples}/{items * samples} stored (complete)" in resumed.stdout
    after = _stored_rows(out)
    assert sorted(after) == [(i, j) for i in range(items) for j in range(samples)]
    for key, row in before.items():
        assert after[key] == row  # finished samples survive the kill unchanged
    with RunStore.open_readonly(out) as store:
        stored = store.samples()
        assert len(stored) == items * samples
        assert all(s.seed == 7 + s.item_index * samples + s.sample_index for s in stored)
        for s in stored:  # a sample ended by end-of-text counts that token, without logprobs
            assert s.token_confidence.size > 0
            assert s.token_confidence.size in (s.completion_tokens, s.completion_tokens - 1)
        assert all(s.latency_s > 0 for s in stored)
        assert all(tokens is not None and tokens > 0 for tokens in store.prompt_tokens())
    assert not Path(f"{out}-wal").exists()

    again = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    summary = json.loads(again.stdout)
    assert summary["drawn"] == 0 and summary["samples"] == items * samples


@pytest.mark.model
def test_a_run_through_a_remote_openai_compatible_server(
    runner: CliRunner, tmp_path: Path, server_url: str
) -> None:
    """Peers side by side: the same items sampled through the remote engine land in the same
    kind of store, with token confidences for DeepConf."""
    dataset(tmp_path, items=2)
    out = tmp_path / "remote.db"
    args = ["bench", "run", "-o", str(out), "-d", str(tmp_path / "tiny.jsonl"), "-e", server_url]
    args += ["-m", "smollm2", "-n", "2", "--max-tokens", "8", "--seed", "1", "-q", "--json"]
    result = runner.invoke(main, [*args, "--prompt-field", "q", "--answer-field", "a"])
    assert result.exit_code == 0, result.output
    store = RunStore.open_readonly(out)
    arrays = store.load_arrays()
    assert store.config.engine == server_url and store.config.model == "smollm2"
    assert arrays.present.all() and arrays.tokens.sum() > 0
    spoke = arrays.tokens > 0  # this tiny model sometimes ends at once: nothing to score then
    assert not np.isnan(arrays.confidence["lowest_group"][spoke]).any()
