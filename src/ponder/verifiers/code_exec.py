"""The `code-exec` verifier: run the candidate's Python against unit tests in the sandbox.

Two test formats:

* HumanEval: `tests` is the dataset's ``test`` field, which defines ``check(candidate)``; it runs
  as ``check(entry_point)``.
* MBPP: `tests` is a list of assert statements (or a string of them, one per line; other lines
  such as imports run first as set-up). Each assert runs on its own, so the explanation says how
  many passed and which failed first.

The score is pass/fail (1.0 only if every test passes), the pass@1 convention; with
`partial_credit=True` an MBPP candidate gets the fraction of asserts it passed instead.

A run only passes when the harness prints, after the last test, a random marker the candidate
cannot know: code that exits early (``sys.exit(0)``, ``os._exit``) before the tests finish fails.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from ponder.errors import InvalidRequestError
from ponder.strategies.result import Candidate, Score
from ponder.verifiers.base import Verifier
from ponder.verifiers.sandbox import SandboxResult, run_python

if TYPE_CHECKING:
    from ponder.strategies.session import Session

_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n(?P<body>.*?)(?:^[ \t]*```|\Z)",
    re.DOTALL | re.MULTILINE,
)
"""A fenced code block; an unclosed last fence (a truncated generation) runs to the end."""
_PYTHON_TAGS = frozenset({"python", "py", "python3"})


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block in `text` as (language tag, lower-cased; body), in order."""
    return [(m.group("lang").lower(), m.group("body")) for m in _FENCE.finditer(text)]


def python_block(text: str) -> str | None:
    """The last ```python block, else the last untagged block, else None."""
    blocks = code_blocks(text)
    for wanted in (_PYTHON_TAGS, frozenset({""})):
        bodies = [body for lang, body in blocks if lang in wanted]
        if bodies:
            return bodies[-1]
    return None


def extract_code(text: str) -> str:
    """The candidate's program: its last Python block, or the whole text if it has none."""
    block = python_block(text)
    return block if block is not None else text


def without_code_blocks(text: str) -> str:
    """`text` with its fenced blocks removed: the prose around the code."""
    return _FENCE.sub("", text)


class CodeExecVerifier(Verifier):
    """Passes the candidate's code through HumanEval- or MBPP-style tests in the sandbox."""

    name: ClassVar[str] = "code-exec"
    summary: ClassVar[str] = (
        "Run the solution's Python against unit tests (HumanEval check() or MBPP asserts) "
        "in a sandbox."
    )

    def __init__(
        self,
        tests: str | Sequence[str],
        entry_point: str | None = None,
        *,
        setup: str = "",
        timeout_s: float = 10.0,
        partial_credit: bool = False,
    ) -> None:
        """`setup` runs before the candidate's code (e.g. HumanEval's ``from typing import
        List``); `timeout_s` bounds wall-clock and CPU time of the whole run."""
        if isinstance(tests, str):
            humaneval = re.search(r"^def check\(", tests, re.MULTILINE) is not None
            if humaneval and entry_point is None:
                raise InvalidRequestError(
                    "these HumanEval tests define check(candidate): pass entry_point="
                    "'<the function to test>', e.g. CodeExecVerifier(test, entry_point='add')"
                )
            lines = tests.splitlines()
            asserts = [] if humaneval else [ln for ln in lines if ln.startswith("assert")]
            if not humaneval:
                setup = "\n".join([setup, *(ln for ln in lines if not ln.startswith("assert"))])
        else:
            humaneval, asserts = False, [t for t in tests if t.strip()]
        if not humaneval and not asserts:
            raise InvalidRequestError(
                "code-exec needs tests: HumanEval's check() with entry_point, or MBPP asserts"
            )
        self.tests = tests
        self.entry_point = entry_point
        self.asserts = asserts
        self.humaneval = humaneval
        self.setup = setup
        self.timeout_s = timeout_s
        self.partial_credit = partial_credit

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        return await self.check(candidate.text)

    async def check(self, text: str) -> Score:
        """Run the tests on the code in `text` (no session needed: no model compute)."""
        marker = secrets.token_hex(8)
        program = self.program(extract_code(text), marker)
        timeout = self.timeout_s
        try:
            result = await run_python(program, timeout_s=timeout, cpu_s=max(1, round(timeout)))
        except OSError as error:
            return Score(value=0.0, explanation=f"could not start the sandbox: {error}")
        if self.humaneval:
            return _humaneval_score(result, marker)
        return self._mbpp_score(result, marker)

    def program(self, code: str, marker: str) -> str:
        """The candidate's code followed by a harness that ends by printing `marker`."""
        head = f"{self.setup}\n{code}\n\n"
        if self.humaneval:
            return f"{head}{self.tests}\n\ncheck({self.entry_point})\nprint({marker!r})\n"
        return (
            f"{head}import sys as _ponder_sys\n"
            "_ponder_passed = 0\n"
            f"for _ponder_test in {self.asserts!r}:\n"
            "    try:\n"
            "        exec(_ponder_test, globals())\n"
            "        _ponder_passed += 1\n"
            "    except Exception as _ponder_error:\n"
            "        print(f'FAILED {_ponder_test}  ->  {type(_ponder_error).__name__}: '\n"
            "              f'{_ponder_error}', file=_ponder_sys.stderr)\n"
            f"print({marker!r}, _ponder_passed, flush=True)\n"
        )

    def _mbpp_score(self, result: SandboxResult, marker: str) -> Score:
        total = len(self.asserts)
        passed = _marker_value(result, marker)
        if passed is None:
            return Score(value=0.0, explanation=_no_marker_reason(result))
        if passed == total:
            return Score(value=1.0, explanation=f"all {total} tests passed")
        failures = [ln for ln in result.stderr.splitlines() if ln.startswith("FAILED ")]
        first = failures[0].removeprefix("FAILED ") if failures else "(not shown)"
        value = passed / total if self.partial_credit else 0.0
        return Score(
            value=value, explanation=f"{passed}/{total} tests passed; first failure: {first}"
        )


def _humaneval_score(result: SandboxResult, marker: str) -> Score:
    if result.ok and _marker_value(result, marker) is not None:
        return Score(value=1.0, explanation="check() passed")
    return Score(value=0.0, explanation=_no_marker_reason(result))


def _marker_value(result: SandboxResult, marker: str) -> int | None:
    """The number printed after the harness's marker (0 when nothing follows it), or None when
    the marker never appeared: the run did not get through the tests."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(marker):
            rest = line[len(marker) :].strip()
            return int(rest) if rest.isdigit() else 0
    return None


def _no_marker_reason(result: SandboxResult) -> str:
    if result.ok:
        reason = "the program exited before the tests finished"
        return reason + (" (its output was cut at the limit)" if result.truncated else "")
    return f"tests failed: {result.error_summary()}"
