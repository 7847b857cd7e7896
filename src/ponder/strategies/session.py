"""A `Session` is one strategy run's account with the engine: every sample a strategy, verifier or
refiner draws goes through it, so the budget is enforced, usage is counted and the trace is kept
in one place.

Budget rules. `max_samples` is exact: a request asks for at most the samples left. `max_tokens`
is checked as tokens stream in: once the total reaches it, the running samples are cancelled;
tokens already in flight (the steps decoded before the cancellation reaches the engine) are still
counted, honestly.

`max_seconds` is a deadline the strategy's answer must meet, so sampling stops a little before
it: a reserve (`DEADLINE_RESERVE` of it) is kept for the strategy to decide, and since a
cancellation takes effect at the engine's next decoding step, sampling stops once the next step
(timed as tokens stream in) would run into that reserve. A loop timer does the same while
requests wait without streaming. Running samples are cancelled mid-generation and no new request
starts. Work that is not an engine request (a sandbox run, a math-verify comparison) is not
interrupted.

`max_usd` is priced with the session's `price`: per token (each request's max_tokens is capped at
what the dollars left buy, and the cost, prompt included, is checked on every delta) or per
machine hour (it becomes a deadline: the seconds the dollars buy).

Whatever the limit, a stopped request comes back as a partial `Generation` (cancelled samples
keep their text and tokens) and the next request raises `BudgetExhausted`, so each strategy
answers from what it has.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ponder.answers import extract_answer
from ponder.budget import Budget, BudgetError, BudgetExhausted, Limit
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
from ponder.errors import InvalidRequestError
from ponder.planning.pricing import Price, estimate_prompt_tokens
from ponder.strategies.result import Candidate, Result, TraceStep

DEADLINE_RESERVE = 0.05
"""Share of a deadline kept for the strategy to answer after sampling stops (voting, grouping
answers): 0.3 s of a 6 s deadline."""
STEP_SMOOTHING = 0.3
"""Weight of a shorter newest gap between two tokens of a sample in the decoding-step estimate (a
longer one replaces it at once: a step slowed by another request's prompt is as likely again)."""

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
        price: Price | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> None:
        """`price` is the engine's model's (`ponder.planning.pricing.engine_price`); it prices
        every request, a second engine's (a judge model's) included, and is needed for
        `max_usd`. Without it the result's cost is None."""
        self.engine = engine
        self.engines = dict(engines or {})
        """Further engines by role (e.g. "large" for a cascade), drawn from with `engine=`."""
        self.verifiers = dict(verifiers or {})
        self.strategy = strategy
        self.budget = budget or Budget()
        self.price = price
        if self.budget.max_usd is not None and price is None:
            raise BudgetError(
                f"max_usd needs a price for model {engine.model!r}, and a remote engine has no "
                "default: give one (a price file, or price=TokenPrice(...) in the library)"
            )
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
        self._prompt_pending = 0
        self._deadline = _deadline(self.budget, price)
        self._timer: asyncio.TimerHandle | None = None
        self._step_s = 0.0

    # --- the budget --------------------------------------------------------------------------
    @property
    def samples_left(self) -> int | None:
        cap = self.budget.max_samples
        return None if cap is None else max(0, cap - self.samples)

    @property
    def tokens_left(self) -> int | None:
        cap = self.budget.max_tokens
        return None if cap is None else max(0, cap - self._spent())

    @property
    def seconds_left(self) -> float | None:
        """Seconds to the deadline (`max_seconds`, or the machine time `max_usd` buys)."""
        return None if self._deadline is None else max(0.0, self._deadline[0] - self.elapsed())

    def _spent(self) -> int:
        """Tokens generated so far: finished requests' usage plus what running ones streamed."""
        return self.usage.completion_tokens + self._streaming

    def cost_usd(self) -> float | None:
        """Dollars spent so far at the session's price (None: no price): finished requests'
        usage, running ones' streamed tokens and estimated prompts, and the time elapsed."""
        if self.price is None:
            return None
        return self.price.cost(
            self.usage.prompt_tokens + self._prompt_pending, self._spent(), self.elapsed()
        )

    @property
    def exhausted(self) -> bool:
        """True once any limit is reached; that limit is then the one that stopped the run (a
        deadline may pass between requests, while the strategy votes or verifies)."""
        self.stopped_by = self.stopped_by or self._limit()
        return self.stopped_by is not None

    def _limit(self) -> Limit | None:
        if self.samples_left == 0:
            return "max_samples"
        return self._spending_limit()

    def _spending_limit(self) -> Limit | None:
        """A limit that running samples have reached (every limit but samples, which are
        reserved when a request starts)."""
        if self.tokens_left == 0:
            return "max_tokens"
        if self._deadline is not None:
            at, limit = self._deadline
            if self.elapsed() + self._step_s >= at * (1 - DEADLINE_RESERVE):
                return limit
        cap, spent = self.budget.max_usd, self.cost_usd()
        if cap is not None and spent is not None and spent >= cap:
            return "max_usd"
        return None

    def _stop(self, limit: Limit) -> None:
        """A limit was reached: cancel every running sample (their tokens stay counted)."""
        self.stopped_by = self.stopped_by or limit
        for running in list(self._running):
            running.cancel()

    def check_reachable(self, messages: Sequence[Message]) -> None:
        """Refuse, before anything is spent, a dollar budget that `messages` alone (sent once,
        with one generated token) already exceed at a per-token price."""
        cap, price = self.budget.max_usd, self.price
        if cap is None or price is None or not price.charges_tokens:
            return
        request = GenerationRequest(messages=tuple(messages), params=self.sampling)
        prompt, exact = estimate_prompt_tokens(self.engine, request)
        needed = price.cost(prompt, 1, 0.0)
        if needed > cap:
            about = "" if exact else "about "
            raise BudgetError(
                f"budget: max_usd=${cap:g} cannot be met: the prompt alone ({about}{prompt} "
                f"tokens) and one generated token cost ${needed:.3g} at {price.describe()} "
                f"for model {self.engine.model!r}"
            )

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
        engine = engine or self.engine
        params = self.sampling.model_copy(update=overrides)
        wanted = n or params.n
        samples_left = self.samples_left
        n = wanted if samples_left is None else min(wanted, samples_left)
        update: dict[str, Any] = {"n": n}
        request = GenerationRequest(
            messages=tuple(messages), params=params, continue_final=continue_final
        )
        max_tokens = params.max_tokens
        tokens_left = self.tokens_left
        if tokens_left is not None:
            max_tokens = min(max_tokens, tokens_left)
        prompt = 0
        if self.budget.max_usd is not None and self.price is not None and self.price.charges_tokens:
            prompt = estimate_prompt_tokens(engine, request)[0]
            affordable = self._affordable_tokens(prompt)
            if affordable is not None:
                max_tokens = min(max_tokens, affordable)
        update["max_tokens"] = max_tokens
        first = self.samples
        if params.seed is not None:  # sample k of the session always gets seed + k
            update["seed"] = params.seed + first
        params = SamplingParams.model_validate({**params.model_dump(), **update})
        request = request.model_copy(update={"params": params})
        handle = engine.start(request)  # may raise: nothing reserved yet
        self.samples += n
        generation = await self._follow(handle, n, watch, enough, prompt)
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

    def _affordable_tokens(self, prompt: int) -> int | None:
        """Generated tokens the dollars left buy after a `prompt`-token request is sent (None: any
        number, output is free); raises `BudgetExhausted` when not even one."""
        assert self.budget.max_usd is not None and self.price is not None
        left = self.budget.max_usd - (self.cost_usd() or 0.0) - self.price.cost(prompt, 0, 0.0)
        tokens = self.price.output_tokens_for(left)
        if left <= 0 or (tokens is not None and tokens < 1):
            self.stopped_by = self.stopped_by or "max_usd"
            raise BudgetExhausted(self.stopped_by)
        return None if tokens is None else math.floor(tokens)

    async def _follow(
        self,
        handle: GenerationHandle,
        n: int,
        watch: Watch | None,
        enough: Enough | None,
        prompt: int,
    ) -> Generation:
        """Relay a request's events, enforce the spending limits across all running requests
        (tokens, dollars, the deadline), and apply the strategy's per-sample (`watch`) and
        whole-request (`enough`) stopping rules. `prompt` is the request's estimated prompt
        tokens, priced while it runs."""
        finished: list[Completion] = []
        streamed = 0
        last_token_at: dict[int, float] = {}
        self._running.add(handle)
        self._prompt_pending += prompt
        self._arm_deadline()
        try:
            async for event in handle.events():
                if self.on_event is not None:
                    self.on_event(event)
                if isinstance(event, SampleDelta):
                    streamed += event.tokens
                    self._streaming += event.tokens
                    self._time_step(last_token_at, event.index)
                    limit = self._spending_limit()
                    if limit is not None:
                        self._stop(limit)
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
            self._prompt_pending -= prompt
            if not handle.done:
                handle.cancel()
            if not self._running and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _time_step(self, last_token_at: dict[int, float], index: int) -> None:
        """Update the decoding-step estimate with the gap since sample `index`'s last token."""
        now = self.elapsed()
        before = last_token_at.get(index)
        last_token_at[index] = now
        if before is not None:
            gap = now - before
            self._step_s = max(gap, self._step_s + STEP_SMOOTHING * (gap - self._step_s))

    def _arm_deadline(self) -> None:
        """While requests run, a loop timer stops them when the deadline's reserve begins, in
        case no token arrives to check it (a request queued, a long prompt)."""
        if self._deadline is None or self._timer is not None:
            return
        at, limit = self._deadline
        delay = max(0.0, at * (1 - DEADLINE_RESERVE) - self.elapsed())
        self._timer = asyncio.get_running_loop().call_later(delay, self._stop, limit)

    def named_engine(self, name: str, purpose: str) -> Engine:
        """The extra engine the caller passed as `engines[name]`; a clear error when it is
        missing, saying what it is for (`purpose`)."""
        found = self.engines.get(name)
        if found is None:
            have = ", ".join(sorted(self.engines)) or "none"
            raise InvalidRequestError(
                f"{self.strategy} needs a second engine {name!r} ({purpose}); pass "
                f"engines={{{name!r}: ...}} to run_strategy (`ponder ask --escalate-model`); "
                f"given: {have}"
            )
        return found

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
        seconds = self.elapsed()
        cost = None
        if self.price is not None:
            cost = self.price.cost(self.usage.prompt_tokens, self.usage.completion_tokens, seconds)
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
            latency_s=seconds,
            cost_usd=cost,
            samples=self.samples,
            stopped_by=self.stopped_by,
            warnings=self.warnings,
            trace=self.trace,
        )


def _deadline(budget: Budget, price: Price | None) -> tuple[float, Limit] | None:
    """The session's deadline in seconds from its start and the limit it enforces: `max_seconds`,
    or the machine time `max_usd` buys at an hourly price, whichever comes first."""
    found: list[tuple[float, Limit]] = []
    if budget.max_seconds is not None:
        found.append((budget.max_seconds, "max_seconds"))
    if budget.max_usd is not None and price is not None:
        seconds = price.seconds_for(budget.max_usd)
        if seconds is not None:
            found.append((seconds, "max_usd"))
    return min(found) if found else None
