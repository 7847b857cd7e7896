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
dropped, since they would not fit. Budget limits are merged key by key from every source, higher
sources winning. ARGS is a comma-separated list of ``key=value`` pairs, and a bare integer first
stands for ``n``: ``self-consistency:8,group_by=exact``. Values given as text are converted by the
strategy's own parameter model, exactly as ``ponder ask --param`` does.

Budgets are `ponder.budget.Budget`s, written as everywhere else: the body's ``budget`` is a mapping
(``{"samples": 8, "seconds": "500ms", "usd": "$0.01"}``, short or long names), the
``X-Ponder-Budget`` header the text form (``samples=8,seconds=500ms``) or that JSON object. The
deadline is the budget's ``max_seconds``: ``X-Ponder-Deadline-S`` (seconds, or ``500ms``) overrides
every source's, the server's default applies when none gives one, and none may exceed the
server's maximum. The strategy's session enforces it; a pass-through request is cut off at it.

Policies. The ``policy`` parameter of ``auto`` and ``cascade`` names a file, and a server must not
open files its clients name: a request that gives one is refused. The operator chooses them
(``ponder serve --policy FILE --cascade-policy FILE``); a cascade request that gives its own rule
(probe, feature, threshold, samples) follows that rule instead of the operator's policy.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ponder.budget import Budget, BudgetError
from ponder.errors import InvalidRequestError
from ponder.strategies.cascade import RULE_FIELDS
from ponder.strategies.registry import StrategyParams, get_strategy

PASS_THROUGH = "none"
"""The strategy name that asks for no strategy, overriding a server default."""

HEADER_STRATEGY = "x-ponder-strategy"
HEADER_PARAMS = "x-ponder-params"
HEADER_BUDGET = "x-ponder-budget"
HEADER_DEADLINE = "x-ponder-deadline-s"

_UNLIMITED = Budget()
STRATEGY_LIMITS = ("max_samples", "max_tokens", "max_usd")
"""Limits only a strategy's session can enforce; a pass-through request may have a deadline only."""
POLICY = "policy"
"""The parameter that names a policy file: the operator's to set, never a request's."""
POLICY_FLAGS = {"auto": "--policy FILE", "cascade": "--cascade-policy FILE"}
"""The `ponder serve` flag that sets each strategy's policy."""
POLICY_RULES = {"cascade": RULE_FIELDS}
"""Parameters that replace a strategy's policy when a request gives them (instead of conflicting
with the operator's)."""


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
    budget: Budget | None = None
    source: str = ""


@dataclass(frozen=True)
class Selection:
    """The resolved choice. `strategy` None means pass-through; `source` says who chose it. The
    budget's `max_seconds` is the request's deadline, whichever source set it."""

    strategy: str | None
    params: StrategyParams | None
    budget: Budget
    source: str

    @property
    def passthrough(self) -> bool:
        return self.strategy is None

    @property
    def deadline_s(self) -> float | None:
        return self.budget.max_seconds


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
    budget = None
    if HEADER_BUDGET in headers:
        budget = parse_budget(headers[HEADER_BUDGET], "X-Ponder-Budget")
    deadline = None
    if HEADER_DEADLINE in headers:
        deadline = parse_budget(
            {"max_seconds": headers[HEADER_DEADLINE]}, "X-Ponder-Deadline-S"
        ).max_seconds
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
    parsed = None if budget is None else parse_budget(budget, "ponder.budget")
    return Choice(strategy=name, params=merged, budget=parsed, source="body")


def parse_budget(value: str | Mapping[str, Any], where: str) -> Budget:
    """A budget from text (``samples=8,seconds=500ms``, or a JSON object) or a mapping; a bad one
    raises `SelectionError` with `BudgetError`'s line, naming `where` it came from."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return Budget.from_mapping(parse_mapping(text, where))
            return Budget.parse(text)
        return Budget.from_mapping(value)
    except BudgetError as exc:
        raise SelectionError(f"{where}: {str(exc).removeprefix('budget: ')}", where) from exc


def resolve(
    *,
    header: Choice,
    body: Choice,
    model: Choice,
    default: Choice,
    header_deadline: float | None = None,
    default_deadline: float | None = None,
    max_deadline: float | None = None,
    policies: Mapping[str, str] | None = None,
) -> Selection:
    """Apply the precedence rules (see the module docstring) and validate the result: an unknown
    strategy, an unknown or out-of-range parameter, a policy file named by a request, or an
    unusable budget raises `SelectionError` naming its source. `policies` are the operator's
    policy files by strategy name."""
    for client in (header, body, model):
        if POLICY in client.params:
            where = where_of(client.source, "params")
            flags = " and ".join(f"{name}: {flag}" for name, flag in POLICY_FLAGS.items())
            raise SelectionError(
                f"{where}: a request may not name a policy file; the policy is set by the server "
                f"operator (`ponder serve` {flags})",
                where,
            )
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
    limits: dict[str, Any] = {}
    limit_source: dict[str, str] = {}
    for choice in reversed(ranked):  # each source's budget is already valid on its own
        if choice.budget is not None:
            for limit, value in choice.budget.model_dump(exclude_none=True).items():
                limits[limit] = value
                limit_source[limit] = choice.source
    where_params = where_of(param_source, "params")

    where_deadline = where_of(limit_source.get("max_seconds", "default"), "budget")
    if header_deadline is not None:
        limits["max_seconds"], where_deadline = header_deadline, "X-Ponder-Deadline-S"
    elif "max_seconds" not in limits and default_deadline is not None:
        limits["max_seconds"] = default_deadline
    deadline = limits.get("max_seconds")
    if deadline is not None and max_deadline is not None and deadline > max_deadline:
        raise SelectionError(
            f"{where_deadline}: a deadline of {deadline:g}s exceeds this server's limit of "
            f"{max_deadline:g}s",
            where_deadline,
        )
    budget = Budget.model_validate(limits) if limits else _UNLIMITED

    if name is None:
        if params:
            raise SelectionError(
                f"{where_params}: strategy parameters given, but no strategy was chosen "
                "(name one in the model, ponder.strategy or X-Ponder-Strategy)",
                where_params,
            )
        given = [limit for limit in STRATEGY_LIMITS if limit in limits]
        if given:
            where_budget = where_of(limit_source[given[0]], "budget")
            raise SelectionError(
                f"{where_budget}: {', '.join(given)} budget a strategy, and this request passes "
                "straight through (only a deadline, max_seconds, applies); limit its length with "
                "max_tokens instead, or name a strategy",
                where_budget,
            )
        return Selection(None, None, budget, source)

    policy = (policies or {}).get(name)
    own_rule = set(params) & set(POLICY_RULES.get(name, ()))
    if policy is not None and POLICY not in params and not own_rule:
        params[POLICY] = policy
    where_strategy = where_of(source, "strategy")
    try:
        strategy = get_strategy(name)
    except InvalidRequestError as exc:
        raise SelectionError(f"{where_strategy}: {exc}", where_strategy) from exc
    try:
        parsed = strategy.parse_params(params)
    except InvalidRequestError as exc:
        raise SelectionError(f"{where_params or where_strategy}: {exc}", where_params) from exc
    return Selection(strategy.name, parsed, budget, source)


def where_of(source: str, part: str) -> str:
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
