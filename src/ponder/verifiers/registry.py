"""Verifiers by name, and how each is set up when the caller configured none."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ponder.errors import InvalidRequestError
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:
    from ponder.strategies.session import Session

VERIFIER_NAMES = ("math", "self-certainty", "llm-judge", "code-exec", "program-of-thought")

_NEEDS_DATA: Mapping[str, str] = MappingProxyType(
    {
        "math": "the reference answer: run_strategy(..., verifiers={'math': "
        "MathVerifier(reference)}) (from ponder.verifiers.math)",
        "code-exec": "the unit tests: run_strategy(..., verifiers={'code-exec': "
        "CodeExecVerifier(tests, entry_point)}) (from ponder.verifiers.code_exec)",
    }
)


def default_verifier(name: str, session: Session) -> Verifier:
    """A verifier set up from the session alone (e.g. the judge is the session's engine).
    Verifiers that need per-question data (a reference answer, tests) raise a clear
    `InvalidRequestError` saying how to pass them."""
    if name in _NEEDS_DATA:
        raise InvalidRequestError(f"the {name!r} verifier needs {_NEEDS_DATA[name]}")
    if name == "self-certainty":
        from ponder.verifiers.self_certainty import SelfCertaintyVerifier

        return SelfCertaintyVerifier()
    if name == "llm-judge":
        from ponder.verifiers.llm_judge import LLMJudgeVerifier

        return LLMJudgeVerifier(session.engine)
    if name == "program-of-thought":
        from ponder.verifiers.program_of_thought import ProgramOfThoughtVerifier

        return ProgramOfThoughtVerifier()
    raise InvalidRequestError(
        f"unknown verifier {name!r}; known verifiers: {', '.join(VERIFIER_NAMES)}"
    )


def verifier_summaries() -> list[tuple[str, str]]:
    """(name, one-line summary) of every verifier, in `VERIFIER_NAMES` order, for listings."""
    from ponder.verifiers.code_exec import CodeExecVerifier
    from ponder.verifiers.llm_judge import LLMJudgeVerifier
    from ponder.verifiers.math import MathVerifier
    from ponder.verifiers.program_of_thought import ProgramOfThoughtVerifier
    from ponder.verifiers.self_certainty import SelfCertaintyVerifier

    classes: list[type[Verifier]] = [
        MathVerifier,
        SelfCertaintyVerifier,
        LLMJudgeVerifier,
        CodeExecVerifier,
        ProgramOfThoughtVerifier,
    ]
    summaries = {cls.name: str(getattr(cls, "summary", "")) for cls in classes}
    return [(name, summaries[name]) for name in VERIFIER_NAMES]
