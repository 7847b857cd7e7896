"""Live evaluation: run a strategy for real on a sampling run's items and store one graded result
per item beside the run's samples.

Offline replay covers strategies that only choose among independent samples; strategies that must
generate (verify-refine, beam search, think-longer) can only be measured by running them. To be
compared with the replays like for like, a live run takes everything from the run store: the same
items (rebuilt from the stored dataset spec and refused if their fingerprint changed), the same
model and engine, and the same temperature, top_p, top_k and seeds. Item i's strategy session
starts at seed `run seed + i * samples`, the seed of the run's first sample of that item, so a
strategy's first draws are the run's own samples wherever the engine is deterministic.

The strategy sees only the item's prompt, never its reference: it is graded afterwards, by the
run's checker, on `Result.answer`. As in `ponder bench run`, resuming is the normal path: every
call runs only the items the store lacks for this config, each result is stored in one
transaction once graded, and a result the engine failed part of is not stored, so a rerun runs
that item again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ponder.bench.checkers import Checker, Grade
from ponder.bench.datasets import Dataset, load_dataset
from ponder.bench.items import Item
from ponder.bench.run import _first, sample_seed
from ponder.bench.store import LiveConfig, LiveRecord, RunConfig, RunStore
from ponder.budget import Budget
from ponder.engines.base import Engine
from ponder.engines.types import SamplingParams
from ponder.errors import InvalidRequestError, PonderError
from ponder.strategies.registry import get_strategy, run_strategy
from ponder.strategies.result import Result
from ponder.verifiers.base import Verifier

MAX_ERROR_CHARS = 2000
"""Non-fatal errors stored with a result are cut to this length (a code strategy can collect a
long error per candidate)."""

OnResult = Callable[[LiveRecord], None]


class BenchLiveError(PonderError):
    """A live run stopped; the results stored so far are kept and a rerun continues from there."""


class LiveSummary(BaseModel):
    """Where one live config stands on the items asked for, and what one `live_run` call did.
    The means are over the items done (None before the first)."""

    config_key: str
    label: str
    strategy: str
    items: int
    """Items asked for (the run's, or the first `limit`)."""
    done: int
    """Of those, items with a stored result (all calls together)."""
    ran: int
    """Items run and stored by this call."""
    failed: int
    """Items whose result the engine failed part of; not stored, so a rerun runs them again."""
    first_error: str | None
    accuracy: float | None
    mean_completion_tokens: float | None
    mean_samples: float | None
    mean_latency_s: float | None
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return self.done == self.items


def make_live_config(
    run: RunConfig,
    strategy: str,
    params: Mapping[str, Any] | None = None,
    *,
    budget: Budget | None = None,
    max_tokens: int | None = None,
    label: str | None = None,
    judge_model: str | None = None,
    escalate_model: str | None = None,
    escalate_engine: str | None = None,
) -> LiveConfig:
    """The config a live run of `strategy` is stored under: parameters validated and completed
    with their defaults (so equal settings get one key however they were written), the run's
    max_tokens unless given. The default label names only what was given, so it stays short:
    "think-longer max_thinking_tokens=256 budget_tokens=4096"."""
    chosen = get_strategy(strategy)
    given = dict(params or {})
    canonical = chosen.parse_params(given).model_dump(mode="json")
    budget = budget or Budget()
    max_tokens = run.max_tokens if max_tokens is None else max_tokens
    named = label is not None
    if label is not None and not label.strip():
        raise InvalidRequestError("--label must not be empty")
    if escalate_engine is not None and escalate_model is None:
        raise InvalidRequestError("--escalate-engine needs --escalate-model (which model)")
    if label is None:
        parts = [chosen.name, *(f"{key}={_show(canonical[key])}" for key in sorted(given))]
        if budget.max_samples is not None:
            parts.append(f"max_samples={budget.max_samples}")
        if budget.max_tokens is not None:
            parts.append(f"budget_tokens={budget.max_tokens}")
        if max_tokens != run.max_tokens:
            parts.append(f"max_tokens={max_tokens}")
        if judge_model is not None:
            parts.append(f"judge={judge_model}")
        if escalate_model is not None:
            parts.append(f"escalate={escalate_model}")
        label = " ".join(parts)
    return LiveConfig(
        strategy=chosen.name,
        params=canonical,
        budget=budget,
        max_tokens=max_tokens,
        label=label.strip(),
        named=named,
        judge_model=judge_model,
        escalate_model=escalate_model,
        escalate_engine=escalate_engine,
    )


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def load_items(store: RunStore, home: Path | None = None) -> Dataset:
    """The run's items rebuilt from its stored dataset spec, with the checker that grades them.
    Refused when they are no longer the items that were sampled (the file, the generator or the
    prompt format changed): live results on other items would not be comparable."""
    config = store.config
    dataset = load_dataset(config.dataset, home=home, limit=config.items)
    if len(dataset.items) != config.items or dataset.fingerprint() != config.dataset_fingerprint:
        raise BenchLiveError(
            f"the items of {config.dataset.label()} are no longer the ones {store.path} was "
            "sampled on (the file, the generator or the prompt changed); live results would not "
            "be comparable with its samples"
        )
    return dataset


def pending_items(store: RunStore, config: LiveConfig, limit: int | None = None) -> list[int]:
    """The items (of the first `limit`) that have no stored result for `config`, in order."""
    done = store.live_done(config.key)
    return [i for i in range(_asked(store, limit)) if i not in done]


def live_sampling(run: RunConfig, config: LiveConfig, item_index: int) -> SamplingParams:
    """The run's sampling settings, this config's max_tokens, and the item's first seed."""
    return SamplingParams(
        max_tokens=config.max_tokens,
        temperature=run.temperature,
        top_p=run.top_p,
        top_k=run.top_k,
        seed=sample_seed(run, item_index, 0),
    )


def answer_text(checker: Checker, answer: str) -> str:
    """A strategy's final answer written as the checker's prompt asks for it, so the run's checker
    grades it exactly as it grades a sample (`Checker.grade` reads a reply, not an answer)."""
    if checker.name == "reasoning-gym":
        return f"<answer>{answer}</answer>"
    if checker.name == "code-exec":
        return f"```python\n{answer}\n```"
    return f"\\boxed{{{answer}}}"


async def grade_answer(checker: Checker, answer: str | None, item: Item) -> Grade:
    """Grade a strategy's final answer against the item's reference; no answer is wrong."""
    if answer is None:
        return Grade(None, 0.0, False, "no answer")
    return await checker.grade(answer_text(checker, answer), item)


def engine_failure(result: Result) -> str | None:
    """Why the engine failed part of `result` (a sample that ended in "error"), or None. Such a
    result lacks a sample a clean run would have had (a vote, a search step), so it is not
    stored, as `ponder bench run` stores no failed sample."""
    for candidate in result.candidates:
        if candidate.finish_reason == "error":
            return candidate.error or "a sample failed"
    for step in result.trace:
        finish = step.detail.get("finish")
        if isinstance(finish, list) and "error" in finish:
            return f"a sample of the {step.step!r} step failed"
    return None


async def live_run(
    store: RunStore,
    dataset: Dataset,
    engine: Engine,
    config: LiveConfig,
    *,
    limit: int | None = None,
    concurrency: int = 1,
    on_result: OnResult | None = None,
    verifiers: Mapping[str, Verifier] | None = None,
    engines: Mapping[str, Engine] | None = None,
) -> LiveSummary:
    """Run `config`'s strategy on every item (of the first `limit`) the store has no result for,
    up to `concurrency` items at once, grading and storing each result as it finishes.
    `verifiers` and `engines` are the further models the config names, opened by the caller
    (as `run_strategy` takes them).

    A strategy error (the engine down, a parameter the strategy rejects) stops the run with
    `BenchLiveError`; the items in flight are cancelled and leave nothing behind. A result the
    engine failed part of is skipped and counted, and a rerun runs that item again."""
    if concurrency < 1:
        raise BenchLiveError(f"concurrency must be at least 1, got {concurrency}")
    config = store.ensure_live_config(config)
    runner = _LiveRunner(store, dataset, engine, config, on_result, verifiers, engines)
    started = time.perf_counter()
    queue = deque(pending_items(store, config, limit))

    async def worker() -> None:
        while queue:
            await runner.run_item(queue.popleft())

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(queue))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise _first(errors) from None
    return live_summary(
        store,
        config,
        limit,
        ran=runner.ran,
        failed=runner.failed,
        first_error=runner.first_error,
        elapsed_s=time.perf_counter() - started,
    )


def live_summary(
    store: RunStore,
    config: LiveConfig,
    limit: int | None = None,
    *,
    ran: int = 0,
    failed: int = 0,
    first_error: str | None = None,
    elapsed_s: float = 0.0,
) -> LiveSummary:
    """The config's standing over the items asked for, from the store."""
    asked = _asked(store, limit)
    records = [r for r in store.live_records(config.key) if r.item_index < asked]
    done = len(records)

    def mean(values: list[float]) -> float | None:
        return sum(values) / done if done else None

    return LiveSummary(
        config_key=config.key,
        label=config.label,
        strategy=config.strategy,
        items=asked,
        done=done,
        ran=ran,
        failed=failed,
        first_error=first_error,
        accuracy=mean([float(r.correct) for r in records]),
        mean_completion_tokens=mean([float(r.completion_tokens) for r in records]),
        mean_samples=mean([float(r.samples) for r in records]),
        mean_latency_s=mean([r.latency_s for r in records]),
        elapsed_s=elapsed_s,
    )


def _asked(store: RunStore, limit: int | None) -> int:
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"limit must be at least 1, got {limit}")
    items = store.config.items
    return items if limit is None else min(limit, items)


def _errors(result: Result) -> str | None:
    """What went wrong without failing the item: the strategy's warnings, candidates' errors."""
    found = dict.fromkeys(
        [*result.warnings, *(c.error for c in result.candidates if c.error is not None)]
    )
    text = "; ".join(found)
    return text[:MAX_ERROR_CHARS] or None


def _trace_json(result: Result) -> str:
    """The strategy's trace as compact JSON; anything a step holds that JSON cannot (a set, an
    object) is written as its str."""
    steps = [step.model_dump() for step in result.trace]
    return json.dumps(steps, separators=(",", ":"), default=str)


class _LiveRunner:
    """The state the workers share: the store, the counters, and what every item is run with."""

    def __init__(
        self,
        store: RunStore,
        dataset: Dataset,
        engine: Engine,
        config: LiveConfig,
        on_result: OnResult | None,
        verifiers: Mapping[str, Verifier] | None,
        engines: Mapping[str, Engine] | None,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.engine = engine
        self.config = config
        self.on_result = on_result
        self.verifiers = verifiers
        self.engines = engines
        self.ran = 0
        self.failed = 0
        self.first_error: str | None = None

    async def run_item(self, item_index: int) -> None:
        item = self.dataset.items[item_index]
        config = self.config
        try:
            result = await run_strategy(
                config.strategy,
                self.engine,
                item.prompt,
                config.params,
                budget=config.budget,
                sampling=live_sampling(self.store.config, config, item_index),
                verifiers=self.verifiers,
                engines=self.engines,
            )
        except PonderError as error:
            raise BenchLiveError(
                f"{config.strategy} on item {item.id} failed: {error}. The results stored so "
                "far are kept; run the same command again to continue."
            ) from error
        failure = engine_failure(result)
        if failure is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = failure
            return
        grade = await grade_answer(self.dataset.checker, result.answer, item)
        record = LiveRecord(
            config_key=config.key,
            item_index=item_index,
            answer=result.answer,
            correct=grade.correct,
            score=grade.score,
            grade_detail=grade.detail,
            completion_tokens=result.usage.completion_tokens,
            prompt_tokens=result.usage.prompt_tokens,
            samples=result.samples,
            latency_s=result.latency_s,
            stopped_by=result.stopped_by,
            error=_errors(result),
            trace=_trace_json(result),
            by_model=result.by_model,
        )
        self.store.add_live(record)
        self.ran += 1
        if self.on_result is not None:
            self.on_result(record)
