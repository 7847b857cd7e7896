"""`ponder tune`: the recommendation on synthetic measurements with known answers, the sweep and
the KV-cache cap on a fake engine, the report tables on a synthetic report, then the real
SmolLM2 through the CLI (tiny settings), with a second quantization made on the spot by
llama.cpp's own quantizer so the side-by-side path runs for real."""

from __future__ import annotations

import asyncio
import ctypes
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from ponder.cli import main
from ponder.cli.tune import _print_report
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.llama_model import import_llama_cpp, quiet_llama_logs
from ponder.engines.types import (
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    Timings,
    Usage,
)
from ponder.errors import EngineError, InvalidRequestError
from ponder.tuning import (
    Accuracy,
    Measurement,
    ModelFacts,
    ModelTune,
    TunePoint,
    TuneReport,
    TuneSettings,
    fitting_counts,
    fixed_work_request,
    measure,
    parse_counts,
    quantization_groups,
    recommend,
    sweep,
    tune_model,
)
from tests.conftest import TEST_HOME
from tests.scripted_engine import ScriptedEngine

SMOLLM2 = "smollm2-135m"


def synthetic(n: int, decode_tok_s: float, first_token_s: float = 0.5) -> Measurement:
    """A measurement of 101 tokens per sample whose decode speed is exactly `decode_tok_s`."""
    return Measurement(
        n=n, tokens=101, wall_s=first_token_s + 100 / decode_tok_s, first_token_s=first_token_s
    )


# Per-sample decode slows as n grows; the 201-token answer latency is 0.5 + 200 / decode:
# n=1 4.5 s, n=2 4.94 s, n=4 5.5 s, n=8 8.5 s, n=16 17.2 s. Throughput (n x 101 / wall):
# 40.4, 74.2, 134.7, 179.6, 182.9 tokens/s.
CURVE = [synthetic(1, 50), synthetic(2, 45), synthetic(4, 40), synthetic(8, 25), synthetic(16, 12)]


def test_measurement_rates_and_latency() -> None:
    m = Measurement(n=4, tokens=11, wall_s=2.5, first_token_s=0.5)
    assert m.throughput_tok_s == pytest.approx(44 / 2.5)
    assert m.decode_tok_s == pytest.approx(10 / 2.0)
    assert m.latency_s(21) == pytest.approx(0.5 + 20 / 5.0)
    dumped = m.model_dump()
    assert dumped["throughput_tok_s"] == pytest.approx(17.6)
    assert dumped["decode_tok_s"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("target", "expected", "words"),
    [
        (6.0, 4, ["largest n", "5.5 s each", "n=8 would take 8.5 s"]),
        (8.5, 8, ["n=16 would take 17.2 s"]),
        (100.0, 16, ["no larger n was measured"]),
        (4.5, 1, ["n=2 would take 4.9 s"]),
    ],
)
def test_recommend_the_largest_n_within_the_latency_target(
    target: float, expected: int, words: list[str]
) -> None:
    pick = recommend(list(reversed(CURVE)), answer_tokens=201, latency_s=target)
    assert pick.n == expected
    for word in words:
        assert word in pick.reason


def test_recommend_none_when_no_n_meets_the_target() -> None:
    pick = recommend(CURVE, answer_tokens=201, latency_s=4.0)
    assert pick.n is None
    assert "even n=1 takes 4.5 s" in pick.reason


def test_without_a_target_the_smallest_n_near_the_best_throughput_wins() -> None:
    pick = recommend(CURVE, answer_tokens=201)
    assert pick.n == 8  # 179.6 tokens/s is within 5% of n=16's 182.9, at half the latency
    assert "within 5% of the best (182.9 tokens/s at n=16)" in pick.reason
    assert "8.7 s less latency" in pick.reason
    strict = recommend(CURVE, answer_tokens=201, tolerance=0.0)
    assert strict.n == 16
    assert "the most of any n measured" in strict.reason


def test_recommend_needs_measurements() -> None:
    with pytest.raises(InvalidRequestError, match="nothing was measured"):
        recommend([], answer_tokens=10)


def test_counts_beyond_the_kv_cache_are_skipped() -> None:
    kept, skipped = fitting_counts(
        [1, 2, 4, 8], prompt_tokens=100, tokens_per_sample=256, n_ctx=1200
    )
    assert (kept, skipped) == ([1, 2, 4], [8])


def test_parse_counts() -> None:
    assert parse_counts("4, 1,2,2") == (1, 2, 4)
    with pytest.raises(InvalidRequestError, match="list of n is empty"):
        parse_counts(" , ")
    with pytest.raises(InvalidRequestError, match="whole numbers"):
        parse_counts("1,two")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ns": ()}, "list of n is empty"),
        ({"ns": (0, 2)}, "every n must lie in 1..256"),
        ({"ns": (512,)}, "every n must lie in 1..256"),
        ({"latency_s": 0.0}, "latency target must be a positive"),
        ({"latency_s": -3.0}, "latency target must be a positive"),
        ({"tokens": 1}, "tokens must be at least 2"),
        ({"answer_tokens": 0}, "answer tokens must be at least 1"),
        ({"repeats": 0}, "repeats must be at least 1"),
        ({"accuracy_items": -1}, "accuracy items must be 0"),
        ({"n_ctx": 10}, "n_ctx must be at least 64"),
    ],
)
def test_bad_settings_fail_clearly(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        TuneSettings(**settings)  # type: ignore[arg-type]


def facts(name: str, base: str, quantization: str = "Q4_1") -> ModelFacts:
    return ModelFacts(
        name=name,
        path=Path(f"/models/{name}.gguf"),
        base=base,
        quantization=quantization,
        file_bytes=1000,
        parameters=10,
    )


def test_quantizations_group_by_base_model() -> None:
    a, b = facts("a", "SmolLM2 135M"), facts("b", "smollm2 135m", "Q8_0")
    other = facts("q", "Qwen2.5-Coder 0.5B")
    groups = quantization_groups([a, other, b])
    assert [[m.name for m in group] for group in groups] == [["a", "b"]]
    assert quantization_groups([a, other]) == []


class FixedWorkEngine(Engine):
    """Answers at once with every requested token (or `short` fewer per sample) and reports
    its prompt time; it records the n of every request."""

    def __init__(self, short: int = 0) -> None:
        self.model = "fixed"
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=False,
            max_top_logprobs=0,
            streaming=False,
            prefix_caching=True,
            cancel_sample=False,
        )
        self.short = short
        self.seen: list[int] = []

    def start(self, request: GenerationRequest) -> GenerationHandle:
        raise NotImplementedError

    async def generate(self, request: GenerationRequest) -> Generation:
        params = request.params
        self.seen.append(params.n)
        made = params.max_tokens - self.short
        completions = [
            Completion(
                index=i, text="x", finish_reason="length", completion_tokens=made, latency_s=0.0
            )
            for i in range(params.n)
        ]
        return Generation(
            model=self.model,
            completions=completions,
            usage=Usage(prompt_tokens=10, completion_tokens=params.n * made),
            timings=Timings(queued_s=0.0, prompt_s=0.0, total_s=0.0),
        )


async def test_sweep_interleaves_the_repeats_and_keeps_one_per_n() -> None:
    engine = FixedWorkEngine()
    seen: list[str] = []
    measured = await sweep(engine, [1, 2], tokens=4, repeats=2, on_progress=seen.append)
    assert engine.seen == [1, 2, 1, 2]
    assert [m.n for m in measured] == [1, 2]
    assert seen == ["fixed: n=1 (1/2)", "fixed: n=2 (1/2)", "fixed: n=1 (2/2)", "fixed: n=2 (2/2)"]


async def test_tune_model_skips_counts_the_cache_cannot_hold() -> None:
    engine = FixedWorkEngine()
    settings = TuneSettings(
        ns=(1, 2, 4), tokens=4, answer_tokens=16, latency_s=1e6, repeats=1, n_ctx=64
    )
    tuned = await tune_model(engine, facts("fixed", "Fixed 1M"), settings)
    # prompt 10 + n x 16 answer tokens: n=4 needs 74 cells of 64
    assert [p.measurement.n for p in tuned.points] == [1, 2]
    assert tuned.skipped_ns == [4]
    assert tuned.prompt_tokens == 10
    assert tuned.recommendation.n == 2
    assert all(point.within_target for point in tuned.points)
    assert engine.seen == [1, 1, 2]  # the warm-up, then each n once


async def test_an_engine_that_stops_early_cannot_be_tuned() -> None:
    with pytest.raises(EngineError, match="does not generate a fixed amount"):
        await measure(FixedWorkEngine(short=1), 2, 4)


async def test_an_engine_without_prompt_timings_cannot_be_tuned() -> None:
    engine = ScriptedEngine(["one two three four five six"])
    with pytest.raises(EngineError, match="prompt time"):
        await measure(engine, 2, 4)


def synthetic_report() -> TuneReport:
    settings = TuneSettings(ns=(1, 2), answer_tokens=201, latency_s=6.0)

    def tuned(name: str, quantization: str, slow: float, correct: int) -> ModelTune:
        curve = [synthetic(1, 50 / slow), synthetic(2, 45 / slow)]
        return ModelTune(
            model=facts(name, "SmolLM2 135M", quantization),
            prompt_tokens=120,
            points=[
                TunePoint(
                    measurement=m,
                    answer_latency_s=m.latency_s(201),
                    within_target=m.latency_s(201) <= 6.0,
                )
                for m in curve
            ],
            skipped_ns=[16],
            recommendation=recommend(curve, 201, 6.0),
            accuracy=Accuracy(dataset="gsm8k", items=4, correct=correct, max_tokens=64, wall_s=1),
        )

    models = [
        tuned("smollm2-135m", "Q4_1", 1.0, 1),
        tuned("/tmp/q/smollm2-q8.gguf", "Q8_0", 1.3, 2),
    ]
    return TuneReport(
        settings=settings,
        threads=2,
        load_average_start=0.1,
        load_average_end=0.2,
        models=models,
        quantization_groups=[[m.model.name for m in models]],
    )


def test_report_tables_show_recommendation_and_quantizations_side_by_side() -> None:
    console = Console(record=True, width=160)
    _print_report(console, synthetic_report())
    text = console.export_text()
    assert "Recommended: n=2" in text and "Recommended: n=1" in text
    assert "Not measured: n=16" in text
    assert "Quantizations of SmolLM2 135M" in text
    assert "smollm2-q8.gguf" in text and "Q8_0" in text and "Q4_1" in text
    assert "1/4 (25%)" in text and "2/4 (50%)" in text
    assert "Greedy accuracy: 2/4 (50%) on gsm8k" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "no-such-model"], "Unknown model 'no-such-model'"),
        (["-m", "./missing.gguf"], "No such file"),
        (["--latency", "0"], "latency target must be a positive"),
        (["--latency", "-1.5"], "latency target must be a positive"),
        (["--ns", ""], "list of n is empty"),
        (["--ns", ",,"], "list of n is empty"),
        (["--ns", "1,x"], "whole numbers"),
        (["--tokens", "1"], "tokens must be at least 2"),
    ],
)
def test_cli_bad_input_fails_before_loading_anything(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["tune", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "models").exists()  # nothing was pulled


@pytest.fixture(scope="module")
def smollm2_q8(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second quantization of SmolLM2 (Q8_0 from its Q4_1), made by llama.cpp in a second."""
    lib = import_llama_cpp()
    quiet_llama_logs(lib, False)
    out = tmp_path_factory.mktemp("quantized") / "smollm2-135m-q8_0.gguf"
    params = lib.llama_model_quantize_default_params()
    params.ftype = lib.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    rc = lib.llama_model_quantize(
        str(smollm2_path).encode(), str(out).encode(), ctypes.byref(params)
    )
    assert rc == 0
    return out


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, smollm2_path: Path) -> CliRunner:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    return CliRunner()


TINY = ["--tokens", "8", "--answer-tokens", "16", "--repeats", "1", "--threads", "2"]


@pytest.mark.model
def test_cli_measures_smollm2_and_recommends(runner: CliRunner) -> None:
    args = ["tune", "-m", SMOLLM2, "--ns", "1,2", *TINY, "--latency", "100000", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["ns"] == [1, 2]
    (tuned,) = report["models"]
    assert tuned["model"]["name"] == SMOLLM2
    assert tuned["model"]["base"] == "smollm2 135M"
    assert tuned["model"]["quantization"] == "Q4_1"
    assert tuned["prompt_tokens"] > 50
    points = tuned["points"]
    assert [p["measurement"]["n"] for p in points] == [1, 2]
    for point in points:
        m = point["measurement"]
        assert m["tokens"] == 8
        assert m["throughput_tok_s"] > 0 and m["decode_tok_s"] > 0
        assert 0 < m["first_token_s"] < m["wall_s"]
        assert point["answer_latency_s"] > m["first_token_s"]
        assert point["within_target"] is True
    assert tuned["recommendation"]["n"] == 2  # every n meets a 100000 s target: the largest
    assert tuned["accuracy"] is None
    assert report["quantization_groups"] == []


@pytest.mark.model
def test_cli_compares_two_quantizations_of_smollm2(runner: CliRunner, smollm2_q8: Path) -> None:
    args = ["tune", "-m", SMOLLM2, "-m", str(smollm2_q8), "--ns", "1", *TINY]
    result = runner.invoke(
        main, [*args, "--accuracy-items", "1", "--accuracy-max-tokens", "16", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [tuned["model"]["name"] for tuned in report["models"]]
    assert names == [SMOLLM2, str(smollm2_q8)]
    assert report["quantization_groups"] == [names]
    assert [t["model"]["quantization"] for t in report["models"]] == ["Q4_1", "Q8_0"]
    for tuned in report["models"]:
        assert tuned["recommendation"]["n"] == 1
        accuracy = tuned["accuracy"]
        assert accuracy["dataset"] == "gsm8k" and accuracy["items"] == 1
        assert accuracy["correct"] in (0, 1)


@pytest.mark.model
async def test_more_requests_than_sequence_slots_wait_their_turn(smollm2_path: Path) -> None:
    """Found by `ponder tune --ns 1 --accuracy-items 2`: requests waiting together for one free
    sequence slot were all admitted when it freed, and the worker thread died."""
    engine = EmbeddedEngine(smollm2_path, n_ctx=1024, max_sequences=1, n_threads=2)
    async with engine:
        first = engine.start(fixed_work_request(1, 24))  # holds the only slot for a while
        waiting = [engine.start(fixed_work_request(1, 4)) for _ in range(2)]
        done = await asyncio.wait_for(
            asyncio.gather(first.result(), *(handle.result() for handle in waiting)), timeout=120
        )
    assert [g.usage.completion_tokens for g in done] == [24, 4, 4]
