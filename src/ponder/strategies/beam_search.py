"""Step-level beam search: grow solutions one reasoning step at a time, keeping the best few.

Scoring whole solutions (best-of-n) can only pick among finished attempts; scoring partial ones
lets the search drop a bad start early and spend the remaining samples on the promising prefixes
(as with process reward models, Snell et al. 2024). A step ends at `step_delimiter` ("\\n\\n"); each
kept beam is continued (an assistant prefill) by `expansions` samples in one request, every
extended prefix is scored by a verifier, and the `beams` best survive. A beam is complete when the
model ends its reply or writes a \\boxed{} answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ponder.answers import extract_answer, find_boxed_answer
from ponder.budget import BudgetExhausted
from ponder.engines.types import Completion, Message
from ponder.errors import PonderError
from ponder.strategies.primitives import Question, as_messages, question_text
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.selection import answer_by_score
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier


class BeamSearchParams(StrategyParams):
    beams: int = Field(default=2, ge=1, le=32, description="partial solutions kept per step")
    expansions: int = Field(
        default=2, ge=1, le=32, description="continuations sampled per beam per step"
    )
    max_steps: int = Field(default=8, ge=1, le=128, description="most reasoning steps")
    step_tokens: int = Field(default=96, ge=1, le=8192, description="most tokens per step")
    scorer: str = Field(
        default="self-certainty",
        min_length=1,
        description="verifier that scores partial solutions (self-certainty, llm-judge, ...)",
    )
    step_delimiter: str = Field(
        default="\n\n", min_length=1, max_length=32, description="text that ends a step"
    )
    top_logprobs: int = Field(
        default=20,
        ge=0,
        le=20,
        description="alternatives per token to sample when the scorer reads logprobs",
    )


@dataclass(frozen=True)
class _Beam:
    """A partial (or complete) solution, as a candidate whose text is everything so far."""

    candidate: Candidate
    done: bool
    score: float = 0.0


async def beam_search(session: Session, question: Question, p: BeamSearchParams) -> Result:
    """beams = [""]; repeat: children = expand(each beam, `expansions`); score(children);
    keep the best (`beams` less the complete ones); until `beams` are complete or `max_steps`."""
    messages = as_messages(question)
    problem = question_text(question)
    scorer = session.verifier(p.scorer)  # an unknown verifier fails before any compute
    options = _sampling(session, scorer, p)
    active: list[_Beam | None] = [None]  # None: the empty solution, before the first step
    complete: list[_Beam] = []
    stopped = "max_steps"
    for step in range(p.max_steps):
        if session.exhausted:
            stopped = "budget"
            break
        children = await _expand(session, messages, active, p, options)
        if not children:
            stopped = "budget" if session.exhausted else "no expansions"
            break
        children = await _score(session, scorer, problem, children)
        kept = _best(children, p.beams - len(complete))
        complete += [b for b in kept if b.done]
        active = [b for b in kept if not b.done]
        session.record(
            "beams",
            depth=step + 1,
            scores={b.candidate.index: round(b.score, 4) for b in children},
            kept=[b.candidate.index for b in kept],
            complete=[b.candidate.index for b in complete],
        )
        if len(complete) >= p.beams or not active:
            stopped = "complete" if complete else "no beams"
            break
    session.record("stop", reason=stopped, stopped_by=session.stopped_by)
    finals = complete or [b for b in active if b is not None]
    return answer_by_score(session, [b.candidate for b in finals], [b.score for b in finals])


def _sampling(session: Session, scorer: Verifier, p: BeamSearchParams) -> dict[str, Any]:
    """Step-wise sampling; logprobs when the scorer reads them, or when the engine returns them
    anyway (they tell a step that ended at the delimiter from the model's own end)."""
    options: dict[str, Any] = {"max_tokens": p.step_tokens, "stop": (p.step_delimiter,)}
    if scorer.needs_logprobs:
        options |= {"logprobs": True, "top_logprobs": p.top_logprobs}
    elif session.engine.capabilities.logprobs:
        options["logprobs"] = True
    return options


async def _expand(
    session: Session,
    messages: Sequence[Message],
    active: Sequence[_Beam | None],
    p: BeamSearchParams,
    options: dict[str, Any],
) -> list[_Beam]:
    """Every active beam's continuations, one request per beam, concurrently. A beam whose
    request failed (the budget, an engine error) just has no children."""
    first = session.samples
    outcomes = await asyncio.gather(
        *(_extend(session, messages, beam, p, options) for beam in active),
        return_exceptions=True,
    )
    children: list[_Beam] = []
    for outcome in outcomes:
        if isinstance(outcome, BudgetExhausted | PonderError):
            if isinstance(outcome, PonderError):
                session.record("error", error=str(outcome))
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        children += outcome
    for number, child in enumerate(children):  # steps are built from completions: number them
        child.candidate.index = first + number
    return children


async def _extend(
    session: Session,
    messages: Sequence[Message],
    beam: _Beam | None,
    p: BeamSearchParams,
    options: dict[str, Any],
) -> list[_Beam]:
    if beam is None:
        generation = await session.generate(messages, p.expansions, step="expand", **options)
    else:
        generation = await session.generate(
            [*messages, Message(role="assistant", content=beam.candidate.text)],
            p.expansions,
            step="expand",
            continue_final=True,
            **options,
        )
    return [_child(beam, c, p.step_delimiter) for c in generation.completions if c.error is None]


def _child(parent: _Beam | None, step: Completion, delimiter: str) -> _Beam:
    """The parent's solution extended by one step; complete when the model ended its reply
    there or the solution now holds a boxed answer."""
    before = parent.candidate if parent is not None else None
    text = (before.text if before else "") + step.text
    at_delimiter = _at_delimiter(step, delimiter)
    done = (step.finish_reason == "stop" and not at_delimiter) or find_boxed_answer(
        text
    ) is not None
    if at_delimiter and not done:  # the next step continues after it
        text += delimiter
    logprobs = None
    if step.logprobs is not None:
        logprobs = [*((before.logprobs or []) if before else []), *step.logprobs]
    candidate = Candidate(
        index=step.index,
        text=text,
        answer=extract_answer(text),
        finish_reason=step.finish_reason,
        completion_tokens=(before.completion_tokens if before else 0) + step.completion_tokens,
        latency_s=step.latency_s,
        logprobs=logprobs,
    )
    return _Beam(candidate, done=done)


def _at_delimiter(step: Completion, delimiter: str) -> bool:
    """Whether a sample stopped at the step delimiter rather than at the model's end of text.
    Engines report both as finish "stop" and cut the stop string out of the text, but the sampled
    tokens (logprobs) still hold it. Without logprobs a non-empty step is taken to end at the
    delimiter; the model's own end then shows as an empty next step."""
    if step.finish_reason != "stop" or not step.text.strip():
        return False
    if step.logprobs is None:
        return True
    return delimiter in "".join(t.token for t in step.logprobs)


async def _score(
    session: Session, scorer: Verifier, problem: str, children: Sequence[_Beam]
) -> list[_Beam]:
    """Score every child; one the budget left unscored scores 0 rather than failing the search."""
    scores = await scorer.score_all(session, problem, [b.candidate for b in children])
    return [
        _Beam(beam.candidate, beam.done, score.value if score is not None else 0.0)
        for beam, score in zip(children, scores, strict=True)
    ]


def _best(children: Sequence[_Beam], slots: int) -> list[_Beam]:
    """The `slots` best-scored children with distinct texts; ties keep the earlier child."""
    kept: list[_Beam] = []
    seen: set[str] = set()
    for beam in sorted(children, key=lambda b: -b.score):  # sorted() is stable
        if beam.candidate.text not in seen and len(kept) < slots:
            seen.add(beam.candidate.text)
            kept.append(beam)
    return kept


BEAM_SEARCH = Strategy(
    name="beam-search",
    summary="Step-level beam search over partial solutions scored by a verifier (self-certainty).",
    params=BeamSearchParams,
    run=beam_search,
)
