"""The few pieces strategies are made of: prompts, answer grouping, and votes.

Sampling itself lives on `Session` (it must pass through the budget); verifiers score; these pure
functions decide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ponder.answers import normalize_answer
from ponder.engines.types import Message
from ponder.errors import InvalidRequestError

MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_SYSTEM_PROMPT = (
    "Write a correct, self-contained Python solution. Think briefly, then give the complete "
    "function(s) in a single ```python code block."
)
"""For code questions: one fenced block is what `ponder.verifiers.code_exec` extracts and runs."""

Question = str | Sequence[Message]


def as_messages(question: Question, system: str = MATH_SYSTEM_PROMPT) -> tuple[Message, ...]:
    """A bare question gets the math system prompt; a conversation is passed on unchanged."""
    if isinstance(question, str):
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        return (Message(role="system", content=system), Message(role="user", content=question))
    if not question:
        raise InvalidRequestError("the conversation has no messages")
    return tuple(question)


def question_text(question: Question) -> str:
    """The last user turn: what a judge or verifier should read as "the question"."""
    if isinstance(question, str):
        return question
    for message in reversed(question):
        if message.role == "user" and isinstance(message.content, str):
            return message.content
    return ""


def math_equivalent(a: str, b: str) -> bool:
    """Whether two extracted answers are the same mathematical object (`math-verify`), so that
    "1/2", "0.5" and "\\frac{2}{4}" vote together. Equal strings are equal without parsing."""
    if a == b:
        return True
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return bool(
            verify(
                parse(f"${a}$", parsing_timeout=limit),
                parse(f"${b}$", parsing_timeout=limit),
                timeout_seconds=limit,
            )
        )
    except Exception:  # a parser failure means "not shown equal", never a failed request
        return False


Equivalence = Callable[[str, str], bool]


def exact_equal(a: str, b: str) -> bool:
    """Plain string equality of normalised answers, for answers math-verify should not touch
    (labels, names, multiple-choice letters), where "1/2" and "0.5" are different answers."""
    return a == b


def group_answers(
    answers: Sequence[str | None], equivalent: Equivalence = math_equivalent
) -> list[str | None]:
    """Map each answer to the first-seen answer it is equivalent to (None stays None)."""
    representatives: list[str] = []
    grouped: list[str | None] = []
    for answer in answers:
        if answer is None:
            grouped.append(None)
            continue
        key = normalize_answer(answer)
        match = next((r for r in representatives if equivalent(r, key)), None)
        if match is None:
            representatives.append(key)
            match = key
        grouped.append(match)
    return grouped


def weighted_vote(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest total weight, and the table (largest first; ties go to the
    answer seen first). Samples without an answer do not vote. Unweighted = majority vote."""
    if weights is None:
        weights = [1.0] * len(answers)
    if len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    table: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            table[answer] = table.get(answer, 0.0) + weight
    ordered = dict(sorted(table.items(), key=lambda kv: -kv[1]))  # sorted() is stable
    return next(iter(ordered), None), ordered


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, dict[str, float]]:
    return weighted_vote(answers)
