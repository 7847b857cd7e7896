"""Run untrusted Python (model-written code) in a separate, fenced-in process.

`run_python` starts ``python -I -S`` (standard library only, no site-packages, no environment)
in a new session with a fresh scratch directory and an empty environment. The process fences
itself in before the program runs (`_sandbox_child`): new network, PID and mount namespaces where
the kernel allows (as root, on Linux), ``nobody`` instead of root, and resource limits; where
namespaces are unavailable, an audit hook refuses sockets instead. `SandboxResult.protections`
says which protections held.

The wall-clock timeout kills the program and everything it started; the result is returned only
once every process of the sandbox is gone and the scratch directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ponder.errors import InvalidRequestError

_CHILD = Path(__file__).with_name("_sandbox_child.py")
_READ_CHUNK = 65536
_GRACE_S = 2.0
"""How long the sandbox's first process gets to kill and reap the program after the timeout."""


@dataclass(frozen=True)
class SandboxResult:
    """How the program ended. `returncode` is negative for a signal (as in `subprocess`)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    """Why the sandbox stopped the program (timeout, CPU limit, ...), None if it ended itself."""
    duration_s: float
    truncated: bool = False
    """True when stdout or stderr went past `max_output` and was cut there."""
    protections: tuple[str, ...] = ()
    """The protections that held: network-namespace or network-audit-hook, pid-namespace,
    mount-namespace, unprivileged, rlimits (see `_sandbox_child`)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    def error_summary(self, limit: int = 500) -> str:
        """Why the run failed, in a line or a few: the kill reason, else the end of stderr."""
        if self.killed_reason is not None:
            return self.killed_reason
        tail = self.stderr.strip()[-limit:]
        return tail or f"exited with status {self.returncode}"


async def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 5,
    cpu_s: int = 5,
    memory_mb: int = 512,
    max_output: int = 64_000,
    file_mb: int = 16,
    scratch_mb: int = 64,
    processes: int = 64,
    namespaces: bool = True,
) -> SandboxResult:
    """Run `code` as ``__main__`` of a fenced-in Python process and collect what it printed.

    Limits: `timeout_s` wall-clock seconds, `cpu_s` CPU seconds, `memory_mb` address space,
    `file_mb` per written file, `scratch_mb` per private tmpfs, `processes` for the sandbox's
    user (RLIMIT_NPROC counts all processes and threads of that user on the machine: ``nobody``
    when started as root, so concurrent sandboxes share it; else the calling user, whose own
    processes count too), `max_output` characters kept per stream. `namespaces=False` skips the
    Linux namespaces and uses only the portable fallback.

    Whatever the program does is reported in the result; only a failure to start the sandbox
    itself (e.g. out of processes or file descriptors) raises `OSError`.
    """
    if min(timeout_s, cpu_s, memory_mb, max_output, file_mb, scratch_mb, processes) <= 0:
        raise InvalidRequestError("sandbox limits must be positive")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ponder-sandbox-", ignore_cleanup_errors=True) as tmp:
        config = {
            "cpu_s": cpu_s,
            "memory_mb": memory_mb,
            "file_mb": file_mb,
            "scratch_mb": scratch_mb,
            "processes": processes,
            "scratch": tmp,
            "namespaces": namespaces,
        }
        with contextlib.ExitStack() as pipes:
            # Our own pipes rather than asyncio's: a process that escaped the sandbox (possible
            # only without a PID namespace) may hold them open, and must not hold up the result.
            report, report_end = _pipe(pipes)
            stdout, stdout_end = _pipe(pipes)
            stderr, stderr_end = _pipe(pipes)
            stdin_file = _write_scratch(Path(tmp), code, stdin)
            with stdin_file, report_end, stdout_end, stderr_end:
                config["report_fd"] = report_end.fileno()
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-S",
                    str(_CHILD),
                    json.dumps(config),
                    stdin=stdin_file,
                    stdout=stdout_end,
                    stderr=stderr_end,
                    cwd=tmp,
                    env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp},
                    start_new_session=True,
                    pass_fds=(report_end.fileno(),),
                )
            output = _Output(max_output)
            timed_out = await _supervise(process, output, stdout, stderr, timeout_s)
            protections = _read_report(report)
    returncode = process.returncode
    assert returncode is not None
    return SandboxResult(
        returncode=returncode,
        stdout=output.text("stdout"),
        stderr=output.text("stderr"),
        timed_out=timed_out,
        killed_reason=_killed_reason(returncode, timed_out, timeout_s, cpu_s),
        duration_s=time.monotonic() - started,
        truncated=output.truncated,
        protections=protections,
    )


def _write_scratch(scratch: Path, code: str, stdin: str) -> BinaryIO:
    """Put the program and its input in the scratch directory; the input, opened, is stdin."""
    (scratch / "main.py").write_bytes(code.encode("utf-8", errors="replace"))
    (scratch / "stdin").write_bytes(stdin.encode("utf-8", errors="replace"))
    return (scratch / "stdin").open("rb")


def _pipe(stack: contextlib.ExitStack) -> tuple[BinaryIO, BinaryIO]:
    """A pipe as (read end, write end) files, both closed when `stack` closes."""
    read_fd, write_fd = os.pipe()
    read_end = stack.enter_context(os.fdopen(read_fd, "rb", buffering=0))
    write_end = stack.enter_context(os.fdopen(write_fd, "wb", buffering=0))
    return read_end, write_end


class _Output:
    """Both output streams, each kept up to `limit` characters (the rest is read and dropped)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False

    async def drain(self, name: str, pipe: BinaryIO) -> None:
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        kept = self.chunks[name]
        try:
            while chunk := await reader.read(_READ_CHUNK):
                room = self.limit * 4 - len(kept)  # bytes; cut to characters in `text`
                kept += chunk[: max(0, room)]
                self.truncated = self.truncated or len(chunk) > room
        finally:
            transport.close()

    def text(self, name: str) -> str:
        decoded = self.chunks[name].decode("utf-8", errors="replace")
        if len(decoded) > self.limit:
            self.truncated = True
            return decoded[: self.limit]
        return decoded


async def _supervise(
    process: asyncio.subprocess.Process,
    output: _Output,
    stdout: BinaryIO,
    stderr: BinaryIO,
    timeout_s: float,
) -> bool:
    """Collect output and enforce the timeout; True if it timed out. Returns once the sandbox's
    processes are gone (all of them, with a PID namespace; its process group, without)."""
    readers = [
        asyncio.create_task(output.drain("stdout", stdout)),
        asyncio.create_task(output.drain("stderr", stderr)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # the first process kills and reaps the program
        try:
            await asyncio.wait_for(process.wait(), _GRACE_S)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
    finally:
        _kill_group(process.pid)  # stragglers that stayed in the group (no PID namespace)
        _, pending = await asyncio.wait(readers, timeout=_GRACE_S)
        for task in pending:  # held open by a process that left the group
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return timed_out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read_report(pipe: BinaryIO) -> tuple[str, ...]:
    """The protections the child reported (nothing if it died before reporting)."""
    os.set_blocking(pipe.fileno(), False)
    try:
        data = pipe.read(65536)
        held = json.loads(data) if data else []
    except (BlockingIOError, ValueError):
        return ()
    return tuple(str(item) for item in held)


def _killed_reason(returncode: int, timed_out: bool, timeout_s: float, cpu_s: int) -> str | None:
    if timed_out:
        return f"timed out after {timeout_s:g} s (wall clock)"
    if returncode >= 0:
        return None
    sig = -returncode
    if sig == signal.SIGXCPU:
        return f"killed: CPU time limit of {cpu_s} s (SIGXCPU)"
    if sig == signal.SIGKILL:
        return "killed by SIGKILL (the CPU time hard limit, or out of memory)"
    if sig == signal.SIGXFSZ:
        return "killed: file size limit exceeded (SIGXFSZ)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"killed by {name}"
