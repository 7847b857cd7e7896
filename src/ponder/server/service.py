"""From a validated request to its work: choose the engine and the strategy, turn OpenAI's
sampling fields into ponder's, and run the work (plain responses; streams are in `streaming`).

Everything here raises `ApiError` or a `PonderError` for the app to turn into an error body, and
nothing here reads the network, so the same logic serves the HTTP app and its tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from ponder.engines.base import Engine
from ponder.engines.remote import RemoteEngine
from ponder.engines.types import Generation, GenerationRequest, SamplingParams, Usage
from ponder.errors import EngineError
from ponder.planning.policy import load_auto_policy, load_cascade_policy
from ponder.planning.pricing import Price, engine_price
from ponder.server.accounting import Accounts
from ponder.server.admission import Admission
from ponder.server.config import ServerConfig
from ponder.server.errors import ApiError
from ponder.server.execution import Meter, Outcome, run_selected
from ponder.server.metrics import Metrics
from ponder.server.schemas import ChatCompletionRequest, CompletionRequest
from ponder.server.selection import (
    Choice,
    Selection,
    body_choice,
    header_choice,
    resolve,
    split_model_name,
    where_of,
)
from ponder.server.wire import Kind, completion_error
from ponder.strategies.cascade import LARGE
from ponder.strategies.primitives import Question
from ponder.strategies.registry import strategies
from ponder.strategies.result import Result

T = TypeVar("T")

ROLES_NEEDED = {"cascade": (LARGE, "--escalate-model M [--escalate-engine URL]")}
"""Strategies that need a further engine: (its role, the `ponder serve` flags that open it)."""


@dataclass(frozen=True)
class Job:
    """One request, normalised: where it goes and what it asks for."""

    kind: Kind
    id: str
    created: int
    model: str
    engine: Engine
    selection: Selection
    question: Question
    request: GenerationRequest
    sampling: SamplingParams
    stream: bool
    include_usage: bool


class ServerState:
    """What the app shares between requests (kept on `app.state.ponder`, never in globals)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engines: dict[str, Engine] = {}
        self.prices: dict[str, Price | None] = {}
        """Each served model's price, and each further engine's (`engine_price` with the
        config's price table); strategy runs price every request with it."""
        self.roles: dict[str, Engine] = {}
        """Further engines by role ("large": a cascade's), each given to the strategies that
        need it (`ROLES_NEEDED`)."""
        self.accounts = Accounts()
        self.admission = Admission(config.max_running, config.max_waiting)
        self.metrics = Metrics(
            running=lambda: self.admission.running, waiting=lambda: self.admission.waiting
        )
        self.started = int(time.time())
        self.strategy_names = frozenset(strategies())  # looked up once: every request needs it
        self.policies: dict[str, str] = {}
        """The operator's policy file by strategy name, checked here so a bad one fails at
        startup; requests run with it and may not name their own."""
        if config.auto_policy is not None:
            load_auto_policy(config.auto_policy)
            self.policies["auto"] = str(config.auto_policy)
        if config.cascade_policy is not None:
            load_cascade_policy(config.cascade_policy)
            self.policies["cascade"] = str(config.cascade_policy)

    @property
    def relays(self) -> bool:
        """Whether a served engine is remote, so that some pass-through can be relayed."""
        return any(isinstance(e, RemoteEngine) for e in self.engines.values())

    def serve(self, engine: Engine) -> None:
        """Serve `engine` under its model name, priced (a price file that lacks it fails here,
        at startup, rather than leave it unpriced)."""
        name = engine.model
        if name in self.engines:
            raise ValueError(f"two engines serve the model name {name!r}")
        self.prices[name] = engine_price(engine, self.config.prices)
        self.engines[name] = engine

    def add_role(self, role: str, engine: Engine) -> None:
        """Give every strategy run `engine` as its further engine `role` (a cascade's "large"),
        priced like a served one."""
        self.prices[engine.model] = engine_price(engine, self.config.prices)
        self.roles[role] = engine

    # --- planning ----------------------------------------------------------------------------
    def engine_for(self, name: str) -> Engine:
        if not self.engines:
            raise ApiError(503, "no engine is open yet", type="server_error")
        if not name:
            return next(iter(self.engines.values()))
        engine = self.engines.get(name)
        if engine is None:
            served = ", ".join(self.engines)
            raise ApiError(
                404,
                f"model {name!r} is not served here; served: {served} (prefix one with a "
                "strategy as 'self-consistency:8/MODEL' to run a strategy)",
                param="model",
                code="model_not_found",
            )
        return engine

    def plan(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        headers: Mapping[str, str],
        kind: Kind,
    ) -> Job:
        """Validate what pydantic cannot (unsupported fields, the strategy choice, sampling
        limits) and pick the engine; raise a 4xx `ApiError` on the first problem."""
        problem = body.unsupported()
        if problem is not None:
            raise ApiError(400, problem[1], param=problem[0], code="unsupported_parameter")
        model_choice, base = split_model_name(body.model, self.strategy_names)
        header, header_deadline = header_choice(headers)
        options = body.ponder
        from_body = (
            body_choice(options.strategy, options.params, options.budget)
            if options is not None
            else Choice(source="body")
        )
        config = self.config
        selection = resolve(
            header=header,
            body=from_body,
            model=model_choice,
            default=Choice(
                strategy=config.default_strategy, params=config.default_params, source="default"
            ),
            header_deadline=header_deadline,
            default_deadline=config.default_deadline_s,
            max_deadline=config.max_deadline_s,
            policies=self.policies,
        )
        engine = self.engine_for(base)
        if isinstance(body, ChatCompletionRequest):
            max_tokens = body.max_completion_tokens or body.max_tokens
            wants_logprobs = bool(body.logprobs) or bool(body.top_logprobs)
            top_logprobs = body.top_logprobs or 0
        else:
            max_tokens = body.max_tokens
            wants_logprobs = body.logprobs is not None
            top_logprobs = body.logprobs or 0
        if not selection.passthrough:
            self._check_runnable(selection, engine)
            if body.n != 1:
                raise ApiError(
                    400,
                    "n must be 1 with a strategy: the strategy answers once, from as many "
                    "samples as its own n parameter says",
                    param="n",
                )
            if wants_logprobs:
                raise ApiError(
                    400, "logprobs are only available without a strategy", param="logprobs"
                )
        fields: dict[str, Any] = {
            "n": body.n if selection.passthrough else 1,
            "max_tokens": max_tokens or config.default_max_tokens,
            "temperature": config.default_temperature
            if body.temperature is None
            else body.temperature,
            "stop": body.stop_strings(),
            "seed": body.seed,
            "logprobs": wants_logprobs,
            "top_logprobs": top_logprobs,
        }
        for name in ("top_p", "top_k", "min_p"):
            value = getattr(body, name)
            if value is not None:
                fields[name] = value
        try:
            sampling = SamplingParams.model_validate(fields)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"])) or "params"
            raise ApiError(400, f"{where}: {error['msg']}", param=where) from exc
        if isinstance(body, ChatCompletionRequest):
            question: Question = list(body.messages)
            request = GenerationRequest(messages=tuple(body.messages), params=sampling)
        else:
            question = body.prompt_text()
            if not question:
                raise ApiError(400, "prompt must not be empty", param="prompt")
            request = GenerationRequest(prompt=question, params=sampling)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return Job(
            kind=kind,
            id=f"{prefix}-{secrets.token_hex(12)}",
            created=int(time.time()),
            model=body.model or engine.model,
            engine=engine,
            selection=selection,
            question=question,
            request=request,
            sampling=sampling.model_copy(update={"n": 1}),
            stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )

    def _check_runnable(self, selection: Selection, engine: Engine) -> None:
        """Refuse, before queueing, a strategy that needs an engine this server did not open, or
        a dollar budget for a model it has no price for."""
        assert selection.strategy is not None
        needed = ROLES_NEEDED.get(selection.strategy)
        if needed is not None and needed[0] not in self.roles:
            role, flags = needed
            raise ApiError(
                400,
                f"{selection.strategy} needs a {role} model to escalate to, and this server has "
                f"none: start it with `ponder serve {flags}`",
                param=where_of(selection.source, "strategy"),
            )
        used = [engine] if needed is None else [engine, self.roles[needed[0]]]
        unpriced = [e.model for e in used if self.prices.get(e.model) is None]
        if selection.budget.max_usd is not None and unpriced:
            raise ApiError(
                400,
                f"budget: max_usd needs a price for model {unpriced[0]!r}, and this server has "
                "none for it: start it with `ponder serve --prices FILE`",
            )

    # --- running ---------------------------------------------------------------------------
    async def run_strategy(self, job: Job, meter: Meter) -> Outcome:
        """Run the job's strategy with the further engine it needs, if any (only that one must
        be priced under a dollar budget)."""
        assert job.selection.strategy is not None
        needed = ROLES_NEEDED.get(job.selection.strategy)
        roles = {} if needed is None else {needed[0]: self.roles[needed[0]]}
        return await run_selected(
            meter,
            job.engine,
            job.question,
            job.selection,
            job.sampling,
            prices=self.prices,
            engines=roles,
            grace_s=self.config.deadline_grace_s,
        )

    async def run_passthrough(self, job: Job) -> Generation:
        """One engine request; at the deadline its samples are cancelled and what they
        generated so far is returned (finish_reason "length")."""
        handle = job.engine.start(job.request)
        timer = None
        if job.selection.deadline_s is not None:
            timer = asyncio.get_running_loop().call_later(job.selection.deadline_s, handle.cancel)
        try:
            generation = await handle.result()
        finally:
            if timer is not None:
                timer.cancel()
        failed = completion_error(generation)
        if failed is not None:
            raise EngineError(failed.error or "the engine failed every sample")
        return generation

    # --- accounting --------------------------------------------------------------------------
    def record_run(self, outcome: Outcome) -> None:
        """A strategy run's cost, in the metrics and the ledger."""
        result: Result = outcome.result
        self._count(result.strategy, result.samples, result.usage)
        if outcome.deadline_reached:
            self.metrics.deadlines.inc()
        self.accounts.record(result)

    def record_passthrough(self, job: Job, usage: Usage, started: float) -> None:
        """A pass-through request's cost (`started`: its `time.perf_counter()` when it was sent),
        in the metrics and the ledger: a few dict updates, as the relay path needs."""
        n = job.request.params.n
        self._count("none", n, usage)
        model = job.engine.model
        seconds = time.perf_counter() - started
        self.accounts.record_passthrough(model, usage, n, seconds, self.prices.get(model))

    def _count(self, strategy: str, samples: int, usage: Usage) -> None:
        self.metrics.samples.inc(strategy, by=samples)
        self.metrics.tokens.inc("prompt", by=usage.prompt_tokens)
        self.metrics.tokens.inc("completion", by=usage.completion_tokens)

    def render_metrics(self) -> str:
        """`/metrics`: the server's own metrics, then the ledger's counters."""
        return self.metrics.render() + self.accounts.render()


class ClientGone(Exception):
    """The client disconnected before its response was ready; its work was cancelled."""


async def until_disconnect(receive: Any, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first, in which case the work is cancelled
    (its engine requests with it) and `ClientGone` is raised. `receive` is the ASGI receive
    callable; after the body has been read, it returns only when the client disconnects."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this coroutine itself was cancelled
            task.cancel()
    if not task.done():
        await asyncio.wait({task})  # let the work cancel its engine requests
    if task.cancelled():
        raise ClientGone()
    return task.result()


async def _wait_for_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
