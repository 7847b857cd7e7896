"""A `Session` is one strategy run's account with the engine: every sample a strategy, verifier or
refiner draws goes through it, so the budget is enforced, usage is counted and the trace is kept
in one place.

Budget rules. `max_samples` is exact: a request asks for at most the samples left. `max_tokens`
is checked as tokens stream in: once the total reaches it, the running samples are cancelled;
tokens already in flight (at most a step per running sample) are still counted, honestly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ponder.answers import extract_answer
from ponder.budget import Budget, BudgetExhausted, Limit
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Completion,
    Generation,
    GenerationRequest,
    Message,
    SampleDelta,
    SampleEvent,
    SampleFinished,
    SamplingParams,
    Usage,
)
from ponder.strategies.result import Candidate, Result, TraceStep

if TYPE_CHECKING:
    from ponder.verifiers.base import Verifier

EventCallback = Callable[[SampleEvent], None]
Watch = Callable[[int, SampleDelta], bool]
"""Called with (sample index in the request, delta); returning True cancels that sample."""
Enough = Callable[[list[Completion]], bool]
"""Called with the samples finished so far; returning True cancels the rest of the request."""


class Session:
    def __init__(
        self,
        engine: Engine,
        *,
        strategy: str,
        budget: Budget | None = None,
        sampling: SamplingParams | None = None,
        on_event: EventCallback | None = None,
        verifiers: Mapping[str, Verifier] | None = None,
    ) -> None:
        self.engine = engine
        self.verifiers = dict(verifiers or {})
        self.strategy = strategy
        self.budget = budget or Budget()
        self.sampling = sampling or SamplingParams()
        self.on_event = on_event
        self.usage = Usage()
        self.samples = 0
        self.stopped_by: Limit | None = None
        self.trace: list[TraceStep] = []
        self.warnings: list[str] = []
        self._started = time.perf_counter()
        self._running: set[GenerationHandle] = set()
        self._streaming = 0

    # --- the budget --------------------------------------------------------------------------
    @property
    def samples_left(self) -> int | None:
        cap = self.budget.max_samples
        return None if cap is None else max(0, cap - self.samples)

    @property
    def tokens_left(self) -> int | None:
        cap = self.budget.max_tokens
        return None if cap is None else max(0, cap - self._spent())

    def _spent(self) -> int:
        """Tokens generated so far: finished requests' usage plus what running ones streamed."""
        return self.usage.completion_tokens + self._streaming

    @property
    def exhausted(self) -> bool:
        """True once any limit is reached."""
        return self.stopped_by is not None or self._limit() is not None

    def _limit(self) -> Limit | None:
        if self.samples_left == 0:
            return "max_samples"
        if self.tokens_left == 0:
            return "max_tokens"
        return None

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    # --- drawing samples ---------------------------------------------------------------------
    async def generate(
        self,
        messages: Sequence[Message],
        n: int | None = None,
        *,
        step: str = "sample",
        engine: Engine | None = None,
        continue_final: bool = False,
        watch: Watch | None = None,
        enough: Enough | None = None,
        **overrides: Any,
    ) -> Generation:
        """Draw up to `n` samples (default: the session's sampling n) within the budget.

        Raises `BudgetExhausted` when nothing may be drawn any more. `overrides` replace sampling
        parameters for this request (max_tokens, temperature, stop, logprobs, ...). Safe to call
        concurrently: samples are reserved when a request starts, and the token limit is checked
        against the tokens every running request has streamed so far.
        """
        _, generation = await self._generate(
            messages, n, step, engine, continue_final, watch, enough, overrides
        )
        return generation

    async def sample(
        self,
        messages: Sequence[Message],
        n: int | None = None,
        *,
        step: str = "sample",
        engine: Engine | None = None,
        continue_final: bool = False,
        watch: Watch | None = None,
        enough: Enough | None = None,
        **overrides: Any,
    ) -> list[Candidate]:
        """`generate`, then extract each sample's final answer into a `Candidate` numbered by its
        position among all samples of the session."""
        first, generation = await self._generate(
            messages, n, step, engine, continue_final, watch, enough, overrides
        )
        return [
            Candidate.from_completion(c, extract_answer(c.text), first + i)
            for i, c in enumerate(generation.completions)
        ]

    async def _generate(
        self,
        messages: Sequence[Message],
        n: int | None,
        step: str,
        engine: Engine | None,
        continue_final: bool,
        watch: Watch | None,
        enough: Enough | None,
        overrides: dict[str, Any],
    ) -> tuple[int, Generation]:
        limit = self.stopped_by or self._limit()
        if limit is not None:
            self.stopped_by = limit
            raise BudgetExhausted(limit)
        params = self.sampling.model_copy(update=overrides)
        wanted = n or params.n
        samples_left = self.samples_left
        n = wanted if samples_left is None else min(wanted, samples_left)
        update: dict[str, Any] = {"n": n}
        tokens_left = self.tokens_left
        if tokens_left is not None:
            update["max_tokens"] = min(params.max_tokens, tokens_left)
        first = self.samples
        if params.seed is not None:  # sample k of the session always gets seed + k
            update["seed"] = params.seed + first
        params = SamplingParams.model_validate({**params.model_dump(), **update})
        request = GenerationRequest(
            messages=tuple(messages), params=params, continue_final=continue_final
        )
        handle = (engine or self.engine).start(request)  # may raise: nothing reserved yet
        self.samples += n
        generation = await self._follow(handle, n, watch, enough)
        self.usage = self.usage + generation.usage
        self.warnings.extend(w for w in generation.warnings if w not in self.warnings)
        self.record(
            step,
            tokens=generation.usage.completion_tokens,
            n=n,
            finish=[c.finish_reason for c in generation.completions],
        )
        self.stopped_by = self.stopped_by or self._limit()
        return first, generation

    async def _follow(
        self, handle: GenerationHandle, n: int, watch: Watch | None, enough: Enough | None
    ) -> Generation:
        """Relay a request's events, enforce the token limit across all running requests, and
        apply the strategy's per-sample (`watch`) and whole-request (`enough`) stopping rules."""
        cap = self.budget.max_tokens
        finished: list[Completion] = []
        streamed = 0
        self._running.add(handle)
        try:
            async for event in handle.events():
                if self.on_event is not None:
                    self.on_event(event)
                if isinstance(event, SampleDelta):
                    streamed += event.tokens
                    self._streaming += event.tokens
                    if cap is not None and self._spent() >= cap:
                        self.stopped_by = "max_tokens"
                        for running in self._running:
                            running.cancel()
                    elif watch is not None and watch(event.index, event):
                        handle.cancel(event.index)
                elif isinstance(event, SampleFinished):
                    finished.append(event.completion)
                    if enough is not None and len(finished) < n and enough(finished):
                        handle.cancel()
            return await handle.result()
        finally:
            self._running.discard(handle)
            self._streaming -= streamed
            if not handle.done:
                handle.cancel()

    def verifier(self, name: str) -> Verifier:
        """The verifier the caller configured under `name`, else that verifier's default set-up
        (judging with this session's engine). Verifiers that need data the caller did not give
        (a reference answer, tests) raise a clear `InvalidRequestError`."""
        if name not in self.verifiers:
            from ponder.verifiers.registry import default_verifier

            self.verifiers[name] = default_verifier(name, self)
        return self.verifiers[name]

    # --- bookkeeping -------------------------------------------------------------------------
    def record(self, step: str, *, tokens: int = 0, **detail: Any) -> None:
        self.trace.append(TraceStep(step=step, at_s=self.elapsed(), tokens=tokens, detail=detail))

    def result(
        self,
        answer: str | None,
        candidates: list[Candidate],
        votes: dict[str, float] | None = None,
        share: float | None = None,
    ) -> Result:
        """The strategy's result with everything the session counted. `share` defaults to the
        answer's part of all votes."""
        votes = votes or {}
        if share is None:
            total = sum(votes.values())
            share = votes.get(answer, 0.0) / total if answer is not None and total > 0 else 0.0
        return Result(
            strategy=self.strategy,
            model=self.engine.model,
            answer=answer,
            vote_share=min(1.0, share),
            votes=votes,
            candidates=candidates,
            usage=self.usage,
            latency_s=self.elapsed(),
            samples=self.samples,
            stopped_by=self.stopped_by,
            warnings=self.warnings,
            trace=self.trace,
        )
