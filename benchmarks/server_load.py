"""What `ponder serve` costs in front of an upstream, for pass-through requests under load.

Three processes on free loopback ports: a fast stand-in OpenAI-compatible upstream
(`_standin_upstream.py`, a fixed short completion with usage), ``ponder serve --engine
UPSTREAM/v1 --model standin`` in front of it (no strategy: every request passes straight through),
and this process, the load generator: `--clients` concurrent clients (each an `httpx.AsyncClient`
with one keep-alive connection per target), each sending its next request as soon as the last
one is answered. After a warm-up against both targets, phases alternate, direct then
through ponder, `--rounds` times, so background noise hits both sides alike; a phase is a fixed
number of requests (`--requests`) or a fixed time (`--seconds`).

Reported, per target: p50/p95 latency of a whole request (for a stream, until its last byte),
the same of its latency less the time the stand-in held it back (each response says so in a
`standin_delay_ms` field, which ponder passes through), and throughput (requests / phase wall
time, pooled over rounds); then the added latency (ponder's p50 of latency less the upstream's
delay - direct's; likewise p95), the throughput ratio (ponder / direct), the CPU each process
spent per request (from /proc; ponder's is the pass-through cost that sets its capacity: about
1000 / ms requests/s on its one core), how many upstream requests and new upstream connections
each request through ponder cost, and the load average before and after. The targets are an added
p50 of at most 2 ms and a ratio of at least 0.8.

The stand-in answers after `--upstream-ms` (default 50) +- `--upstream-jitter-ms` (default half
of it, drawn uniformly with a fixed seed), as a fast model server answering a short completion
would; with C clients that offers about C / upstream-ms requests per second. Why the jitter: with
one fixed time the closed-loop clients move in lock-step waves, all C requests of a wave arriving
together and queueing behind one another in whichever process is the busiest (the load
generator when the machine is idle, so the direct side is the slower one and the added latency
comes out negative; ponder's event loop on a loaded machine), which measures the waves rather
than ponder; a real upstream's times vary. ``--upstream-jitter-ms 0`` still runs that case. The
direct figures include everything that is not ponder (the load generator, the stand-in), so the
difference is ponder's. With ``--upstream-ms 0`` the test instead compares raw capacity: ponder's
CPU per request against a raw asyncio stand-in's, which a Python proxy doing at least the
upstream's own HTTP and JSON work cannot match, so expect a ratio well under 0.8 there.

Read the numbers with the machine in mind: the three processes share its cores, so on a busy or
small machine the load generator and the stand-in take CPU from ponder and the other way round;
the load average is printed for that reason. ponder is started with ``--max-running`` at least
`--clients`, so no request waits in its admission queue; its remote engine keeps at most 64
upstream requests in flight, so more clients than that queue there.

    python benchmarks/server_load.py [--clients 32] [--requests 2000 | --seconds 10]
        [--rounds 2] [--stream] [--upstream-ms 50] [--upstream-jitter-ms 25] [--json]

Exits 1 if any request failed (the numbers are still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import httpx

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "_standin_upstream.py"
MODEL = "standin"
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
DELAY_FIELD = re.compile(rb'"standin_delay_ms":([0-9.eE+-]+)')
EXPECTED = b"The answer is 4."  # the stand-in's completion; the non-streamed body carries it whole
TARGET_ADDED_P50_MS = 2.0
TARGET_RATIO = 0.8
READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0

Target = Literal["direct", "ponder"]
TARGETS: tuple[Target, ...] = ("direct", "ponder")


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, ask for SIGTERM when this process dies, so even
    a SIGKILLed load test (a test timeout) leaves no server behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Service:
    """One server process: started on a free port, its output in a temporary log file (never a
    pipe, which would fill up and stall it), stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], url: str, ready_path: str) -> None:
        self.name = name
        self.url = url  # the API root, ending in /v1
        self.ready_path = ready_path
        # Closed in `stop`, which `services` always calls: the file outlives this method.
        self.log: IO[bytes] = tempfile.TemporaryFile(prefix=f"ponder-load-{name}-")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, deadline: float) -> None:
        """Poll until the server answers, raising with its output if it exits or never does."""
        ready = self.url.removesuffix("/v1") + self.ready_path
        with httpx.Client(timeout=2.0) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(ready).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start in time:\n{self.output()}")
                time.sleep(0.05)

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the process has used so far; None where /proc is absent."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output(self, limit: int = 4000) -> str:
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace")
        return text[-limit:] or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def services(
    upstream_ms: float, jitter_ms: float, clients: int, log_level: str
) -> Iterator[tuple[Service, Service]]:
    """The stand-in upstream and ponder in front of it, both ready; always stopped on exit."""
    started: list[Service] = []
    try:
        port = free_port()
        upstream = Service(
            "upstream",
            [
                sys.executable,
                str(STANDIN),
                "--port",
                str(port),
                "--delay-ms",
                str(upstream_ms),
                "--jitter-ms",
                str(jitter_ms),
            ],
            f"http://127.0.0.1:{port}/v1",
            "/v1/models",
        )
        started.append(upstream)
        deadline = time.monotonic() + READY_TIMEOUT_S
        upstream.wait_ready(deadline)
        port = free_port()
        ponder = Service(
            "ponder",
            [
                sys.executable,
                "-c",
                "from ponder.cli import main; main()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--engine",
                upstream.url,
                "--model",
                MODEL,
                "--max-running",
                str(max(32, clients)),
                "--log-level",
                log_level,
            ],
            f"http://127.0.0.1:{port}/v1",
            "/health",
        )
        started.append(ponder)
        ponder.wait_ready(deadline)
        yield upstream, ponder
    finally:
        for service in reversed(started):
            service.stop()


# --- load --------------------------------------------------------------------------------------


@dataclass
class Phase:
    target: Target
    latencies_s: list[float] = field(default_factory=list)
    overheads_s: list[float] = field(default_factory=list)  # latency - the upstream's own delay
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float | None] = field(default_factory=dict)  # per process, during the phase
    upstream: dict[str, int] = field(default_factory=dict)  # the stand-in's counters, likewise

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + len(self.errors)


def request_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def upstream_delay_s(body: bytes) -> float:
    """The time the stand-in held this response back, as its body says (`standin_delay_ms`)."""
    found = DELAY_FIELD.search(body)
    if found is None:
        raise ValueError("the response does not say the stand-in's delay")
    return float(found.group(1)) / 1000


async def one_request(
    http: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> tuple[str | None, float]:
    """Send one completion request and read all of its response: (None, or what went wrong;
    the upstream's own delay in seconds)."""
    try:
        if body.get("stream"):
            async with http.stream("POST", url, json=body) as response:
                head = tail = b""
                async for piece in response.aiter_bytes():
                    if len(head) < 1024:
                        head += piece
                    tail = (tail + piece)[-64:]
                ok = response.status_code == 200 and b"data: [DONE]" in tail
                if not ok:
                    return f"HTTP {response.status_code}, stream ended {tail!r}", 0.0
                return None, upstream_delay_s(head)
        response = await http.post(url, json=body)
        if response.status_code == 200 and EXPECTED in response.content:
            return None, upstream_delay_s(response.content)
        return f"HTTP {response.status_code}: {response.content[:200]!r}", 0.0
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}", 0.0


async def run_phase(
    phase: Phase,
    clients: Sequence[httpx.AsyncClient],
    url: str,
    body: dict[str, Any],
    *,
    requests: int,
    seconds: float | None,
) -> None:
    """Each client sends requests back to back until `requests` have been sent in all, or
    until `seconds` have passed (then each finishes the request it is on)."""
    sent = 0
    started = time.perf_counter()
    stop_at = None if seconds is None else started + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while True:
            if stop_at is None:
                if sent >= requests:
                    return
                sent += 1
            elif time.perf_counter() >= stop_at:
                return
            begun = time.perf_counter()
            problem, upstream_s = await one_request(http, url, body)
            if problem is None:
                latency = time.perf_counter() - begun
                phase.latencies_s.append(latency)
                phase.overheads_s.append(latency - upstream_s)
            else:
                phase.errors.append(problem)

    await asyncio.gather(*(worker(http) for http in clients))
    phase.wall_s = time.perf_counter() - started


def _cpu(services: dict[str, Service]) -> dict[str, float | None]:
    cpu: dict[str, float | None] = {name: s.cpu_s() for name, s in services.items()}
    cpu["client"] = time.process_time()
    return cpu


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def upstream_stats(http: httpx.AsyncClient, upstream: Service) -> dict[str, int]:
    """The stand-in's counters (completions answered, connections accepted), fetched over a
    connection the direct client already holds, so fetching them opens none."""
    response = await http.get(upstream.url.removesuffix("/v1") + "/stats")
    response.raise_for_status()
    counters: dict[str, int] = response.json()
    return counters


async def measure(
    upstream: Service, ponder: Service, args: argparse.Namespace
) -> tuple[list[Phase], list[Phase]]:
    """Warm-up phases (both targets; discarded), then direct/ponder phases in turn."""
    body = request_body(args.stream)
    urls: dict[Target, str] = {
        "direct": upstream.url + "/chat/completions",
        "ponder": ponder.url + "/chat/completions",
    }
    processes = {"upstream": upstream, "ponder": ponder}
    async with contextlib.AsyncExitStack() as stack:
        # One client with one connection per simulated user, as independent users have: one
        # shared pool would cost the load generator time that grows with its size (httpcore
        # scans every pooled connection on each request), and bottleneck both targets alike.
        clients: dict[Target, list[httpx.AsyncClient]] = {
            target: [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        limits=httpx.Limits(max_connections=1), timeout=REQUEST_TIMEOUT_S
                    )
                )
                for _ in range(args.clients)
            ]
            for target in TARGETS
        }
        stats = clients["direct"][0]
        warm: list[Phase] = []
        for target in TARGETS:
            phase = Phase(target)
            await run_phase(
                phase, clients[target], urls[target], body, requests=args.warmup, seconds=None
            )
            warm.append(phase)
        phases: list[Phase] = []
        for _ in range(args.rounds):
            for target in TARGETS:
                phase = Phase(target)
                counted = await upstream_stats(stats, upstream)
                before = _cpu(processes)
                await run_phase(
                    phase,
                    clients[target],
                    urls[target],
                    body,
                    requests=args.requests,
                    seconds=args.seconds,
                )
                after = _cpu(processes)
                phase.cpu_s = {name: _spent(before[name], after[name]) for name in after}
                now = await upstream_stats(stats, upstream)
                phase.upstream = {key: now[key] - counted[key] for key in now}
                phases.append(phase)
    return warm, phases


# --- report ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating between the nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(
    phases: list[Phase], args: argparse.Namespace, load: dict[str, Any]
) -> dict[str, Any]:
    """The flat JSON record: one row of numbers a script can compare across runs."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        mine = [p for p in phases if p.target == target]
        latencies = [x for p in mine for x in p.latencies_s]
        done = sum(len(p.latencies_s) for p in mine)
        wall = sum(p.wall_s for p in mine)
        out[f"{target}_p50_ms"] = round(percentile(latencies, 50) * 1000, 3)
        out[f"{target}_p95_ms"] = round(percentile(latencies, 95) * 1000, 3)
        overheads = [x for p in mine for x in p.overheads_s]
        out[f"{target}_overhead_p50_ms"] = round(percentile(overheads, 50) * 1000, 3)
        out[f"{target}_overhead_p95_ms"] = round(percentile(overheads, 95) * 1000, 3)
        out[f"{target}_rps"] = round(done / wall, 1) if wall > 0 else 0.0
        out[f"{target}_requests"] = done
        out[f"{target}_errors"] = sum(len(p.errors) for p in mine)
        requests = sum(p.requests for p in mine)
        for process in ("ponder", "upstream", "client"):
            spent = [p.cpu_s.get(process) for p in mine]
            if target == "direct" and process == "ponder":
                continue  # idle during direct phases
            key = f"{target}_{process}_cpu_ms_per_request"
            known = [s for s in spent if s is not None]
            ok = requests and len(known) == len(spent)
            out[key] = round(sum(known) * 1000 / requests, 3) if ok else None
    through = [p for p in phases if p.target == "ponder"]
    sent = sum(p.requests for p in through)
    upstream_calls = sum(p.upstream.get("completions", 0) for p in through)
    out["ponder_upstream_requests_per_request"] = round(upstream_calls / sent, 3) if sent else None
    out["ponder_upstream_connections_opened"] = sum(
        p.upstream.get("connections", 0) for p in through
    )
    # What ponder adds to a request: its latency less the upstream's own delay, through ponder
    # against direct. With a fixed delay this is the difference of the latency percentiles;
    # with a jittered one it leaves the jitter's spread out of the comparison.
    for q in ("p50", "p95"):
        added = out[f"ponder_overhead_{q}_ms"] - out[f"direct_overhead_{q}_ms"]
        out[f"added_latency_{q}_ms"] = round(added, 3)
    direct_rps = out["direct_rps"]
    out["throughput_ratio"] = round(out["ponder_rps"] / direct_rps, 3) if direct_rps else 0.0
    out["meets_latency_target"] = out["added_latency_p50_ms"] <= TARGET_ADDED_P50_MS
    out["meets_throughput_target"] = out["throughput_ratio"] >= TARGET_RATIO
    out["phases"] = [
        {
            "target": p.target,
            "p50_ms": round(percentile(p.latencies_s, 50) * 1000, 3),
            "rps": round(len(p.latencies_s) / p.wall_s, 1) if p.wall_s > 0 else 0.0,
            "errors": len(p.errors),
        }
        for p in phases
    ]
    out.update(
        clients=args.clients,
        requests_per_phase=None if args.seconds is not None else args.requests,
        seconds_per_phase=args.seconds,
        rounds=args.rounds,
        stream=args.stream,
        upstream_ms=args.upstream_ms,
        upstream_jitter_ms=args.upstream_jitter_ms,
        ponder_log_level=args.ponder_log_level,
        cpus=os.cpu_count(),
        **load,
    )
    return out


def print_report(result: dict[str, Any], errors: list[str]) -> None:
    mode = "stream" if result["stream"] else "whole responses"
    print(
        f"{result['clients']} clients, {mode}, upstream answers after {result['upstream_ms']:g} "
        f"+- {result['upstream_jitter_ms']:g} ms, {result['rounds']} round(s) of "
        + (
            f"{result['seconds_per_phase']:g} s"
            if result["seconds_per_phase"] is not None
            else f"{result['requests_per_phase']} requests"
        )
        + " per target"
    )
    print(
        f"{'':8} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>9} {'errors':>7}   latency less the "
        "upstream's delay: p50 / p95 ms"
    )
    for target in TARGETS:
        print(
            f"{target:8} {result[f'{target}_p50_ms']:9.2f} {result[f'{target}_p95_ms']:9.2f} "
            f"{result[f'{target}_rps']:9.1f} {result[f'{target}_errors']:7d}   "
            f"{result[f'{target}_overhead_p50_ms']:.2f} / {result[f'{target}_overhead_p95_ms']:.2f}"
        )
    ok = {True: "ok", False: "MISSED"}
    print(
        f"added latency p50 {result['added_latency_p50_ms']:.2f} ms "
        f"(target <= {TARGET_ADDED_P50_MS:g}: {ok[result['meets_latency_target']]}), "
        f"p95 {result['added_latency_p95_ms']:.2f} ms"
    )
    print(
        f"throughput ratio {result['throughput_ratio']:.3f} "
        f"(target >= {TARGET_RATIO:g}: {ok[result['meets_throughput_target']]})"
    )

    def ms(key: str) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    print(
        "CPU ms per request: ponder "
        + ms("ponder_ponder_cpu_ms_per_request")
        + ", upstream "
        + ms("direct_upstream_cpu_ms_per_request")
        + " (direct) / "
        + ms("ponder_upstream_cpu_ms_per_request")
        + " (via ponder), client "
        + ms("direct_client_cpu_ms_per_request")
        + " / "
        + ms("ponder_client_cpu_ms_per_request")
    )
    print(
        f"upstream requests per request through ponder: "
        f"{result['ponder_upstream_requests_per_request']}, new upstream connections ponder "
        f"opened while measured: {result['ponder_upstream_connections_opened']}"
    )
    start, end = result["load_avg_start"], result["load_avg_end"]
    print(
        f"load average {start[0]:.2f} {start[1]:.2f} {start[2]:.2f} at start, "
        f"{end[0]:.2f} {end[1]:.2f} {end[2]:.2f} at end, on {result['cpus']} CPUs"
    )
    for problem in errors[:5]:
        print(f"error: {problem}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Latency and throughput of ponder serve's pass-through under load."
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per measured phase (all clients)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="time each phase instead of --requests"
    )
    parser.add_argument("--rounds", type=int, default=2, help="direct/ponder phase pairs")
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up requests per target (default 4/client)"
    )
    parser.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, default=False, help="SSE responses"
    )
    parser.add_argument(
        "--upstream-ms", type=float, default=50.0, help="the stand-in's mean response time"
    )
    parser.add_argument(
        "--upstream-jitter-ms",
        type=float,
        default=None,
        help="each response time is drawn uniformly from upstream-ms +- this, with a fixed seed "
        "(default: half of upstream-ms; 0: a fixed time, which moves the clients in lock-step)",
    )
    parser.add_argument(
        "--ponder-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="ponder serve's --log-level (debug logs a line per request)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.upstream_ms < 0:
        parser.error("--upstream-ms must not be negative")
    if args.upstream_jitter_ms is None:
        args.upstream_jitter_ms = args.upstream_ms / 2
    if not 0 <= args.upstream_jitter_ms <= args.upstream_ms:
        parser.error("--upstream-jitter-ms must be between 0 and --upstream-ms")
    if args.warmup is None:
        args.warmup = 4 * args.clients
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the servers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load_start = os.getloadavg()
    with services(
        args.upstream_ms, args.upstream_jitter_ms, args.clients, args.ponder_log_level
    ) as (upstream, ponder):
        _, phases = asyncio.run(measure(upstream, ponder, args))
        urls = {"upstream_url": upstream.url, "ponder_url": ponder.url}
    load = {"load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()), **urls}
    result = summarise(phases, args, load)
    errors = [e for p in phases for e in p.errors]
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        print_report(result, errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
