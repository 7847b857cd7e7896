"""Group code solutions by what they do rather than how they are written.

Two programs that return the same values on the same inputs are, as far as anyone can tell
without the hidden tests, the same answer: self-consistency over code votes on *behaviour*. Each
candidate's code runs once in the sandbox, followed by a harness that evaluates every probe (a
Python call expression such as ``add(2, 3)``) and prints one line per probe: the result's
canonical repr, or the name of the exception it raised. The tuple of those lines is the
candidate's behaviour signature.

Probes must come from what the solver may see (the examples in the prompt, public tests), never
from the hidden tests used to grade: voting on those would leak the answer key into the answer.

A candidate gets no signature (and so no vote) when its program does not get through every probe:
no code, a syntax error, an exception at import, a timeout or a crash. Then `Behaviour.error`
says why. A candidate whose every probe raised ``NameError`` defines none of what the probes call
(typically prose, or a wrongly named function): it gets no vote either, so a pile of non-solutions
cannot outvote a real one.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ponder.verifiers.code_exec import extract_code, python_block
from ponder.verifiers.sandbox import SandboxResult, run_python

RAISED = "!"
"""Prefix of a probe output that is an exception's type name (the harness writes it literally)."""
_RETURNED = "="
"""Prefix of a probe output that is a returned value's canonical repr."""
_LONG_OUTPUT = 200
"""Longer value reprs are replaced by their length and hash: exact enough to compare, short
enough that a candidate returning a huge list cannot fill the output limit."""

_HARNESS = """

import sys as _ponder_sys


def _ponder_canon(value, depth=0):
    # Canonical repr: sets and dicts equal whatever their order (set order follows string
    # hashes, which differ between processes), so they are printed sorted.
    if depth > 50:
        return repr(value)
    kind = type(value)
    if kind in (set, frozenset):
        inner = ", ".join(sorted(_ponder_canon(item, depth + 1) for item in value))
        if kind is set:
            return "{" + inner + "}" if value else "set()"
        return "frozenset({" + inner + "})" if value else "frozenset()"
    if kind is dict:
        items = sorted(
            _ponder_canon(k, depth + 1) + ": " + _ponder_canon(v, depth + 1)
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if kind is list:
        return "[" + ", ".join(_ponder_canon(item, depth + 1) for item in value) + "]"
    if kind is tuple:
        inner = ", ".join(_ponder_canon(item, depth + 1) for item in value)
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _ponder_output(probe):
    try:
        text = _ponder_canon(eval(probe, globals()))
    except BaseException as error:  # SystemExit from a probe is behaviour too
        return "!" + type(error).__name__
    if len(text) > _PONDER_LONG:
        import hashlib

        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
        text = "<%d chars, sha256 %s>" % (len(text), digest)
    return "=" + text


def _ponder_main():
    import json

    out = _ponder_sys.__stdout__
    for number, probe in enumerate(_PONDER_PROBES):
        line = json.dumps(_ponder_output(probe))
        # The leading newline ends whatever the code printed without one.
        out.write("\\n" + _PONDER_MARKER + " " + str(number) + " " + line + "\\n")
        out.flush()


_ponder_main()
"""
"""Runs after the candidate's code, in its module; the constants it reads are defined just
before it (see `probe_program`)."""


@dataclass(frozen=True)
class Behaviour:
    """What one candidate's code did on the probes: `outputs` (one per probe, "=<repr>" or
    "!<ExceptionName>"), or None with the reason in `error`. `code` is what ran."""

    code: str | None
    outputs: tuple[str, ...] | None
    error: str | None = None


def probe_program(code: str, probes: Sequence[str], marker: str) -> str:
    """The candidate's code as ``__main__`` (as the graders run it), then the probe harness. Each
    probe's line starts with `marker`, which the candidate's own prints cannot know."""
    constants = (
        f"\n\n_PONDER_PROBES = {list(probes)!r}\n"
        f"_PONDER_MARKER = {marker!r}\n"
        f"_PONDER_LONG = {_LONG_OUTPUT}\n"
    )
    return code + constants + _HARNESS


def read_outputs(result: SandboxResult, marker: str, count: int) -> tuple[str, ...] | None:
    """The probes' outputs from the harness's marked lines, or None unless the run ended cleanly
    with one line per probe."""
    found: dict[int, str] = {}
    for line in result.stdout.splitlines():
        head, _, rest = line.partition(" ")
        if head != marker:
            continue
        number, _, payload = rest.partition(" ")
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        if number.isdigit() and isinstance(value, str):
            found.setdefault(int(number), value)
    if not result.ok or len(found) != count:
        return None
    return tuple(found[k] for k in range(count))


async def run_probes(code: str, probes: Sequence[str], *, timeout_s: float) -> Behaviour:
    """Run `code` and every probe in one sandboxed program. Never raises for what the code does;
    a sandbox that fails to start is reported as the candidate's error, not the request's."""
    marker = f"@ponder-{secrets.token_hex(8)}"
    program = probe_program(code, probes, marker)
    try:
        result = await run_python(program, timeout_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)))
    except OSError as error:
        return Behaviour(code, None, f"could not start the sandbox: {error}")
    outputs = read_outputs(result, marker, len(probes))
    if outputs is None:
        if result.ok:
            return Behaviour(code, None, "the program exited before every probe had run")
        return Behaviour(code, None, f"the code did not run: {_why(result)}")
    if all(out == f"{RAISED}NameError" for out in outputs):
        reason = "every probe raised NameError: the code does not define what the probes call"
        return Behaviour(code, None, reason)
    return Behaviour(code, outputs)


async def behaviours(
    texts: Sequence[str], probes: Sequence[str], *, timeout_s: float, concurrency: int = 4
) -> list[Behaviour]:
    """The behaviour of the code in each text (extracted as the `code-exec` verifier does), with
    at most `concurrency` sandboxes running at once: each is a process tree with its own memory
    limit, and they share the machine's cores. Identical code runs once."""
    limit = asyncio.Semaphore(concurrency)

    async def bounded(code: str) -> Behaviour:
        async with limit:
            return await run_probes(code, probes, timeout_s=timeout_s)

    codes = [extract_code(text) for text in texts]
    unique = list(dict.fromkeys(code for code in codes if code.strip()))
    ran = dict(zip(unique, await asyncio.gather(*map(bounded, unique)), strict=True))
    found: list[Behaviour] = []
    for text, code in zip(texts, codes, strict=True):
        behaviour = ran.get(code, Behaviour(None, None, "no code"))
        if (
            behaviour.error is not None
            and behaviour.code is not None
            and python_block(text) is None
        ):
            reason = f"no code block, and the text does not run as Python ({behaviour.error})"
            behaviour = Behaviour(code, None, reason)
        found.append(behaviour)
    return found


def _why(result: SandboxResult) -> str:
    """Why a run failed, in one line: the sandbox's kill reason, else the last line of stderr
    (the exception, without the traceback's scratch-directory paths)."""
    if result.killed_reason is not None:
        return result.killed_reason
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exited with status {result.returncode}"


def describe_output(probe: str, output: str) -> str:
    """One probe's outcome for people: ``add(2, 3)=5`` or ``add(2, None) raises TypeError``."""
    if output.startswith(RAISED):
        return f"{probe} raises {output[len(RAISED) :]}"
    return f"{probe}={output.removeprefix(_RETURNED)}"


def signature_label(
    number: int, probes: Sequence[str], outputs: Sequence[str], width: int = 120
) -> str:
    """A short, unique, readable name for a behaviour: ``sig-<number>: `` (unique within the
    request) then its probes' outcomes, cut at `width` characters."""
    label = f"sig-{number}: " + "; ".join(
        describe_output(probe, output) for probe, output in zip(probes, outputs, strict=True)
    )
    return label if len(label) <= width else label[: width - 1] + "…"
