"""Self-consistency (Wang et al. 2022): sample n reasoning paths, answer by majority vote.

What counts as "the same answer" decides the vote, so it is a parameter (`group_by`):

* ``math`` (default): equivalent by math-verify, so "1/2", "0.5" and "\\frac{2}{4}" vote together.
* ``exact``: equal after answer normalisation only; for answers that are not numbers (labels,
  names; multiple-choice letters already agree after normalisation), where math-verify could
  merge answers that differ.
* ``code``: same behaviour. Each candidate's code runs in the sandbox on `probe_inputs` (see
  `ponder.strategies.code_behaviour`); candidates whose outputs agree on every probe vote
  together. The answer is the code of the winning group's first candidate; votes are keyed by a
  readable signature label (``sig-1: add(2, 3)=5; ...``), which is also each voting candidate's
  `answer`. Candidates whose code does not run get no vote and say why in `error`.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from ponder.strategies.code_behaviour import behaviours, signature_label
from ponder.strategies.primitives import (
    CODE_SYSTEM_PROMPT,
    MATH_SYSTEM_PROMPT,
    Question,
    as_messages,
    exact_equal,
    group_answers,
    math_equivalent,
    weighted_vote,
)
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session
from ponder.verifiers.code_exec import extract_code

SANDBOX_CONCURRENCY = 4
"""Candidate programs run at once: enough to overlap their start-up, few enough not to swamp
the machine (each is a process tree with its own memory limit)."""


class SelfConsistencyParams(StrategyParams):
    n: int = Field(default=8, ge=1, le=256, description="reasoning paths to sample")
    group_by: Literal["math", "exact", "code"] = Field(
        default="math",
        description="which answers vote together: math-verify equivalence, normalised string "
        "equality, or code behaviour on probe_inputs",
    )
    probe_inputs: list[str] = Field(
        default=[],
        max_length=100,
        description="for group_by='code': Python call expressions such as 'add(2, 3)', taken "
        "from the prompt's examples or public tests, never from the hidden tests used to grade",
    )
    code_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="for group_by='code': wall-clock seconds one candidate's code and all its "
        "probes may run",
    )

    @field_validator("probe_inputs")
    @classmethod
    def _probes_are_expressions(cls, probes: list[str]) -> list[str]:
        """Caught here, a malformed probe is the caller's error; caught in the sandbox, it would
        look like every candidate's bug."""
        for probe in probes:
            try:
                compile(probe, "<probe>", "eval")
            except SyntaxError as error:
                raise ValueError(f"{probe!r} is not a Python expression ({error.msg})") from None
        return probes

    @model_validator(mode="after")
    def _probes_only_for_code(self) -> Self:
        if self.group_by == "code" and not self.probe_inputs:
            raise ValueError(
                "group_by='code' needs probe_inputs: call expressions such as 'add(2, 3)' "
                "from the prompt's examples or public tests"
            )
        if self.group_by != "code" and self.probe_inputs:
            raise ValueError("probe_inputs apply only with group_by='code'")
        return self


async def self_consistency(
    session: Session, question: Question, p: SelfConsistencyParams
) -> Result:
    system = CODE_SYSTEM_PROMPT if p.group_by == "code" else MATH_SYSTEM_PROMPT
    candidates = await session.sample(as_messages(question, system=system), p.n)
    if p.group_by == "code":
        candidates = await _label_behaviours(session, candidates, p)
        label, votes = weighted_vote([c.answer for c in candidates])
        winner = next((c for c in candidates if label is not None and c.answer == label), None)
        answer = extract_code(winner.text) if winner is not None else None
    else:
        equivalent = math_equivalent if p.group_by == "math" else exact_equal
        label, votes = weighted_vote(group_answers([c.answer for c in candidates], equivalent))
        answer = label
    session.record("vote", votes=votes)
    share = votes.get(label, 0.0) / len(candidates) if label is not None else 0.0
    return session.result(answer, candidates, votes, share=share)


async def _label_behaviours(
    session: Session, candidates: list[Candidate], p: SelfConsistencyParams
) -> list[Candidate]:
    """Run every candidate's code on the probes; return the candidates with `answer` set to
    their behaviour's label, or to None with `error` saying why when the code did not run."""
    probes = p.probe_inputs
    found = await behaviours(
        [c.text for c in candidates],
        probes,
        timeout_s=p.code_timeout_s,
        concurrency=SANDBOX_CONCURRENCY,
    )
    labels: dict[tuple[str, ...], str] = {}
    labelled: list[Candidate] = []
    for candidate, behaviour in zip(candidates, found, strict=True):
        if behaviour.outputs is None:
            error = "; ".join(e for e in (candidate.error, behaviour.error) if e)
            labelled.append(candidate.model_copy(update={"answer": None, "error": error}))
            continue
        if behaviour.outputs not in labels:
            labels[behaviour.outputs] = signature_label(len(labels) + 1, probes, behaviour.outputs)
        labelled.append(candidate.model_copy(update={"answer": labels[behaviour.outputs]}))
    session.record(
        "execute",
        probes=list(probes),
        signatures={label: list(outputs) for outputs, label in labels.items()},
        candidates=[c.answer for c in labelled],
        errors={c.index: c.error for c in labelled if c.answer is None},
    )
    return labelled


SELF_CONSISTENCY = Strategy(
    name="self-consistency",
    summary="Sample n reasoning paths and answer by majority vote (Wang et al. 2022).",
    params=SelfConsistencyParams,
    run=self_consistency,
)
