"""Grading. Each checker owns the prompt format its extraction expects (so a prompt and its parser
never drift apart), pulls the answer out of a sample, decides which answers are the same (for
answer groups, i.e. votes) and grades an answer against the item's reference.

Math grading runs math-verify in the calling thread: its timeouts use SIGALRM, which works only on
the main thread (`math_equivalent` drops the timeout elsewhere), so the sampling loop grades on the
event loop's thread rather than in a thread pool.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ponder.answers import (
    extract_answer,
    find_answer_phrase,
    find_boxed_answer,
    find_last_number,
    normalize_answer,
)
from ponder.bench.items import CheckerName, Item
from ponder.engines.types import Message
from ponder.strategies.primitives import MATH_SYSTEM_PROMPT, as_messages, math_equivalent

CODE_TIMEOUT_S = 10.0
"""Wall-clock seconds a sample's program and its tests may run."""

ScoreFn = Callable[[str | None, dict[str, Any]], float]
"""reasoning-gym's `dataset.score_answer(answer, entry)`: 0..1."""


@dataclass(frozen=True)
class Grade:
    """A sample's answer and how it fared. `score` is 0..1 (reasoning-gym gives partial credit);
    `correct` means full marks. `detail` says why a program failed or a scorer broke."""

    answer: str | None
    score: float
    correct: bool
    detail: str | None = None


class Checker(ABC):
    """Prompt format, answer extraction, answer equivalence and grading for one kind of item."""

    name: ClassVar[CheckerName]
    template: ClassVar[str]
    """Names the prompt format; stored with a run so a changed format is caught on resume."""
    system_prompt: ClassVar[str]

    def prompt(self, question: str) -> tuple[Message, ...]:
        """The messages sent for `question`: this checker's system prompt, then the question."""
        return as_messages(question, system=self.system_prompt)

    @abstractmethod
    def extract(self, text: str, item: Item) -> str | None:
        """The answer in a sample's text, or None when it gave none."""

    def same(self, a: str, b: str) -> bool:
        """Whether two extracted answers vote together."""
        return a == b

    @abstractmethod
    async def grade(self, text: str, item: Item) -> Grade:
        """Extract the answer from `text` and grade it against `item`."""


class MathChecker(Checker):
    """Final answers in `\\boxed{}`, compared with math-verify (so 1/2, 0.5 and \\frac{2}{4}
    agree)."""

    name = "math"
    template = "math-boxed-v1"
    system_prompt = MATH_SYSTEM_PROMPT

    def extract(self, text: str, item: Item) -> str | None:
        return extract_answer(text)

    def same(self, a: str, b: str) -> bool:
        return math_equivalent(a, b)

    async def grade(self, text: str, item: Item) -> Grade:
        answer = self.extract(text, item)
        correct = answer is not None and math_correct(answer, _raw_answer(text), item.reference)
        return Grade(answer, float(correct), correct)


def math_correct(answer: str, raw: str | None, reference: str) -> bool:
    """Whether the answer equals the reference by math-verify, tried as written first (what
    math-verify parses best) and then normalised. Normalised strings are never compared with
    each other directly: normalisation can drop meaning ("2k" becomes "2")."""
    if raw is not None and math_equivalent(raw, reference):
        return True
    return raw != answer and math_equivalent(answer, reference)


def _raw_answer(text: str) -> str | None:
    """The answer as written, before normalisation, from the same source `extract_answer` uses."""
    for find in (find_boxed_answer, find_answer_phrase, find_last_number):
        raw = find(text)
        if raw is not None and normalize_answer(raw):
            return raw
    return None


_LEADING_LETTER = re.compile(r"\(?([A-J])(?:[.):]|\s|$)")


class MultipleChoiceChecker(Checker):
    """The letter of the chosen option, in `\\boxed{}` or after "the answer is"."""

    name = "multiple-choice"
    template = "mc-boxed-v1"
    system_prompt = (
        "Answer the multiple-choice question. Think step by step, then put only the letter of "
        "the correct choice within \\boxed{}."
    )

    def extract(self, text: str, item: Item) -> str | None:
        labels = item.data.get("labels") or list("ABCDEFGHIJ")
        answer = extract_answer(text)
        if answer is None:
            return None
        if answer in labels:
            return answer
        leading = _LEADING_LETTER.match(answer)
        if leading is not None and leading.group(1) in labels:
            return leading.group(1)
        return None

    async def grade(self, text: str, item: Item) -> Grade:
        answer = self.extract(text, item)
        correct = answer is not None and answer == item.reference.strip().upper()
        return Grade(answer, float(correct), correct)


_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str | None:
    """The last fenced code block that defines a function (else the last block); a block cut off
    by max_tokens counts up to the end of the text."""
    blocks = [str(block).strip("\n") for block in _FENCED.findall(text) if str(block).strip()]
    if not blocks:
        return None
    with_def = [block for block in blocks if re.search(r"^\s*def ", block, re.MULTILINE)]
    return (with_def or blocks)[-1]


def build_program(code: str, item: Item) -> str:
    """The sample's code with what the item adds: `prefix` (imports, setup) before, `tests` after;
    for HumanEval-style items whose sample wrote only a body, the item's signature first."""
    entry_point = item.data.get("entry_point")
    if entry_point and not re.search(rf"^\s*def\s+{re.escape(entry_point)}\b", code, re.MULTILINE):
        code = str(item.data.get("signature", "")) + code
    parts = [str(item.data.get("prefix", "")), code, str(item.data.get("tests", ""))]
    return "\n\n".join(part for part in parts if part.strip()) + "\n"


async def run_program(program: str, timeout_s: float = CODE_TIMEOUT_S) -> tuple[bool, str | None]:
    """Run a sample's program with its tests in ponder's sandbox: (passed, why it failed)."""
    from ponder.verifiers.sandbox import run_python

    result = await run_python(program, timeout_s=timeout_s, cpu_s=int(timeout_s))
    return result.ok, None if result.ok else result.error_summary(300)


class CodeExecChecker(Checker):
    """Code in a fenced block, graded by running the item's tests on it in the sandbox."""

    name = "code-exec"
    template = "code-block-v1"
    system_prompt = (
        "Write a correct, self-contained Python solution. Think briefly, then give the complete "
        "function(s) in a single ```python code block."
    )

    def extract(self, text: str, item: Item) -> str | None:
        code = extract_code(text)
        if code is None:
            return None
        lines = (line.rstrip() for line in code.splitlines())
        return "\n".join(line for line in lines if line) or None

    async def grade(self, text: str, item: Item) -> Grade:
        answer = self.extract(text, item)
        if answer is None:
            return Grade(None, 0.0, False, "no code block")
        passed, detail = await run_program(build_program(answer, item))
        return Grade(answer, float(passed), passed, detail)


_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


class ReasoningGymChecker(Checker):
    """reasoning-gym's own prompt (`<answer>` tags) and its generator's scorer."""

    name = "reasoning-gym"
    template = "rg-answer-tag-v1"
    system_prompt = (
        "Given a problem, your task is to answer the question by thinking step-by-step in a clear "
        "and specific manner.\nOnce you have thought about the reasoning process, provide the "
        "answer in the following format:\n<answer>answer here</answer>\nDo not explain your "
        "reasoning inside the answer tags, provide only the final answer. When an example is "
        "provided, you should strictly follow the format of the output/answer in that example.\n"
    )
    """reasoning-gym 0.1.25's default system prompt (`reasoning_gym.utils.SYSTEM_PROMPTS`)."""

    def __init__(self, score: ScoreFn) -> None:
        self._score = score

    def extract(self, text: str, item: Item) -> str | None:
        tagged = _ANSWER_TAG.findall(text)
        if tagged:
            return str(tagged[-1]).strip() or None
        return find_boxed_answer(text)

    def same(self, a: str, b: str) -> bool:
        return a == b or normalize_answer(a) == normalize_answer(b)

    async def grade(self, text: str, item: Item) -> Grade:
        answer = self.extract(text, item)
        try:
            score = float(self._score(answer, item.data["entry"]))
        except Exception as error:  # a generator's scorer bug grades 0, never stops the run
            return Grade(answer, 0.0, False, f"scorer failed: {type(error).__name__}: {error}")
        score = min(max(score, 0.0), 1.0)
        return Grade(answer, score, score >= 1.0)


def make_checker(name: CheckerName, score: ScoreFn | None = None) -> Checker:
    """The checker called `name`; reasoning-gym's needs its generator's scorer."""
    if name == "math":
        return MathChecker()
    if name == "multiple-choice":
        return MultipleChoiceChecker()
    if name == "code-exec":
        return CodeExecChecker()
    if score is None:
        raise ValueError("the reasoning-gym checker needs its dataset's scorer")
    return ReasoningGymChecker(score)
