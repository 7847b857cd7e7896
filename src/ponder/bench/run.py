"""The resumable sampling loop: for each item, in order, draw the samples the store lacks, grade
them and store each one as soon as it is finished.

Resuming is the normal path, not a special case: the loop always asks the store what is missing.
Sample j of item i always uses seed `seed + i * samples + j`, so a resumed item is asked for the
same samples it would have got in one go (missing samples are requested in contiguous runs, since
an engine gives sample k of a request seed + k). Up to `concurrency` items are in flight, so the
embedded engine's continuous batching always has work.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from ponder import __version__
from ponder.bench.datasets import Dataset
from ponder.bench.store import NO_ANSWER, FloatArray, RunConfig, RunStore, SampleRecord
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Completion,
    GenerationRequest,
    SampleFinished,
    SamplingParams,
    TokenLogprob,
)
from ponder.errors import PonderError
from ponder.planning.pricing import estimate_prompt_tokens

DEFAULT_TOP_LOGPROBS = 5
MAX_SAMPLES_PER_REQUEST = 32
"""The embedded engine's default `max_sequences`; longer runs of samples are split."""

PROMPT_ALLOWANCE = 1024
"""KV cells kept for the prompt when sizing requests to the embedded engine's context."""

OnSample = Callable[[SampleRecord], None]


class BenchRunError(PonderError):
    """Sampling stopped; the samples stored so far are kept and a rerun continues from there."""


class RunSummary(BaseModel):
    """What one `sample_run` call did."""

    items: int
    samples: int
    """Samples stored in the run now (all calls together)."""
    expected: int
    drawn: int
    """Samples drawn and stored by this call."""
    failed: int
    """Samples the engine reported as failed; not stored, so a rerun draws them again."""
    first_error: str | None
    completion_tokens: int
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return self.samples == self.expected


def make_config(
    dataset: Dataset,
    *,
    model: str,
    engine: str,
    samples: int,
    max_tokens: int,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 1.0,
    top_k: int = 0,
    top_logprobs: int = DEFAULT_TOP_LOGPROBS,
) -> RunConfig:
    """The config a run of `dataset` with these settings is stored (and compared) under."""
    return RunConfig(
        dataset=dataset.spec,
        dataset_fingerprint=dataset.fingerprint(),
        items=len(dataset.items),
        model=model,
        engine=engine,
        samples=samples,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        top_logprobs=top_logprobs,
        prompt_template=dataset.prompt_template,
        ponder_version=__version__,
    )


def sample_seed(config: RunConfig, item_index: int, sample_index: int) -> int:
    """The seed of one sample, fixed by its position so reruns reproduce it."""
    return config.seed + item_index * config.samples + sample_index


def contiguous_runs(indices: Sequence[int], longest: int) -> list[list[int]]:
    """Sorted indices split into runs of consecutive numbers, none longer than `longest`."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and runs[-1][-1] == index - 1 and len(runs[-1]) < longest:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def token_confidences(logprobs: Sequence[TokenLogprob] | None) -> FloatArray:
    """DeepConf's token confidence C_i = -mean of the top-k logprobs at token i (the sampled
    token's own logprob when no alternatives came back); empty without logprobs."""
    if not logprobs:
        return np.empty(0, dtype=np.float32)
    return np.fromiter(
        (
            -math.fsum(t.logprob for t in entry.top_logprobs) / len(entry.top_logprobs)
            if entry.top_logprobs
            else -entry.logprob
            for entry in logprobs
        ),
        dtype=np.float32,
        count=len(logprobs),
    )


def token_logprobs(logprobs: Sequence[TokenLogprob] | None) -> FloatArray:
    if not logprobs:
        return np.empty(0, dtype=np.float32)
    return np.fromiter((e.logprob for e in logprobs), dtype=np.float32, count=len(logprobs))


async def sample_run(
    store: RunStore,
    dataset: Dataset,
    engine: Engine,
    *,
    concurrency: int = 2,
    on_sample: OnSample | None = None,
) -> RunSummary:
    """Draw, grade and store every sample the run still lacks. An engine failure for a whole
    request stops the run (stored samples stay); a single failed sample is skipped and counted,
    and a rerun draws it again."""
    if concurrency < 1:
        raise BenchRunError(f"concurrency must be at least 1, got {concurrency}")
    runner = _Runner(store, dataset, engine, on_sample)
    started = time.perf_counter()
    queue = deque(store.missing().items())

    async def worker() -> None:
        while queue:
            item_index, missing = queue.popleft()
            await runner.sample_item(item_index, missing)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(queue))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise _first(errors) from None
    _fill_prompt_tokens(store, dataset, engine)
    config = store.config
    return RunSummary(
        items=config.items,
        samples=store.sample_count(),
        expected=config.items * config.samples,
        drawn=runner.drawn,
        failed=runner.failed,
        first_error=runner.first_error,
        completion_tokens=runner.completion_tokens,
        elapsed_s=time.perf_counter() - started,
    )


def _first(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first one that is not a cancellation."""
    leaves: list[BaseException] = []

    def walk(group: BaseExceptionGroup[BaseException]) -> None:
        for error in group.exceptions:
            if isinstance(error, BaseExceptionGroup):
                walk(error)
            else:
                leaves.append(error)

    walk(errors)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


def _fill_prompt_tokens(store: RunStore, dataset: Dataset, engine: Engine) -> None:
    """Complete items without a stored prompt size (a run killed after an item's last sample
    was stored but before its request ended) get the engine's count of the prompt: exact where
    the engine tokenizes, else an estimate from its length."""
    incomplete = store.missing()
    for item_index, tokens in enumerate(store.prompt_tokens()):
        if tokens is None and item_index not in incomplete:
            request = GenerationRequest(messages=dataset.items[item_index].prompt)
            store.set_prompt_tokens(item_index, estimate_prompt_tokens(engine, request)[0])


def _samples_per_request(engine: Engine, max_tokens: int) -> int:
    """How many samples to ask for at once: what the engine decodes together, and (for the
    embedded engine, whose KV cache the samples share) what fits its context next to a prompt."""
    limit = min(
        int(getattr(engine, "max_sequences", MAX_SAMPLES_PER_REQUEST)), MAX_SAMPLES_PER_REQUEST
    )
    n_ctx = getattr(engine, "n_ctx", None)
    if isinstance(n_ctx, int):
        limit = min(limit, (n_ctx - PROMPT_ALLOWANCE) // max_tokens)
    return max(1, limit)


def _cancel_on_failure(handle: GenerationHandle) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that stops the request when storing its samples failed (reading the
    task's exception here also keeps asyncio from reporting it as never retrieved)."""

    def callback(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            handle.cancel()

    return callback


class _Runner:
    """The per-run state the workers share: the store, the counters, and the answer groups of
    the items in flight (each item is handled by one worker at a time)."""

    def __init__(
        self, store: RunStore, dataset: Dataset, engine: Engine, on_sample: OnSample | None
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.engine = engine
        self.on_sample = on_sample
        self.config = store.config
        self.per_request = _samples_per_request(engine, self.config.max_tokens)
        self.drawn = 0
        self.failed = 0
        self.first_error: str | None = None
        self.completion_tokens = 0

    async def sample_item(self, item_index: int, missing: list[int]) -> None:
        item = self.dataset.items[item_index]
        groups = self.store.answer_groups(item_index)
        for run in contiguous_runs(missing, self.per_request):
            params = SamplingParams(
                n=len(run),
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                top_k=self.config.top_k,
                seed=sample_seed(self.config, item_index, run[0]),
                logprobs=True,
                top_logprobs=self.config.top_logprobs,
            )
            request = GenerationRequest(messages=item.prompt, params=params)
            stored: set[int] = set()
            try:
                handle = self.engine.start(request)
                # Samples are stored by a side task as they finish, while this one awaits the
                # request's result: cancelling that await cancels the request (and its outcome
                # is then consumed, so an engine closed under it leaves no stray error).
                consumer = asyncio.create_task(
                    self._consume(handle, item_index, run, groups, stored)
                )
                consumer.add_done_callback(_cancel_on_failure(handle))
                try:
                    generation = await handle.result()
                except BaseException:
                    consumer.cancel()
                    raise
                await consumer
            except PonderError as error:
                raise BenchRunError(
                    f"sampling item {item.id} failed: {error}. The samples stored so far are "
                    "kept; run the same command again to continue."
                ) from error
            for completion in generation.completions:  # engines that do not stream
                await self._store(item_index, run, completion, groups, stored)
            self.store.set_prompt_tokens(item_index, generation.usage.prompt_tokens)

    async def _consume(
        self,
        handle: GenerationHandle,
        item_index: int,
        run: list[int],
        groups: list[str],
        stored: set[int],
    ) -> None:
        try:
            async for event in handle.events():
                if isinstance(event, SampleFinished):
                    await self._store(item_index, run, event.completion, groups, stored)
        except PonderError:
            return  # the request failed: awaiting its result reports that

    async def _store(
        self,
        item_index: int,
        run: list[int],
        completion: Completion,
        groups: list[str],
        stored: set[int],
    ) -> None:
        if completion.index in stored:
            return
        stored.add(completion.index)
        if completion.finish_reason in ("error", "cancelled"):
            self.failed += 1
            if self.first_error is None:
                self.first_error = completion.error or completion.finish_reason
            return
        item = self.dataset.items[item_index]
        checker = self.dataset.checker
        grade = await checker.grade(completion.text, item)
        group = NO_ANSWER
        if grade.answer is not None:
            group = next(
                (g for g, known in enumerate(groups) if checker.same(known, grade.answer)), -1
            )
            if group < 0:
                groups.append(grade.answer)
                group = len(groups) - 1
        sample_index = run[completion.index]
        record = SampleRecord(
            item_index=item_index,
            sample_index=sample_index,
            seed=sample_seed(self.config, item_index, sample_index),
            text=completion.text,
            finish_reason=completion.finish_reason,
            answer=grade.answer,
            answer_group=group,
            score=grade.score,
            correct=grade.correct,
            grade_detail=grade.detail,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            token_confidence=token_confidences(completion.logprobs),
            token_logprob=token_logprobs(completion.logprobs),
        )
        self.store.add_sample(record)
        self.drawn += 1
        self.completion_tokens += completion.completion_tokens
        if self.on_sample is not None:
            self.on_sample(record)
