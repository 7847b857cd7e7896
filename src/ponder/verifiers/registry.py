"""Verifiers by name, and how each is set up when the caller configured none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ponder.errors import InvalidRequestError
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:
    from ponder.strategies.session import Session

VERIFIER_NAMES = ("math", "self-certainty", "llm-judge", "code-exec", "program-of-thought")


def default_verifier(name: str, session: Session) -> Verifier:
    """A verifier set up from the session alone (e.g. the judge is the session's engine)."""
    raise InvalidRequestError(
        f"unknown verifier {name!r}; known verifiers: {', '.join(VERIFIER_NAMES)}"
    )
