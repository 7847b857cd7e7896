"""Judging a run's stored samples (`ponder bench judge`): each sample judged once as the live
cascade judges it, stored with its cost, resumable, and read back as arrays for the cascade fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ponder.bench.judging import judge_arrays, judge_key, judge_run
from ponder.bench.store import Judgement, RunStore, RunStoreError
from ponder.engines.base import GenerationHandle
from ponder.engines.types import GenerationRequest
from ponder.errors import EngineError, InvalidRequestError
from ponder.planning.cascade import cascade_table, fit_cascade
from ponder.planning.pricing import TokenPrice
from ponder.planning.runs import load_run
from tests.plan_runs import Kind, write_store
from tests.scripted_engine import ScriptedEngine

SAMPLES = 4


def verdict(request: GenerationRequest, k: int) -> str:
    """Right answers (group 0, "answer 0") are judged Yes, the rest No."""
    return "Yes" if "Proposed solution:\nanswer 0" in text_of(request) else "No"


def text_of(request: GenerationRequest) -> str:
    return "\n".join(str(m.content) for m in request.messages or ())


def judge_engine() -> ScriptedEngine:
    engine = ScriptedEngine(verdict)
    engine.model = "big"
    return engine


class Broken(ScriptedEngine):
    def start(self, request: GenerationRequest) -> GenerationHandle:
        raise EngineError("the judge is down")


def small_run(path: Path) -> Path:
    kinds = [Kind([0, 0, 1, 1], 50, 9.0), Kind([1, 1, 0, 0], 50, 9.0)]
    return write_store(path, kinds, samples=SAMPLES)


async def test_samples_are_judged_once_each_and_stored_with_their_cost(tmp_path: Path) -> None:
    path = small_run(tmp_path / "small.db")
    engine = judge_engine()
    with RunStore.open_for_live(path) as store:
        first = await judge_run(store, engine, samples=2, limit=1)
        assert (first.asked, first.done, first.judged) == (2, 2, 2)
        assert first.verifier == judge_key("big") == "llm-judge:big"
        rest = await judge_run(store, engine)
        assert (rest.asked, rest.done, rest.judged) == (8, 8, 6)
        again = await judge_run(store, engine)
        assert again.judged == 0 and len(engine.requests) == 8  # nothing judged twice
        stored = store.judgements("llm-judge:big")
        assert store.verifiers_judged() == ["llm-judge:big"]
    assert [(j.item_index, j.sample_index, j.score) for j in stored] == [
        (0, 0, 1.0),
        (0, 1, 1.0),
        (0, 2, 0.0),
        (0, 3, 0.0),
        (1, 0, 0.0),
        (1, 1, 0.0),
        (1, 2, 1.0),
        (1, 3, 1.0),
    ]
    assert all(j.prompt_tokens == 10 and j.completion_tokens == 1 for j in stored)
    assert all(j.seconds >= 0 for j in stored) and rest.mean_score == 0.5
    # The judge reads the item's question and the sample's text, and answers in one token.
    request = engine.requests[0]
    assert "Question:\nq0?" in text_of(request) and request.params.max_tokens == 1
    assert request.params.temperature == 0.0


async def test_only_a_judge_of_every_sample_reaches_the_planner(tmp_path: Path) -> None:
    path = small_run(tmp_path / "small.db")
    partial = judge_engine()
    partial.model = "partial"
    with RunStore.open_for_live(path) as store:
        await judge_run(store, judge_engine())
        await judge_run(store, partial, samples=2)
        arrays = judge_arrays(store, [0, 1])
        assert sorted(arrays) == ["llm-judge:big", "llm-judge:partial"]
        big, partial_scores = arrays["llm-judge:big"], arrays["llm-judge:partial"]
        assert big.complete and not partial_scores.complete  # "partial" left samples out
        assert np.isnan(partial_scores.score[:, 2:]).all()
        np.testing.assert_array_equal(big.score, [[1, 1, 0, 0], [0, 0, 1, 1]])
        np.testing.assert_array_equal(big.take([1]).score, [[0, 0, 1, 1]])
        assert judge_arrays(store, [1])["llm-judge:big"].score.shape == (1, SAMPLES)
        with pytest.raises(RunStoreError, match="already judged by llm-judge:big"):
            store.add_judgement(Judgement(0, 0, "llm-judge:big", 1.0, 1, 1, 0.1))
    # The cascade fit finds the judge of the small run by the large model's name.
    large = write_store(
        tmp_path / "large.db", [Kind([0] * SAMPLES, 500, 9.0)] * 2, model="big", samples=SAMPLES
    )
    per_token = TokenPrice(input_usd_per_mtok=0, output_usd_per_mtok=1)
    prices = {"tiny": per_token, "big": per_token, "partial": per_token}
    small_plan = load_run(path, prices=prices)
    large_plan = load_run(large, prices=prices)
    assert sorted(small_plan.judges) == ["llm-judge:big", "llm-judge:partial"]
    table = cascade_table(small_plan, large_plan, orderings=4)
    assert table.features == ("share", "confidence", "score")
    policy = fit_cascade(small_plan, large_plan, target=1.0, orderings=20)
    assert policy.feature == "score" and policy.expected.accuracy == 1.0
    # A judge that left samples out cannot be replayed: its model's cascade has no score.
    other = write_store(
        tmp_path / "other.db", [Kind([0] * SAMPLES, 500, 9.0)] * 2, model="partial", samples=4
    )
    other_plan = load_run(other, prices=prices)
    assert cascade_table(small_plan, other_plan, orderings=2).features == ("share", "confidence")


async def test_bad_requests_and_a_failing_judge_are_clear(tmp_path: Path) -> None:
    path = small_run(tmp_path / "small.db")
    with RunStore.open_for_live(path) as store:
        with pytest.raises(InvalidRequestError, match=r"--samples must lie in 1..4"):
            await judge_run(store, judge_engine(), samples=5)
        with pytest.raises(InvalidRequestError, match="--limit must be at least 1"):
            await judge_run(store, judge_engine(), limit=0)
        broken = Broken(verdict)
        broken.model = "big"
        with pytest.raises(InvalidRequestError, match="judging item 0 sample 0 failed"):
            await judge_run(store, broken)
        assert store.judgements("llm-judge:big") == []
