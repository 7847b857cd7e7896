"""Running one request's work on the shared engine: a strategy under a deadline, with usage
counted for every sample it drew, and the text to answer with.

Every engine request a strategy makes goes through a `MeteredEngine`, a thin proxy that keeps each
request's handle and collects its final `Generation` even when the strategy stopped waiting for
it (the deadline hit, the client left). That is how the server's usage stays complete: the
session's own count covers finished requests only, while cancelled ones still cost tokens.

The deadline works in two steps. At the deadline the proxy cancels every running sample and
refuses new requests by raising `BudgetExhausted`, the signal a `Session` gives when a budget limit
is reached, so each strategy answers from what it has along its own "best so far" path (cancelled
samples end within a decoding step). If the strategy has not answered after a grace period, it is
cancelled outright and the answer is a majority vote of the samples that came back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ponder.answers import extract_answer, normalize_answer
from ponder.budget import BudgetExhausted
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
from ponder.server.selection import Selection
from ponder.strategies.primitives import Question, group_answers, weighted_vote
from ponder.strategies.registry import get_strategy
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session

SETTLE_S = 1.0
"""How long, at least, a stopped run waits for its cancelled requests to report their usage."""


class MeteredEngine(Engine):
    """Forwards to `inner`, recording every request, its handle and its final generation, and
    counting progress (samples started and ended, tokens streamed) for progress reports."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model = inner.model
        self.capabilities = inner.capabilities
        self.requests: list[GenerationRequest] = []
        self.handles: list[GenerationHandle] = []
        self.generations: dict[int, Generation] = {}
        self.failures: dict[int, BaseException] = {}
        self.samples_started = 0
        self.samples_ended = 0
        self.tokens_streamed = 0
        self.stopped = False
        self.first_token = asyncio.Event()
        self._collectors: set[asyncio.Task[None]] = set()

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self.stopped:
            # A deadline is a budget limit the session does not know about; refusing the way
            # the session refuses at a limit sends the strategy down its best-so-far path.
            raise BudgetExhausted("max_samples")
        handle = self.inner.start(request)
        position = len(self.handles)
        self.requests.append(request)
        self.handles.append(handle)
        self.samples_started += request.params.n
        task = asyncio.get_running_loop().create_task(self._collect(position, handle))
        self._collectors.add(task)
        task.add_done_callback(self._collectors.discard)
        return handle

    async def _collect(self, position: int, handle: GenerationHandle) -> None:
        try:
            self.generations[position] = await handle.result()
        except Exception as exc:  # the strategy sees the same error through its session
            self.failures[position] = exc

    def observe(self, event: SampleEvent) -> None:
        """The session's event callback."""
        if isinstance(event, SampleDelta):
            self.tokens_streamed += event.tokens
            self.first_token.set()
        else:
            self.samples_ended += 1

    def stop(self) -> None:
        """Cancel every running sample and refuse new requests. Tokens stay counted."""
        self.stopped = True
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

    def completions(self) -> list[Completion]:
        return [c for _, g in sorted(self.generations.items()) for c in g.completions]

    def warnings(self) -> list[str]:
        found: list[str] = []
        for _, generation in sorted(self.generations.items()):
            found.extend(w for w in generation.warnings if w not in found)
        return found


@dataclass
class Outcome:
    """A strategy's result with the server's complete accounting."""

    result: Result
    metered: MeteredEngine
    deadline_reached: bool
    wall_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        return self.result.usage


async def run_with_deadline(
    metered: MeteredEngine,
    question: Question,
    selection: Selection,
    sampling: SamplingParams,
    *,
    deadline_s: float | None,
    grace_s: float,
) -> Outcome:
    """Run the selected strategy through `metered` (see the module docstring for the deadline).
    Errors the strategy raises propagate; cancelling this coroutine cancels all the work."""
    assert selection.strategy is not None and selection.params is not None
    strategy = get_strategy(selection.strategy)
    session = Session(
        metered,
        strategy=strategy.name,
        budget=selection.budget,
        sampling=sampling,
        on_event=metered.observe,
    )
    started = time.perf_counter()
    task: asyncio.Future[Result] = asyncio.ensure_future(
        strategy.run(session, question, selection.params)
    )
    deadline_reached = False
    result: Result | None = None
    try:
        done, _ = await asyncio.wait({task}, timeout=deadline_s)
        if not done:
            deadline_reached = True
            metered.stop()
            done, _ = await asyncio.wait({task}, timeout=max(grace_s, 0.001))
            if not done:
                task.cancel()
                await asyncio.wait({task})
        if not task.cancelled():
            try:
                result = task.result()
            except BudgetExhausted:
                result = None
    finally:
        if not task.done():  # this coroutine was cancelled: the client left
            task.cancel()
        metered.stop()
    # Cancelled samples end within a decoding step; give their final usage a moment to arrive.
    await metered.settle(max(grace_s, SETTLE_S))
    wall = time.perf_counter() - started
    warnings: list[str] = []
    if result is None:
        result = partial_result(session, metered, wall)
        warnings.append(
            f"the strategy had not answered when it was stopped after {wall:.2f}s; the answer is "
            f"a majority vote of the {len(result.candidates)} samples drawn by then"
        )
    if metered.unsettled:
        warnings.append(
            f"{metered.unsettled} engine request(s) did not report their usage in time; their "
            "tokens are missing from usage"
        )
    # The session counted finished requests; the proxy also counted ones cancelled mid-flight.
    usage = metered.usage
    if usage.completion_tokens < result.usage.completion_tokens:  # never report less
        usage = result.usage
    result = result.model_copy(
        update={
            "usage": usage,
            "samples": max(result.samples, metered.samples_started),
            "warnings": [*result.warnings, *metered.warnings(), *warnings],
        }
    )
    return Outcome(result, metered, deadline_reached, wall, warnings)


def partial_result(session: Session, metered: MeteredEngine, wall_s: float) -> Result:
    """A result from whatever samples came back: a majority vote of their extracted answers."""
    completions = metered.completions()
    candidates = [
        Candidate.from_completion(c, extract_answer(c.text), i) for i, c in enumerate(completions)
    ]
    answer, votes = weighted_vote(group_answers([c.answer for c in candidates]))
    total = sum(votes.values())
    return Result(
        strategy=session.strategy,
        model=metered.model,
        answer=answer,
        vote_share=votes.get(answer, 0.0) / total if answer is not None and total else 0.0,
        votes=votes,
        candidates=candidates,
        usage=metered.usage,
        latency_s=wall_s,
        samples=metered.samples_started,
        stopped_by=session.stopped_by,
        warnings=list(session.warnings),
        trace=list(session.trace),
    )


def chosen_candidate(result: Result) -> Candidate | None:
    """The candidate whose text answers the client: the first one that gave the winning answer,
    preferring samples that finished on their own. With no answer at all (a request that is not
    a math question), the first sample that finished, so the client still gets a reply.

    Strategies return the extracted answer ("42"); a chat client wants the reasoning that led
    to it, so the response's content is that candidate's full text."""
    candidates = result.candidates
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
