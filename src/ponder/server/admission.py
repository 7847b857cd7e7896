"""A bounded queue in front of the engine: at most `max_running` requests are worked on at once,
at most `max_waiting` more wait for a slot, and the rest are refused at once with 429 and a
`Retry-After` estimated from how long recent requests took. Refusing early is kinder than
accepting work that would time out in the queue, and it is what lets a load balancer or client
back off."""

from __future__ import annotations

import asyncio
import math
import time

from ponder.server.errors import too_many_requests


class Slot:
    """One admitted request's place; `release` is idempotent, so whoever finishes the request
    (the handler, or a stream's generator after the handler returned) can release it."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False
        self.started = time.monotonic()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._finish(time.monotonic() - self.started)


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(max_running)
        self._mean_s = 1.0  # running mean of request durations, for Retry-After

    def retry_after_s(self) -> int:
        """Seconds until a queued place is likely free: the queue ahead, drained at the observed
        rate. Clamped to 1..60 so a client neither hammers nor gives up."""
        backlog = (self.waiting + 1) / self.max_running
        return max(1, min(60, math.ceil(backlog * self._mean_s)))

    @property
    def free(self) -> bool:
        """A slot is free and nobody waits for one: `enter` returns at once."""
        return not self.waiting and not self._free.locked()

    async def enter(self) -> Slot:
        """Wait for a slot, or raise a 429 `ApiError` when the queue is full. Cancelling the
        caller (its client left) gives up the place in the queue."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise too_many_requests(self.retry_after_s())
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Slot(self)

    def _finish(self, duration_s: float) -> None:
        self.running -= 1
        self._free.release()
        self._mean_s = 0.8 * self._mean_s + 0.2 * duration_s
