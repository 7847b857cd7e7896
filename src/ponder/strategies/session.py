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
starts. An engine that has not handed a cancelled request back by `GIVE_UP_AT` of the deadline
(a decoding step or another request's prompt taking seconds on a loaded machine) is not waited
for: the request is answered from the text it streamed, and the tokens the engine made after
that are not counted (at most one step's). Work that is not an engine request (a sandbox run,
a math-verify comparison) is not interrupted.

Each request is priced at the price of the model that serves it (`price_of`): the session's
engine's, a cascade's larger model's, a judge's. A per-token price charges the request's tokens;
an hourly one charges the session's wall time for the session's own engine (its machine is held
for the whole run) and, for any other engine, the seconds its requests were running.

`max_usd` sums those costs: at a per-token price each request's max_tokens is capped at what the
dollars left buy, and the cost, prompt included, is checked on every delta; at the engine's
hourly price it also becomes a deadline (the seconds the dollars buy). A request to a model with
no known price is refused before anything is spent, since it could not be counted.

Whatever the limit, a stopped request comes back as a partial `Generation` (cancelled samples
keep their text and tokens) and the next request raises `BudgetExhausted`, so each strategy
answers from what it has.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    Timings,
    TokenLogprob,
    Usage,
)
from ponder.errors import InvalidRequestError
from ponder.planning.pricing import Price, engine_price, estimate_prompt_tokens
from ponder.strategies.result import Candidate, ModelUsage, Result, TraceStep

DEADLINE_RESERVE = 0.05
"""Share of a deadline kept for the strategy to answer after sampling stops (voting, grouping
answers): 0.3 s of a 6 s deadline."""
GIVE_UP_AT = 1 - DEADLINE_RESERVE / 2
"""Share of a deadline after which a request the engine has not handed back is answered from
what it streamed: half the reserve is left for the strategy to answer."""
GAVE_UP_WARNING = (
    "the engine did not hand the samples back by the deadline: they end with the text they had "
    "streamed (tokens it made after that are not counted)"
)
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


@dataclass
class _Streamed:
    """What one request has streamed so far, sample by sample: its answer when the engine cannot
    hand it back before the deadline. Text and logprobs are kept only when `keep_text` (a
    deadline could need them); tokens and finished samples always."""

    n: int
    keep_text: bool
    texts: dict[int, list[str]] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    finished: list[Completion] = field(default_factory=list)

    def add(self, delta: SampleDelta) -> None:
        i = delta.index
        self.tokens[i] = self.tokens.get(i, 0) + delta.tokens
        if not self.keep_text:
            return
        self.texts.setdefault(i, []).append(delta.text)
        if delta.logprobs:
            self.logprobs.setdefault(i, []).extend(delta.logprobs)

    def generation(self, model: str, prompt_tokens: int, seconds: float) -> Generation:
        """Finished samples as they finished; the others cancelled where they had got to."""
        done = {c.index: c for c in self.finished}
        completions = [
            done.get(i)
            or Completion(
                index=i,
                text="".join(self.texts.get(i, [])),
                finish_reason="cancelled",
                completion_tokens=self.tokens.get(i, 0),
                logprobs=self.logprobs.get(i),
                latency_s=seconds,
            )
            for i in range(self.n)
        ]
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in completions),
        )
        return Generation(
            model=model,
            completions=completions,
            usage=usage,
            timings=Timings(total_s=seconds),
            warnings=[GAVE_UP_WARNING],
        )


class _GaveUp(Exception):
    """The deadline passed `GIVE_UP_AT` before the engine handed a request back."""

    def __init__(self, streamed: _Streamed) -> None:
        super().__init__("gave up waiting for the engine at the deadline")
        self.streamed = streamed


@dataclass
class _Account:
    """What one model's requests used in a session, for its cost: finished requests' usage, what
    running ones streamed and their estimated prompts, and the seconds any of them ran."""

    price: Price | None
    usage: Usage = field(default_factory=Usage)
    streaming: int = 0
    prompt_pending: int = 0
    running: int = 0
    busy_since: float = 0.0
    busy_s: float = 0.0
    samples: int = 0

    def start(self, now: float, prompt: int) -> None:
        if self.running == 0:
            self.busy_since = now
        self.running += 1
        self.prompt_pending += prompt

    def end(self, now: float, prompt: int, streamed: int) -> None:
        self.running -= 1
        if self.running == 0:
            self.busy_s += now - self.busy_since
        self.prompt_pending -= prompt
        self.streaming -= streamed

    def busy(self, now: float) -> float:
        """Seconds any of this model's requests ran, up to `now`."""
        return self.busy_s + (now - self.busy_since if self.running else 0.0)

    def model_usage(self, seconds: float | None, now: float) -> ModelUsage:
        """This model's share of a result; `seconds` as for `cost`."""
        return ModelUsage(
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            seconds=self.busy(now),
            samples=self.samples,
            usd=self.cost(seconds, now),
        )

    def cost(self, seconds: float | None, now: float) -> float | None:
        """Dollars so far; `seconds` billed at an hourly price (None: the seconds this model's
        requests ran)."""
        if self.price is None:
            return None
        if seconds is None:
            seconds = self.busy(now)
        return self.price.cost(
            self.usage.prompt_tokens + self.prompt_pending,
            self.usage.completion_tokens + self.streaming,
            seconds,
        )


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
        prices: Mapping[str, Price | None] | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> None:
        """Each engine is priced with `engine_price(engine, prices)` (`prices`: a price table by
        model name, as a price file holds; None: the embedded engine's default machine cost,
        others unpriced); `price` overrides the session's own engine's. The engines known here
        (this one, `engines`, configured verifiers' judges) are priced at once, so a price table
        that lacks one, or a `max_usd` budget with a model that has no price, is refused before
        anything is spent. A result that drew from an unpriced model has no cost (None)."""
        self.engine = engine
        self.engines = dict(engines or {})
        """Further engines by role (e.g. "large" for a cascade), drawn from with `engine=`."""
        self.verifiers = dict(verifiers or {})
        self.strategy = strategy
        self.budget = budget or Budget()
        self._price_table = prices
        self._prices: dict[str, Price | None] = {}
        """Each model's price, resolved on first use."""
        if price is not None:
            self._prices[engine.model] = price
        self.price = self.price_of(engine)
        """The session's own engine's price."""
        for known in (engine, *self.engines.values(), *_judges(self.verifiers.values())):
            self._priced(known)
        self._accounts = {engine.model: _Account(self.price)}
        """Each model drawn from, by name; the session's own engine's from the start."""
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
        self._deadline = _deadline(self.budget, self.price)
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
        """Dollars spent so far, each model's requests at its price (None: a model drawn from
        has none): finished requests' usage, running ones' streamed tokens and estimated prompts,
        and the time elapsed (see the module docstring)."""
        return self._cost(self.elapsed())

    def _cost(self, elapsed: float) -> float | None:
        total = 0.0
        for model, account in self._accounts.items():
            seconds = elapsed if model == self.engine.model else None
            cost = account.cost(seconds, elapsed)
            if cost is None:
                return None
            total += cost
        return total

    def price_of(self, engine: Engine) -> Price | None:
        """The price of `engine`'s model (see `__init__`), resolved once per model."""
        model = engine.model
        if model not in self._prices:
            self._prices[model] = engine_price(engine, self._price_table)
        return self._prices[model]

    def _priced(self, engine: Engine) -> Price | None:
        """`price_of`, refusing a model with no price under a dollar budget."""
        price = self.price_of(engine)
        if self.budget.max_usd is not None and price is None:
            which = "" if engine is self.engine else f" (the {self._role(engine)})"
            raise BudgetError(
                f"max_usd needs a price for model {engine.model!r}{which}, and a remote engine "
                "has no default: give one (a price file naming it, or prices={model: "
                "TokenPrice(...)} in the library)"
            )
        return price

    def _role(self, engine: Engine) -> str:
        """What `engine` is to this session, for messages."""
        role = next((name for name, e in self.engines.items() if e is engine), None)
        return "judge's model" if role is None else f"{role!r} engine"

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
        cap = self.budget.max_usd
        if cap is not None:  # priced only under a dollar budget: this runs on every token
            spent = self.cost_usd()
            if spent is not None and spent >= cap:
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
        price = self._priced(engine)
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
        if self.budget.max_usd is not None and price is not None and price.charges_tokens:
            prompt = estimate_prompt_tokens(engine, request)[0]
            affordable = self._affordable_tokens(price, prompt)
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
        account = self._account(engine, price)
        account.samples += n
        begun = self.elapsed()
        try:
            generation = await self._follow(handle, n, watch, enough, prompt, account)
        except _GaveUp as gave_up:
            prompt_tokens = estimate_prompt_tokens(engine, request)[0]
            generation = gave_up.streamed.generation(
                engine.model, prompt_tokens, self.elapsed() - begun
            )
        self.usage = self.usage + generation.usage
        account.usage = account.usage + generation.usage
        self.warnings.extend(w for w in generation.warnings if w not in self.warnings)
        self.record(
            step,
            tokens=generation.usage.completion_tokens,
            n=n,
            finish=[c.finish_reason for c in generation.completions],
        )
        self.stopped_by = self.stopped_by or self._limit()
        return first, generation

    def _account(self, engine: Engine, price: Price | None) -> _Account:
        """The account of `engine`'s model, opened on its first request (warning, when the
        session is priced, that a model without a price leaves the cost unknown)."""
        account = self._accounts.get(engine.model)
        if account is None:
            account = self._accounts[engine.model] = _Account(price)
            if price is None and self.price is not None:
                self.warnings.append(
                    f"the cost is unknown: model {engine.model!r} ({self._role(engine)}) has no "
                    "price; give a price file naming it"
                )
        return account

    def _affordable_tokens(self, price: Price, prompt: int) -> int | None:
        """Generated tokens the dollars left buy after a `prompt`-token request is sent at
        `price` (None: any number, output is free); raises `BudgetExhausted` when not even
        one."""
        assert self.budget.max_usd is not None
        left = self.budget.max_usd - (self.cost_usd() or 0.0) - price.cost(prompt, 0, 0.0)
        tokens = price.output_tokens_for(left)
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
        account: _Account,
    ) -> Generation:
        """Relay a request's events, enforce the spending limits across all running requests
        (tokens, dollars, the deadline), and apply the strategy's per-sample (`watch`) and
        whole-request (`enough`) stopping rules. `prompt` is the request's estimated prompt
        tokens, priced in its model's `account` while it runs."""
        so_far = _Streamed(n, keep_text=self._deadline is not None)
        self._running.add(handle)
        account.start(self.elapsed(), prompt)
        self._arm_deadline()
        give_up = asyncio.timeout(self._give_up_in())
        try:
            async with give_up:
                return await self._relay(handle, n, watch, enough, account, so_far)
        except TimeoutError:
            if not give_up.expired():
                raise  # the engine's own, not the deadline's
            self.stopped_by = self.stopped_by or self._limit() or "max_seconds"
            raise _GaveUp(so_far) from None
        finally:
            streamed = sum(so_far.tokens.values())
            self._running.discard(handle)
            self._streaming -= streamed
            account.end(self.elapsed(), prompt, streamed)
            if not handle.done:
                handle.cancel()
            if not self._running and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _relay(
        self,
        handle: GenerationHandle,
        n: int,
        watch: Watch | None,
        enough: Enough | None,
        account: _Account,
        so_far: _Streamed,
    ) -> Generation:
        """`_follow`'s loop over the request's events, until the engine hands it back."""
        last_token_at: dict[int, float] = {}
        finished = so_far.finished
        async for event in handle.events():
            if self.on_event is not None:
                self.on_event(event)
            if isinstance(event, SampleDelta):
                so_far.add(event)
                self._streaming += event.tokens
                account.streaming += event.tokens
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

    def _time_step(self, last_token_at: dict[int, float], index: int) -> None:
        """Update the decoding-step estimate with the gap since sample `index`'s last token."""
        now = self.elapsed()
        before = last_token_at.get(index)
        last_token_at[index] = now
        if before is not None:
            gap = now - before
            self._step_s = max(gap, self._step_s + STEP_SMOOTHING * (gap - self._step_s))

    def _give_up_in(self) -> float | None:
        """Seconds until a request still running is answered from what it streamed (None: no
        deadline, wait for the engine)."""
        if self._deadline is None:
            return None
        at, _ = self._deadline
        return max(0.0, at * GIVE_UP_AT - self.elapsed())

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
        cost = self._cost(seconds)
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
            by_model={
                model: account.model_usage(seconds if model == self.engine.model else None, seconds)
                for model, account in self._accounts.items()
            },
            latency_s=seconds,
            cost_usd=cost,
            samples=self.samples,
            stopped_by=self.stopped_by,
            warnings=self.warnings,
            trace=self.trace,
        )


def _judges(verifiers: Iterable[Verifier]) -> list[Engine]:
    """The engines configured verifiers judge with (an llm-judge's `engine`), so they are priced
    before anything is spent."""
    found = (getattr(verifier, "engine", None) for verifier in verifiers)
    return [engine for engine in found if isinstance(engine, Engine)]


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
