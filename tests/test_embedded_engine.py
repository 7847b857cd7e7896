"""The embedded llama.cpp engine on the real SmolLM2-135M model, with short generations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.types import GenerationRequest, SampleDelta, SampleFinished
from ponder.errors import ContextOverflowError, EngineError, InvalidRequestError

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "Write a short poem about the sea."}]


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(smollm2_path, n_ctx=2048, max_sequences=8)
    yield engine
    engine.close()


def chat(**params: object) -> GenerationRequest:
    return GenerationRequest.chat(QUESTION, **params)


async def test_n_samples_share_one_prompt_evaluation(engine: EmbeddedEngine) -> None:
    request = chat(n=4, max_tokens=12, temperature=1.0, seed=3)
    generation = await engine.generate(request)
    assert [c.index for c in generation.completions] == [0, 1, 2, 3]
    prompt = engine.tokenize_request(request)
    assert generation.usage.prompt_tokens == len(prompt)  # counted once, not n times
    assert generation.usage.completion_tokens == sum(
        c.completion_tokens for c in generation.completions
    )
    for c in generation.completions:
        assert 1 <= c.completion_tokens <= 12
        assert c.finish_reason in ("stop", "length")
        assert c.finish_reason == "stop" or c.completion_tokens == 12
    assert generation.timings.prompt_s is not None and generation.timings.total_s > 0
    assert len({c.text for c in generation.completions}) > 1  # temperature 1: samples differ


async def test_a_seed_reproduces_the_samples(engine: EmbeddedEngine) -> None:
    first = await engine.generate(chat(n=3, max_tokens=16, temperature=1.0, seed=11))
    again = await engine.generate(chat(n=3, max_tokens=16, temperature=1.0, seed=11))
    other = await engine.generate(chat(n=3, max_tokens=16, temperature=1.0, seed=12))
    texts = [c.text for c in first.completions]
    assert texts == [c.text for c in again.completions]
    assert texts != [c.text for c in other.completions]
    assert len(set(texts)) == 3  # each sample has its own seed (seed + index)


async def test_greedy_samples_agree_and_match_top_logprob(engine: EmbeddedEngine) -> None:
    generation = await engine.generate(chat(n=2, max_tokens=8, temperature=0.0, top_logprobs=3))
    a, b = generation.completions
    assert a.text == b.text
    assert a.logprobs is not None and len(a.logprobs) >= 1
    for entry in a.logprobs:
        assert entry.logprob <= 0.0
        assert len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(tops[0], abs=1e-5)


async def test_logprobs_without_alternatives(engine: EmbeddedEngine) -> None:
    generation = await engine.generate(chat(n=1, max_tokens=6, logprobs=True, ignore_eos=True))
    (c,) = generation.completions
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens == 6
    assert all(e.top_logprobs == [] and e.logprob <= 0 for e in c.logprobs)
    assert "".join(e.token for e in c.logprobs) == c.text


async def test_streamed_deltas_add_up_to_the_result(engine: EmbeddedEngine) -> None:
    handle = engine.start(chat(n=3, max_tokens=10, seed=5))
    texts = ["", "", ""]
    tokens = [0, 0, 0]
    finished = set()
    async for event in handle.events():
        if isinstance(event, SampleDelta):
            assert event.index not in finished
            texts[event.index] += event.text
            tokens[event.index] += event.tokens
        else:
            assert isinstance(event, SampleFinished)
            finished.add(event.completion.index)
    generation = await handle.result()
    assert finished == {0, 1, 2}
    assert texts == [c.text for c in generation.completions]
    assert tokens == [c.completion_tokens for c in generation.completions]


async def test_cancel_one_sample_keeps_the_others_and_counts_its_tokens(
    engine: EmbeddedEngine,
) -> None:
    handle = engine.start(chat(n=3, max_tokens=40, ignore_eos=True))
    async for event in handle.events():
        if isinstance(event, SampleDelta) and event.index == 1:
            handle.cancel(1)
            break
    generation = await handle.result()
    reasons = [c.finish_reason for c in generation.completions]
    assert reasons == ["length", "cancelled", "length"]
    cancelled = generation.completions[1]
    assert 1 <= cancelled.completion_tokens < 40
    assert generation.usage.completion_tokens == 80 + cancelled.completion_tokens


async def test_cancelling_the_caller_cancels_the_request(engine: EmbeddedEngine) -> None:
    handle = engine.start(chat(n=2, max_tokens=200, ignore_eos=True))
    waiter = asyncio.ensure_future(handle.result())
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    generation = await handle.result()  # the request itself ended, with what it had made
    assert {c.finish_reason for c in generation.completions} == {"cancelled"}
    assert 0 < generation.usage.completion_tokens < 400
    after = await engine.generate(chat(n=1, max_tokens=4, ignore_eos=True))
    assert after.completions[0].completion_tokens == 4  # the engine keeps serving


async def test_a_cancelled_request_is_answered_before_a_new_prompt_is_evaluated(
    engine: EmbeddedEngine,
) -> None:
    """A caller stopping at a deadline gets its samples back at once, not after the prompt of a
    request that reached the worker at the same time (longer than many decoding steps)."""
    running = engine.start(chat(n=2, max_tokens=400, ignore_eos=True))
    await anext(running.events())
    long_question = [{"role": "user", "content": "word " * 900}]
    loop = asyncio.get_running_loop()
    with engine._batcher._cv:  # both reach the worker in the same turn of its loop
        newcomer = engine.start(GenerationRequest.chat(long_question, n=1, max_tokens=2))
        running.cancel()
    cancelled = await running.result()
    answered_at = loop.time()
    assert {c.finish_reason for c in cancelled.completions} == {"cancelled"}
    await anext(newcomer.events())
    waited = loop.time() - answered_at
    generation = await newcomer.result()
    assert generation.usage.prompt_tokens > 800 and generation.timings.prompt_s is not None
    # The newcomer's prompt was evaluated after the cancelled request was answered, not before.
    assert waited >= 0.5 * generation.timings.prompt_s


async def test_concurrent_requests_decode_in_the_same_batch(engine: EmbeddedEngine) -> None:
    """Continuous batching: a request that arrives later starts before the first one ends."""
    first = engine.start(chat(n=2, max_tokens=60, ignore_eos=True))
    await anext(first.events())  # the first request is decoding
    second = engine.start(chat(n=2, max_tokens=4, ignore_eos=True))
    done_second = await second.result()
    assert not first.done, "the second request had to wait for the first to finish"
    done_first = await first.result()
    assert all(c.finish_reason == "length" for c in done_first.completions)
    assert all(c.completion_tokens == 4 for c in done_second.completions)


async def test_a_request_waits_for_kv_capacity_then_runs(smollm2_path: Path) -> None:
    small = EmbeddedEngine(smollm2_path, n_ctx=256, max_sequences=4)
    try:
        request = chat(n=2, max_tokens=80, ignore_eos=True)  # ~200 cells: one at a time fits
        a, b = await asyncio.gather(small.generate(request), small.generate(request))
        assert b.timings.queued_s > 0 or a.timings.queued_s > 0
        for g in (a, b):
            assert [c.completion_tokens for c in g.completions] == [80, 80]
    finally:
        await small.aclose()


async def test_stop_strings_cut_the_text(engine: EmbeddedEngine) -> None:
    plain = await engine.generate(chat(n=1, max_tokens=30, temperature=0.0))
    text = plain.completions[0].text
    stop = text.strip().split()[1]  # a word the greedy sample is known to contain
    cut = await engine.generate(chat(n=1, max_tokens=30, temperature=0.0, stop=[stop]))
    (c,) = cut.completions
    assert c.finish_reason == "stop"
    assert stop not in c.text
    assert text.startswith(c.text)


async def test_raw_prompt(engine: EmbeddedEngine) -> None:
    request = GenerationRequest(prompt="The capital of France is", params={"max_tokens": 5})
    generation = await engine.generate(request)
    assert generation.completions[0].completion_tokens >= 1
    assert generation.usage.prompt_tokens == len(engine.tokenize_request(request))


async def test_context_overflow_is_a_clear_error(engine: EmbeddedEngine) -> None:
    long_text = "word " * 3000
    with pytest.raises(ContextOverflowError, match="context window"):
        engine.start(GenerationRequest(prompt=long_text, params={"max_tokens": 8}))
    with pytest.raises(ContextOverflowError, match="KV cells"):
        engine.start(chat(n=8, max_tokens=1000))
    with pytest.raises(InvalidRequestError, match="max_sequences"):
        engine.start(chat(n=9, max_tokens=4))


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValidationError, match="n"):
        chat(n=0)
    with pytest.raises(ValidationError, match="temperature"):
        chat(temperature=-1)
    with pytest.raises(ValidationError, match="exactly one"):
        GenerationRequest()
    with pytest.raises(ValidationError, match="empty"):
        GenerationRequest(messages=())


async def test_a_closed_engine_refuses_work(smollm2_path: Path) -> None:
    engine = EmbeddedEngine(smollm2_path, n_ctx=512, max_sequences=2)
    await engine.aclose()
    with pytest.raises(EngineError, match="closed"):
        engine.start(chat(n=1, max_tokens=2))


def test_a_missing_or_broken_model_file(tmp_path: Path) -> None:
    from ponder.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        EmbeddedEngine(tmp_path / "nope.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(EngineError, match="could not load"):
        EmbeddedEngine(broken)
