"""Strategies by name: what `ponder strategies` lists, `ponder ask --strategy` runs, and the
server and benchmark harness look up. Each strategy is data (name, summary, parameter model) plus
one async function of (session, question, params)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ponder.budget import Budget
from ponder.engines.base import Engine
from ponder.engines.types import Message, SamplingParams
from ponder.errors import InvalidRequestError
from ponder.planning.pricing import Price
from ponder.strategies.primitives import Question
from ponder.strategies.result import Result
from ponder.strategies.session import EventCallback, Session
from ponder.verifiers.base import Verifier


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown names and out-of-range values are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=StrategyParams)


@dataclass(frozen=True)
class Strategy(Generic[P]):
    name: str
    summary: str
    params: type[P]
    run: Callable[[Session, Question, P], Awaitable[Result]]

    def parse_params(self, raw: Mapping[str, Any] | StrategyParams | None = None) -> P:
        """Validate parameters; errors name the parameter and its allowed range."""
        if isinstance(raw, self.params):
            return raw
        data = raw.model_dump() if isinstance(raw, StrategyParams) else dict(raw or {})
        try:
            return self.params.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise InvalidRequestError(f"{self.name}: {problems}") from exc

    def describe_params(self) -> list[dict[str, Any]]:
        """Name, default, allowed range and description of each parameter, for listings."""
        rows = []
        for name, field in self.params.model_fields.items():
            bounds = [
                f"{op} {getattr(m, attr)}"
                for m in field.metadata
                for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                if getattr(m, attr, None) is not None
            ]
            rows.append(
                {
                    "name": name,
                    "default": field.default,
                    "range": ", ".join(bounds),
                    "description": field.description or "",
                }
            )
        return rows


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "params"
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {where!r}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def strategies() -> Mapping[str, Strategy[Any]]:
    """Every strategy, by name, in the order they are listed."""
    from ponder.strategies.adaptive_consistency import ADAPTIVE_CONSISTENCY
    from ponder.strategies.auto import AUTO
    from ponder.strategies.beam_search import BEAM_SEARCH
    from ponder.strategies.best_of_n import BEST_OF_N, WEIGHTED_VOTE
    from ponder.strategies.cascade import CASCADE
    from ponder.strategies.deepconf import DEEPCONF
    from ponder.strategies.self_consistency import SELF_CONSISTENCY
    from ponder.strategies.think_longer import THINK_LONGER
    from ponder.strategies.verify_refine import VERIFY_REFINE

    listed = (
        SELF_CONSISTENCY,
        ADAPTIVE_CONSISTENCY,
        BEST_OF_N,
        WEIGHTED_VOTE,
        DEEPCONF,
        THINK_LONGER,
        VERIFY_REFINE,
        BEAM_SEARCH,
        AUTO,
        CASCADE,
    )
    return MappingProxyType({s.name: s for s in listed})


def get_strategy(name: str) -> Strategy[Any]:
    found = strategies().get(name)
    if found is None:
        known = ", ".join(strategies())
        raise InvalidRequestError(f"unknown strategy {name!r}; known strategies: {known}")
    return found


async def run_strategy(
    name: str,
    engine: Engine,
    question: Question,
    params: Mapping[str, Any] | StrategyParams | None = None,
    *,
    budget: Budget | None = None,
    sampling: SamplingParams | None = None,
    on_event: EventCallback | None = None,
    verifiers: Mapping[str, Verifier] | None = None,
    price: Price | None = None,
    prices: Mapping[str, Price | None] | None = None,
    engines: Mapping[str, Engine] | None = None,
) -> Result:
    """Run strategy `name` on one question: the library's one entry point. `verifiers` configures
    verifiers by name (e.g. `{"math": MathVerifier("42")}`); others get their default set-up.
    `prices` is the price table by model name (`ponder.planning.pricing.load_prices`; default:
    the machine cost for the embedded engine, none for a remote one): every request is priced at
    the price of the model that serves it, which sets the result's `cost_usd`; a `max_usd`
    budget needs a price for every engine given. `price` overrides `engine`'s own. A budget that
    cannot be met is refused before anything is spent. `engines` are further engines by role,
    e.g. `{"large": engine}` for the cascade's escalation model."""
    strategy = get_strategy(name)
    parsed = strategy.parse_params(params)
    session = Session(
        engine,
        strategy=name,
        budget=budget,
        sampling=sampling,
        on_event=on_event,
        verifiers=verifiers,
        price=price,
        prices=prices,
        engines=engines,
    )
    session.check_reachable(_least_prompt(question))
    return await strategy.run(session, question, parsed)


def _least_prompt(question: Question) -> tuple[Message, ...]:
    """The smallest prompt any strategy sends for `question` (the question alone, before any
    system prompt), so a budget refused as unreachable could not have been met."""
    if isinstance(question, str):
        return (Message(role="user", content=question),)
    return tuple(question)
