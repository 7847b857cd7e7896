"""Which strategy a request runs, with which parameters and budget: pure functions, no I/O.

Clients differ in what they let a caller set, so a strategy can be chosen in four places, highest
precedence first:

1. headers: ``X-Ponder-Strategy``, ``X-Ponder-Params``, ``X-Ponder-Budget``, ``X-Ponder-Deadline-S``
   (for proxies and clients that cannot change the body);
2. the body's extra field ``"ponder": {"strategy", "params", "budget"}`` (``extra_body`` in the
   official client);
3. the model name, ``STRATEGY[:ARGS][/MODEL]`` such as ``self-consistency:8/qwen2.5-coder-0.5b``
   (for clients that only let you type a model name);
4. the server's default (none: requests pass straight through to the engine).

Rules. The strategy is named by the highest source that names one (``none`` names pass-through
explicitly). Parameters are merged key by key, higher sources winning, from every source that
names that same strategy or names none; a lower source's parameters for a *different* strategy are
dropped, since they would not fit. Budget limits are merged key by key from every source. ARGS is
a comma-separated list of ``key=value`` pairs, and a bare integer first stands for ``n``:
``self-consistency:8,group_by=exact``. Values given as text are converted by the strategy's own
parameter model, exactly as ``ponder ask --param`` does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ponder.budget import Budget
from ponder.errors import InvalidRequestError
from ponder.strategies.registry import StrategyParams, get_strategy

PASS_THROUGH = "none"
"""The strategy name that asks for no strategy, overriding a server default."""

HEADER_STRATEGY = "x-ponder-strategy"
HEADER_PARAMS = "x-ponder-params"
HEADER_BUDGET = "x-ponder-budget"
HEADER_DEADLINE = "x-ponder-deadline-s"

BUDGET_KEYS = ("max_samples", "max_tokens", "max_seconds")


class SelectionError(InvalidRequestError):
    """A strategy choice that cannot be used; `param` names where it came from (a header, a body
    field or the model name) so the error body can point at it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Choice:
    """What one source says. Empty fields say nothing (and leave the choice to lower sources)."""

    strategy: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Selection:
    """The resolved choice. `strategy` None means pass-through; `source` says who chose it."""

    strategy: str | None
    params: StrategyParams | None
    budget: Budget
    deadline_s: float | None
    source: str

    @property
    def passthrough(self) -> bool:
        return self.strategy is None


def parse_args(text: str, where: str) -> dict[str, str]:
    """``8,group_by=exact`` -> ``{"n": "8", "group_by": "exact"}``. Values stay text."""
    parsed: dict[str, str] = {}
    for position, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            if position == 0 and item.isdigit():
                parsed["n"] = item
                continue
            raise SelectionError(
                f"{where}: expected key=value (or a bare n first), got {item!r}", where
            )
        key = key.strip().replace("-", "_")
        if not key:
            raise SelectionError(f"{where}: empty parameter name in {item!r}", where)
        parsed[key] = value.strip()
    return parsed


def parse_mapping(text: str, where: str) -> dict[str, Any]:
    """A header value holding either a JSON object or ``key=value,key=value`` pairs."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SelectionError(f"{where}: malformed JSON ({exc})", where) from exc
        return dict(value)  # text starting with "{" is an object when it parses
    return dict(parse_args(text, where))


def parse_strategy_spec(spec: str, where: str) -> tuple[str, dict[str, str]]:
    """``NAME[:ARGS]`` -> (name, args)."""
    name, _, args = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise SelectionError(f"{where}: empty strategy name", where)
    return name, parse_args(args, where) if args else {}


def split_model_name(model: str, known: Collection[str]) -> tuple[Choice, str]:
    """Split ``STRATEGY[:ARGS][/MODEL]`` into (the model name's choice, the base model name).

    The prefix counts as a strategy only when its name (before ``:``) is a known strategy or
    ``none``, so model names with their own slashes and colons (``Qwen/Qwen2.5-0.5B``,
    ``qwen2.5:0.5b``) pass unchanged. An empty base model name means the server's default model.
    """
    head, slash, tail = model.partition("/")
    name = head.partition(":")[0].strip()
    if name != PASS_THROUGH and name not in known:
        return Choice(source="model"), model
    strategy, args = parse_strategy_spec(head, "model")
    return Choice(strategy=strategy, params=args, source="model"), tail if slash else ""


def header_choice(headers: Mapping[str, str]) -> tuple[Choice, float | None]:
    """The headers' choice and deadline. `headers` must have lower-case keys (as ASGI's do)."""
    strategy: str | None = None
    params: dict[str, Any] = {}
    if HEADER_STRATEGY in headers:
        strategy, args = parse_strategy_spec(headers[HEADER_STRATEGY], "X-Ponder-Strategy")
        params.update(args)
    if HEADER_PARAMS in headers:
        params.update(parse_mapping(headers[HEADER_PARAMS], "X-Ponder-Params"))
    budget = {}
    if HEADER_BUDGET in headers:
        budget = parse_mapping(headers[HEADER_BUDGET], "X-Ponder-Budget")
    deadline = None
    if HEADER_DEADLINE in headers:
        deadline = parse_seconds(headers[HEADER_DEADLINE], "X-Ponder-Deadline-S")
    return Choice(strategy=strategy, params=params, budget=budget, source="header"), deadline


def body_choice(
    strategy: str | None, params: Mapping[str, Any] | None, budget: Mapping[str, Any] | None
) -> Choice:
    """The body's ``ponder`` field; its strategy may carry ARGS too (``self-consistency:8``)."""
    merged: dict[str, Any] = {}
    name = None
    if strategy is not None:
        name, args = parse_strategy_spec(strategy, "ponder.strategy")
        merged.update(args)
    merged.update(params or {})
    return Choice(strategy=name, params=merged, budget=dict(budget or {}), source="body")


def parse_seconds(value: object, where: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SelectionError(
            f"{where}: expected a number of seconds, got {value!r}", where
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SelectionError(f"{where}: must be a positive number of seconds, got {value!r}", where)
    return seconds


def resolve(
    *,
    header: Choice,
    body: Choice,
    model: Choice,
    default: Choice,
    header_deadline: float | None = None,
    default_deadline: float | None = None,
    max_deadline: float | None = None,
) -> Selection:
    """Apply the precedence rules (see the module docstring) and validate the result: an unknown
    strategy, an unknown or out-of-range parameter, or an unusable budget raises `SelectionError`
    naming its source."""
    ranked = (header, body, model, default)  # highest first
    decider = next((c for c in ranked if c.strategy is not None), None)
    named = decider.strategy if decider is not None else None
    source = decider.source if decider is not None else "default"
    name = None if named == PASS_THROUGH else named

    params: dict[str, Any] = {}
    param_source = ""
    for choice in reversed(ranked):  # lowest first, so higher sources overwrite
        if choice.params and choice.strategy in (None, named):
            params.update(choice.params)
            param_source = choice.source
    budget_raw: dict[str, Any] = {}
    budget_source = ""
    for choice in reversed(ranked):
        if choice.budget:
            budget_raw.update(choice.budget)
            budget_source = choice.source
    where_params = _where(param_source, "params")
    where_budget = _where(budget_source, "budget")

    deadline_raw = budget_raw.pop("max_seconds", None)
    deadline = (
        header_deadline
        if header_deadline is not None
        else parse_seconds(deadline_raw, where_budget)
        if deadline_raw is not None
        else default_deadline
    )
    if deadline is not None and max_deadline is not None and deadline > max_deadline:
        where = "X-Ponder-Deadline-S" if header_deadline is not None else where_budget
        raise SelectionError(
            f"{where}: a deadline of {deadline:g}s exceeds this server's limit of "
            f"{max_deadline:g}s",
            where,
        )
    unknown = sorted(set(budget_raw) - set(BUDGET_KEYS))
    if unknown:
        raise SelectionError(
            f"{where_budget}: unknown budget limit(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(BUDGET_KEYS)}",
            where_budget,
        )
    try:
        budget = Budget.model_validate(budget_raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise SelectionError(f"{where_budget}: {problems}", where_budget) from exc

    if name is None:
        if params:
            raise SelectionError(
                f"{where_params}: strategy parameters given, but no strategy was chosen "
                "(name one in the model, ponder.strategy or X-Ponder-Strategy)",
                where_params,
            )
        if budget.max_samples is not None or budget.max_tokens is not None:
            raise SelectionError(
                f"{where_budget}: max_samples and max_tokens budget a strategy, and this request "
                "passes straight through; limit its length with max_tokens instead",
                where_budget,
            )
        return Selection(None, None, budget, deadline, source)

    where_strategy = _where(source, "strategy")
    try:
        strategy = get_strategy(name)
    except InvalidRequestError as exc:
        raise SelectionError(f"{where_strategy}: {exc}", where_strategy) from exc
    try:
        parsed = strategy.parse_params(params)
    except InvalidRequestError as exc:
        raise SelectionError(f"{where_params or where_strategy}: {exc}", where_params) from exc
    return Selection(strategy.name, parsed, budget, deadline, source)


def _where(source: str, part: str) -> str:
    """The name a client sees for where a part of the choice came from."""
    return {
        "header": {
            "strategy": "X-Ponder-Strategy",
            "params": "X-Ponder-Params",
            "budget": "X-Ponder-Budget",
        }[part],
        "body": f"ponder.{part}",
        "model": "model",
        "default": f"server default {part}",
    }.get(source, part)
