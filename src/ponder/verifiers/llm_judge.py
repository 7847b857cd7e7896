"""The `llm-judge` verifier: a model reads the question and a candidate's solution and judges it.

The judge is the session's engine by default, or any other engine (a larger model judging a
smaller one). Every judge call goes through `session.generate(step="verify")`, so its tokens are
counted in the session's usage and budget.

Modes:

* ``yes-no``: one greedy token after "Is this solution correct? Answer Yes or No."; the score is
  P(yes) / (P(yes) + P(no)) from the top logprobs of that token (case and space variants summed),
  a graded value from a single token. If neither appears there (or the engine has no logprobs),
  the token's text decides: 1 for yes, 0 for no.
* ``score``: the judge reasons, then ends with "Score: X" with X in {0, 0.5, 1} (DeepSeekMath-V2
  style: wrong / sound with minor flaws / fully correct). A reply without that line scores 0.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, ClassVar, Literal

from ponder.budget import BudgetExhausted
from ponder.engines.base import Engine
from ponder.engines.types import Completion, Message
from ponder.errors import InvalidRequestError
from ponder.strategies.result import Candidate, Score
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:
    from ponder.strategies.session import Session

JudgeMode = Literal["yes-no", "score"]

JUDGE_SYSTEM_PROMPT = "You are a careful, strict grader of solutions to problems."
YES_NO_INSTRUCTION = "Is this solution correct? Answer Yes or No."
SCORE_INSTRUCTION = (
    "Check the solution step by step. Then, on the last line, grade it in exactly this format:\n"
    "Score: 1 if the solution is completely correct,\n"
    "Score: 0.5 if its reasoning is sound but has minor errors or omissions,\n"
    "Score: 0 if it is wrong or its answer is not justified."
)
_SCORE_LINE = re.compile(
    r"score\s*[:=]\s*[*$\s]*(?:\\boxed\{\s*)?(?P<value>1(?:\.0+)?|0?\.50*|0(?:\.0+)?)(?![\d.])",
    re.IGNORECASE,
)
_PUNCTUATION = ".,!:;\"'*"
JUDGE_FAILED = "the judge call failed"
"""How a score from a failed judge call (a 0, not a verdict) explains itself."""


class LLMJudgeVerifier(Verifier):
    """A judge model's verdict on each candidate (see the module docstring for the modes)."""

    name: ClassVar[str] = "llm-judge"
    summary: ClassVar[str] = (
        "A judge model grades each solution: P(Yes) of one token, or a 'Score: 0/0.5/1' line."
    )

    def __init__(
        self, engine: Engine | None = None, mode: JudgeMode = "yes-no", max_tokens: int = 1024
    ) -> None:
        if mode not in ("yes-no", "score"):
            raise InvalidRequestError(f"unknown llm-judge mode {mode!r}; use 'yes-no' or 'score'")
        self.engine = engine
        self.mode = mode
        self.max_tokens = max_tokens

    def messages(self, question: str, candidate: Candidate) -> list[Message]:
        """The judge's prompt for one candidate."""
        instruction = YES_NO_INSTRUCTION if self.mode == "yes-no" else SCORE_INSTRUCTION
        user = f"Question:\n{question}\n\nProposed solution:\n{candidate.text}\n\n{instruction}"
        return [
            Message(role="system", content=JUDGE_SYSTEM_PROMPT),
            Message(role="user", content=user),
        ]

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        """The judge's verdict. Budget exhaustion propagates (the strategy decides what to do);
        any other failure of the judge call is a 0 with the reason."""
        if not candidate.text.strip():
            return Score(value=0.0, explanation="the candidate is empty; nothing to judge")
        engine = self.engine or session.engine
        try:
            if self.mode == "yes-no":
                caps = engine.capabilities
                top = min(20, caps.max_top_logprobs) if caps.logprobs else 0
                generation = await session.generate(
                    self.messages(question, candidate),
                    1,
                    step="verify",
                    engine=engine,
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=top > 0,
                    top_logprobs=top,
                )
                return read_yes_no(generation.completions[0])
            generation = await session.generate(
                self.messages(question, candidate),
                1,
                step="verify",
                engine=engine,
                max_tokens=self.max_tokens,
                temperature=0.0,
            )
            return read_score_line(generation.completions[0].text)
        except BudgetExhausted:
            raise
        except Exception as error:  # the judge failed on this candidate, not the request
            return Score(value=0.0, explanation=f"{JUDGE_FAILED}: {error}")


def read_yes_no(completion: Completion) -> Score:
    """P(yes) / (P(yes) + P(no)) from the first token's alternatives, else the token's text."""
    if completion.logprobs:
        first = completion.logprobs[0]
        yes = no = 0.0
        for top in first.top_logprobs:
            word = top.token.strip().strip(_PUNCTUATION).lower()
            if word == "yes":
                yes += math.exp(top.logprob)
            elif word == "no":
                no += math.exp(top.logprob)
        if yes + no > 0:
            return Score(
                value=min(1.0, yes / (yes + no)),
                explanation=f"judge's first token: P(yes)={yes:.4f}, P(no)={no:.4f}",
            )
    reply = completion.text.strip().strip(_PUNCTUATION).lower()
    if reply.startswith("yes"):
        return Score(value=1.0, explanation="the judge answered Yes")
    if reply.startswith("no"):
        return Score(value=0.0, explanation="the judge answered No")
    return Score(
        value=0.0, explanation=f"the judge answered neither Yes nor No: {completion.text!r}"
    )


def read_score_line(reply: str) -> Score:
    """The value of the judge's last "Score: X" line (X in {0, 0.5, 1}); 0 if there is none."""
    matches = list(_SCORE_LINE.finditer(reply))
    if not matches:
        tail = reply.strip()[-200:]
        return Score(
            value=0.0, explanation=f"no 'Score: 0|0.5|1' line in the judge's reply: {tail!r}"
        )
    value = float(matches[-1].group("value"))
    reasoning = reply[: matches[-1].start()].strip()[-300:]
    return Score(value=value, explanation=f"judge: Score {value:g}; reasoning ends {reasoning!r}")
