"""The server's request metrics: all state lives on the `Metrics` object the app keeps on
`app.state`, so two apps in one process (tests, the load test) never share counts."""

from __future__ import annotations

from collections.abc import Callable

from ponder.prometheus import Counter, Gauge, Histogram, exposition


class Metrics:
    """The server's metrics. `running` and `waiting` read the admission queue when scraped."""

    def __init__(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        self.requests = Counter(
            "ponder_requests_total", "HTTP requests by route and status.", ("route", "status")
        )
        self.duration = Histogram(
            "ponder_request_duration_seconds",
            "Wall time of completion requests, queueing included.",
            (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            ("route",),
        )
        self.samples = Counter(
            "ponder_samples_total", "Engine samples drawn, by strategy.", ("strategy",)
        )
        self.tokens = Counter(
            "ponder_tokens_total", "Tokens processed (cancelled samples included).", ("kind",)
        )
        self.rejected = Counter(
            "ponder_rejected_total", "Requests refused with 429 because the queue was full."
        )
        self.deadlines = Counter(
            "ponder_deadline_reached_total", "Requests answered early because of their deadline."
        )
        self.disconnects = Counter(
            "ponder_client_disconnects_total",
            "Requests whose client left; their work was cancelled.",
        )
        self.upstream_errors = Counter(
            "ponder_upstream_errors_total", "Requests failed by the engine (502/504)."
        )
        self.running = Gauge("ponder_requests_running", "Requests being worked on.", running)
        self.waiting = Gauge("ponder_requests_waiting", "Requests queued for a slot.", waiting)

    def render(self) -> str:
        families: list[Counter | Gauge | Histogram] = [
            self.requests,
            self.duration,
            self.samples,
            self.tokens,
            self.rejected,
            self.deadlines,
            self.disconnects,
            self.upstream_errors,
            self.running,
            self.waiting,
        ]
        return exposition(families)
