"""Running one request's work on the shared engine: a strategy under its budget, with usage
counted for every sample it drew, and the text to answer with.

The strategy runs through `run_strategy`, so its `Session` enforces the whole budget, the deadline
(`max_seconds`) included: running samples are cancelled in time for the strategy to answer from
what it has, and the result says which limit stopped it.

Every engine request a strategy makes goes through a `MeteredEngine`, a thin proxy that keeps each
request's handle and collects its final `Generation` even when the strategy stopped waiting for
it (the client left, the strategy was cut off). That is how the server's usage stays complete.

An engine slow to honour a cancellation is not waited for past the deadline (the session answers
from what its samples streamed), and the meter still counts what it made until it stopped. One
thing the session cannot do is interrupt work that is not an engine request (a sandbox running
the samples' code). So if the strategy has not answered `grace_s` after its deadline, it is
cancelled outright and the answer is a majority vote of the samples that came back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ponder.answers import extract_answer, normalize_answer
from ponder.budget import BudgetExhausted, Limit
from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Completion,
    Generation,
    GenerationRequest,
    SampleDelta,
    SampleEvent,
    SamplingParams,
    Usage,
)
from ponder.planning.pricing import CountsPromptTokens, Price
from ponder.server.selection import Selection
from ponder.strategies.primitives import Question, group_answers, weighted_vote
from ponder.strategies.registry import run_strategy
from ponder.strategies.result import Candidate, Result

SETTLE_S = 1.0
"""How long, at least, a stopped run waits for its cancelled requests to report their usage."""


class Meter:
    """What one strategy run made its engines do: every request (whichever engine served it), its
    handle and its final generation, and progress counts (samples started and ended, tokens
    streamed) for progress reports. `engine(inner)` is the proxy a strategy draws through."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, GenerationRequest]] = []
        """(model, request) in the order they started."""
        self.spans: list[tuple[float, float | None]] = []
        """Each request's start and end (`time.perf_counter()`; None: still running)."""
        self.handles: list[GenerationHandle] = []
        self.generations: dict[int, Generation] = {}
        self.failures: dict[int, BaseException] = {}
        self.samples_started = 0
        self.samples_ended = 0
        self.tokens_streamed = 0
        self.first_token = asyncio.Event()
        self._collectors: set[asyncio.Task[None]] = set()

    def engine(self, inner: Engine) -> MeteredEngine:
        return MeteredEngine(inner, self)

    def track(self, model: str, request: GenerationRequest, handle: GenerationHandle) -> None:
        position = len(self.handles)
        self.requests.append((model, request))
        self.spans.append((time.perf_counter(), None))
        self.handles.append(handle)
        self.samples_started += request.params.n
        task = asyncio.get_running_loop().create_task(self._collect(position, handle))
        self._collectors.add(task)
        task.add_done_callback(self._collectors.discard)

    async def _collect(self, position: int, handle: GenerationHandle) -> None:
        try:
            self.generations[position] = await handle.result()
        except Exception as exc:  # the strategy sees the same error through its session
            self.failures[position] = exc
        finally:
            self.spans[position] = (self.spans[position][0], time.perf_counter())

    def observe(self, event: SampleEvent) -> None:
        """The session's event callback."""
        if isinstance(event, SampleDelta):
            self.tokens_streamed += event.tokens
            self.first_token.set()
        else:
            self.samples_ended += 1

    def cancel_running(self) -> None:
        """Cancel every sample still running (the run is over). Tokens stay counted."""
        for handle in self.handles:
            if not handle.done:
                handle.cancel()

    async def settle(self, timeout_s: float) -> None:
        """Wait (up to `timeout_s`) until every request's final generation has arrived."""
        pending = set(self._collectors)
        if pending:
            await asyncio.wait(pending, timeout=max(timeout_s, 0.001))

    @property
    def unsettled(self) -> int:
        return len(self.handles) - len(self.generations) - len(self.failures)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for generation in self.generations.values():
            total = total + generation.usage
        return total

    def cost(self, prices: Mapping[str, Price | None], main: str, wall_s: float) -> float | None:
        """Dollars for every request, each at its model's price in `prices` (None: a model drawn
        from has none), as the session prices them: tokens as the engines reported them; at an
        hourly price, `wall_s` for the run's own model (`main`) and, for any other, the seconds
        its requests were running."""
        usage: dict[str, Usage] = {main: Usage()}
        for position, generation in self.generations.items():
            model = self.requests[position][0]
            usage[model] = usage.get(model, Usage()) + generation.usage
        total = 0.0
        for model, used in usage.items():
            price = prices.get(model)
            if price is None:
                return None
            seconds = wall_s if model == main else self._busy_s(model)
            total += price.cost(used.prompt_tokens, used.completion_tokens, seconds)
        return total

    def _busy_s(self, model: str) -> float:
        """Seconds during which at least one of `model`'s requests was running."""
        now = time.perf_counter()
        spans = sorted(
            (start, now if end is None else end)
            for (name, _), (start, end) in zip(self.requests, self.spans, strict=True)
            if name == model
        )
        busy, reached = 0.0, float("-inf")
        for start, end in spans:
            busy += max(0.0, end - max(start, reached))
            reached = max(reached, end)
        return busy

    def completions(self) -> list[Completion]:
        return [c for _, g in sorted(self.generations.items()) for c in g.completions]

    def warnings(self) -> list[str]:
        found: list[str] = []
        for _, generation in sorted(self.generations.items()):
            found.extend(w for w in generation.warnings if w not in found)
        return found


class MeteredEngine(Engine):
    """Forwards to `inner`, recording every request in `meter`."""

    def __init__(self, inner: Engine, meter: Meter) -> None:
        self.inner = inner
        self.meter = meter
        self.model = inner.model
        self.capabilities = inner.capabilities
        if isinstance(inner, CountsPromptTokens):  # a dollar budget counts prompts exactly
            self.tokenize_request = inner.tokenize_request

    def start(self, request: GenerationRequest) -> GenerationHandle:
        handle = self.inner.start(request)
        self.meter.track(self.model, request, handle)
        return handle


@dataclass
class Outcome:
    """A strategy's result with the server's complete accounting."""

    result: Result
    meter: Meter
    wall_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        return self.result.usage

    @property
    def deadline_reached(self) -> bool:
        return self.result.stopped_by == "max_seconds"


async def run_selected(
    meter: Meter,
    engine: Engine,
    question: Question,
    selection: Selection,
    sampling: SamplingParams,
    *,
    prices: Mapping[str, Price | None],
    engines: Mapping[str, Engine],
    grace_s: float,
) -> Outcome:
    """Run the selected strategy on `engine` under the selection's budget, each request priced
    at its model's entry in `prices`, with `engines` as its further engines by role, every
    request recorded in `meter` (see the module docstring for the deadline). Errors the strategy
    raises propagate (a budget it cannot meet is refused before anything is spent); cancelling
    this coroutine cancels all the work."""
    assert selection.strategy is not None and selection.params is not None
    deadline = selection.budget.max_seconds
    started = time.perf_counter()
    task: asyncio.Future[Result] = asyncio.ensure_future(
        run_strategy(
            selection.strategy,
            meter.engine(engine),
            question,
            selection.params,
            budget=selection.budget,
            sampling=sampling,
            on_event=meter.observe,
            prices=prices,
            engines={role: meter.engine(extra) for role, extra in engines.items()},
        )
    )
    result: Result | None = None
    stopped_by: Limit | None = None
    try:
        done, _ = await asyncio.wait(
            {task}, timeout=None if deadline is None else deadline + grace_s
        )
        if not done:  # the session's deadline did not end it: cut it off
            stopped_by = "max_seconds"
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            try:
                result = task.result()
            except BudgetExhausted as exc:  # a strategy that did not catch its session's signal
                stopped_by = exc.limit
    finally:
        if not task.done():  # this coroutine was cancelled: the client left
            task.cancel()
        meter.cancel_running()
    # Cancelled samples end within a decoding step; give their final usage a moment to arrive.
    await meter.settle(max(grace_s, SETTLE_S))
    wall = time.perf_counter() - started
    warnings: list[str] = []
    if result is None:
        result = partial_result(selection.strategy, engine.model, meter, wall, stopped_by)
        warnings.append(
            f"the strategy had not answered when it was stopped after {wall:.2f}s; the answer is "
            f"a majority vote of the {len(result.candidates)} samples drawn by then"
        )
    if meter.unsettled:
        warnings.append(
            f"{meter.unsettled} engine request(s) did not report their usage in time; their "
            "tokens are missing from usage"
        )
    # The session counted the requests it saw end; the proxy also those it stopped waiting for.
    usage = meter.usage
    if usage.completion_tokens < result.usage.completion_tokens:  # never report less
        usage = result.usage
    cost = meter.cost(prices, engine.model, result.latency_s)
    result = result.model_copy(
        update={
            "usage": usage,
            "cost_usd": cost,
            "samples": max(result.samples, meter.samples_started),
            "warnings": [*result.warnings, *meter.warnings(), *warnings],
        }
    )
    return Outcome(result, meter, wall, warnings)


def partial_result(
    strategy: str, model: str, meter: Meter, wall_s: float, stopped_by: Limit | None
) -> Result:
    """A result from whatever samples came back: a majority vote of their extracted answers."""
    completions = meter.completions()
    candidates = [
        Candidate.from_completion(c, extract_answer(c.text), i) for i, c in enumerate(completions)
    ]
    answer, votes = weighted_vote(group_answers([c.answer for c in candidates]))
    total = sum(votes.values())
    return Result(
        strategy=strategy,
        model=model,
        answer=answer,
        vote_share=votes.get(answer, 0.0) / total if answer is not None and total else 0.0,
        votes=votes,
        candidates=candidates,
        usage=meter.usage,
        latency_s=wall_s,
        samples=meter.samples_started,
        stopped_by=stopped_by,
    )


def chosen_candidate(result: Result) -> Candidate | None:
    """The candidate whose text answers the client: the first one that gave the winning answer,
    preferring samples that finished on their own, among the result's voters (all candidates
    unless it names some). With no answer at all (a request that is not a math question), the
    first sample that finished, so the client still gets a reply.

    Strategies return the extracted answer ("42"); a chat client wants the reasoning that led
    to it, so the response's content is that candidate's full text."""
    candidates = result.candidates
    if result.voters is not None:
        voters = set(result.voters)
        candidates = [c for c in candidates if c.index in voters] or candidates
    if not candidates:
        return None
    keys = [k for k in (next(iter(result.votes), None), result.answer) if k is not None]
    matching: Sequence[Candidate] = []
    if keys:
        matching = [
            c
            for c in candidates
            if c.answer is not None and (c.answer in keys or normalize_answer(c.answer) in keys)
        ]
        if not matching:
            groups = group_answers([keys[0], *(c.answer for c in candidates)])
            matching = [c for c, g in zip(candidates, groups[1:], strict=True) if g == groups[0]]
    pool = matching if keys else candidates
    finished = [c for c in pool if c.finish_reason in ("stop", "length")]
    return finished[0] if finished else (pool[0] if pool else None)


def answer_text(result: Result) -> str:
    """The text the response carries: the chosen candidate's, else the bare answer, else ""."""
    chosen = chosen_candidate(result)
    if chosen is not None and chosen.text:
        return chosen.text
    return result.answer or ""
