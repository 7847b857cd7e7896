"""The sandbox contains what model-written code may do: loop, allocate, fork, connect, write
files, exit early. Every test also checks that nothing is left behind (see `no_leftovers`)."""

from __future__ import annotations

import asyncio
import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.verifiers.sandbox import SandboxResult, run_python

THIS_FILE = Path(__file__).resolve()


def exists(path: Path) -> bool:
    return path.exists()


def read(path: Path) -> str:
    return path.read_text()


def sandbox_processes(marker: str) -> list[str]:
    """Live processes of sandboxes whose scratch directory path contains `marker` (the config on
    the first process's command line, inherited by its forks, names it)."""
    found = []
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            cmdline = Path(proc, "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        if b"_sandbox_child" in cmdline and marker.encode() in cmdline:
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Sandboxes of each test put their scratch directories in the test's own temporary
    directory; afterwards, no process of theirs is alive and no scratch directory remains."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield
    assert sandbox_processes(str(tmp_path)) == []
    assert list(tmp_path.glob("ponder-sandbox-*")) == []


@pytest.fixture(scope="module")
def protections() -> tuple[str, ...]:
    """The protections this machine gives (namespaces need root or user namespaces)."""
    return asyncio.run(run_python("pass")).protections


def may_fork_bomb(protections: tuple[str, ...]) -> bool:
    """A fork bomb is safe to run when something bounds the number of processes: the PID
    namespace plus RLIMIT_NPROC for a non-root user (root ignores RLIMIT_NPROC)."""
    return "unprivileged" in protections or os.geteuid() != 0


async def test_runs_code_with_stdin_and_reports_protections() -> None:
    result = await run_python("name = input()\nprint(f'hello {name}')", stdin="sandbox\n")
    assert result.ok and result.returncode == 0
    assert result.stdout == "hello sandbox\n" and result.stderr == ""
    assert not result.timed_out and result.killed_reason is None
    assert "rlimits" in result.protections
    assert {"network-namespace", "network-audit-hook"} & set(result.protections)
    assert result.duration_s < 5


async def test_the_standard_library_but_nothing_else_is_importable() -> None:
    result = await run_python("import json, math, collections\nprint(json.dumps(math.pi))")
    assert result.ok and result.stdout.startswith("3.14")
    result = await run_python("import pydantic")
    assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr


async def test_errors_and_exit_codes_come_back_as_python_gives_them() -> None:
    crashed = await run_python("def f():\n    return 1 / 0\nf()")
    assert crashed.returncode == 1 and not crashed.ok
    assert "ZeroDivisionError" in crashed.stderr and "main.py" in crashed.stderr
    assert "_sandbox_child" not in crashed.stderr  # only the program's own frames
    assert "ZeroDivisionError" in crashed.error_summary()
    exited = await run_python("import sys\nprint('bye')\nsys.exit(3)")
    assert exited.returncode == 3 and exited.stdout == "bye\n" and exited.killed_reason is None


async def test_the_environment_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2")
    result = await run_python("import os\nprint(sorted(os.environ))")
    assert "PONDER_TEST_SECRET" not in result.stdout
    assert "hunter2" not in result.stdout


async def test_an_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    result = await run_python("while True:\n    pass", cpu_s=1, timeout_s=10)
    assert not result.ok and not result.timed_out
    assert result.killed_reason is not None and "CPU" in result.killed_reason
    assert result.duration_s < 5


async def test_a_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    code = "import time\nprint('start', flush=True)\ntime.sleep(60)"
    result = await run_python(code, timeout_s=1)
    assert result.timed_out and not result.ok
    assert result.killed_reason is not None and "timed out" in result.killed_reason
    assert result.stdout == "start\n"  # what it printed before is kept
    assert result.duration_s < 4


async def test_a_large_allocation_fails_inside_the_program() -> None:
    result = await run_python("data = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert result.returncode == 1 and "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


async def test_a_large_file_is_refused() -> None:
    code = "with open('big', 'wb') as f:\n    f.write(b'x' * (4 * 1024 * 1024))\nprint('wrote')"
    result = await run_python(code, file_mb=1)
    assert not result.ok and "wrote" not in result.stdout


async def test_output_is_cut_at_max_output() -> None:
    result = await run_python("print('x' * 100_000)\nprint('done')", max_output=1000)
    assert result.ok and result.truncated
    assert result.stdout == "x" * 1000


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
async def test_no_network(namespaces: bool) -> None:
    """A listening socket on loopback gets no connection, and DNS resolves nothing."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\n"
            "except Exception as e:\n"
            "    print('refused', type(e).__name__)\n"
            "try:\n"
            "    socket.getaddrinfo('pypi.org', 443)\n"
            "    print('resolved')\n"
            "except Exception as e:\n"
            "    print('unresolved', type(e).__name__)\n"
        )
        result = await run_python(code, namespaces=namespaces)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
    assert result.ok, result.stderr
    connection, lookup = result.stdout.splitlines()
    assert connection.startswith("refused") and lookup.startswith("unresolved")
    if not namespaces:
        assert "network-audit-hook" in result.protections


async def test_a_fork_bomb_is_contained(protections: tuple[str, ...]) -> None:
    if not may_fork_bomb(protections):
        pytest.skip(f"nothing bounds the process count here (protections: {protections})")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await run_python(bomb, timeout_s=2, processes=32)
    assert result.timed_out and result.duration_s < 6
    # `no_leftovers` checks, after the test, that no process of it survived


async def test_the_process_limit_binds(protections: tuple[str, ...]) -> None:
    if "unprivileged" not in protections:  # else the limit counts the caller's processes too
        pytest.skip(f"the program does not run as nobody here (protections: {protections})")
    code = (
        "import os, time\n"
        "started = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        started += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(started)\n"
    )
    result = await run_python(code, processes=16, timeout_s=10)
    assert result.ok, result.stderr
    assert int(result.stdout) < 16  # the sleeping children are killed with the sandbox


async def test_detached_processes_and_tmp_files_do_not_outlive_the_program(
    protections: tuple[str, ...],
) -> None:
    if "pid-namespace" not in protections or "mount-namespace" not in protections:
        pytest.skip(f"needs PID and mount namespaces (protections: {protections})")
    marker = Path(tempfile.gettempdir(), f"ponder-sandbox-test-{os.getpid()}")
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(marker)!r}, 'w').write('left behind')\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent exits')\n"
    )
    result = await run_python(code, timeout_s=10)
    assert result.ok and result.stdout == "parent exits\n"
    assert result.duration_s < 5  # it did not wait for the daemon's sleep
    assert not exists(marker)


async def test_root_files_are_out_of_reach(protections: tuple[str, ...]) -> None:
    if "unprivileged" not in protections:
        pytest.skip(f"the program runs as root here (protections: {protections})")
    target = THIS_FILE
    code = f"import os\nprint(os.getuid())\nopen({str(target)!r}, 'a').write('# tampered')\n"
    before = read(target)
    result = await run_python(code)
    assert result.stdout.strip() == "65534"
    # Refused, or not even visible (a checkout under /tmp lies beneath the sandbox's own /tmp).
    assert "PermissionError" in result.stderr or "FileNotFoundError" in result.stderr
    assert read(target) == before


async def test_sandboxes_run_concurrently() -> None:
    results: list[SandboxResult] = await asyncio.gather(
        *(run_python(f"import time\ntime.sleep(0.2)\nprint({i})") for i in range(4))
    )
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
