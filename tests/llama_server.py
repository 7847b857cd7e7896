"""Run llama-cpp-python's own OpenAI-compatible server as a subprocess, so RemoteEngine is tested
against a real server's wire format (and its quirks, such as ignoring `n`), not only mocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, limit: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:] or "(no output)"


@contextmanager
def llama_server(
    model_path: Path, *, alias: str = MODEL_ALIAS, startup_timeout_s: float = 180.0
) -> Iterator[str]:
    """Start the server on a free loopback port and yield its base URL (``.../v1``).

    One thread and a 2048-token context keep it light next to other jobs; the server is
    terminated (then killed) on exit. Startup failures raise with the server's output tail.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory(prefix="ponder-llama-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(model_path),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--n_ctx",
                    "2048",
                    "--n_threads",
                    "1",
                    "--n_threads_batch",
                    "1",
                    "--model_alias",
                    alias,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                _wait_until_ready(proc, base_url, log_path, startup_timeout_s)
                yield base_url
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)


def _wait_until_ready(
    proc: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(
                f"llama-cpp-python's server exited with code {code} before answering; "
                f"its output ends with:\n{_tail(log_path)}"
            )
        try:
            if httpx.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"llama-cpp-python's server did not answer {base_url}/models within "
                f"{timeout_s:g}s; its output ends with:\n{_tail(log_path)}"
            )
        time.sleep(0.25)
