"""The engine protocol: everything that costs compute goes through `Engine.start`, so usage and
cancellation are counted in one place whatever the backend."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType

from ponder.engines.types import (
    Capabilities,
    Generation,
    GenerationRequest,
    SampleEvent,
)


class GenerationHandle:
    """One running request. Stream its per-sample events, cancel one sample or all of them, and
    await the final `Generation`, which always includes cancelled samples and their tokens.

    The engine drives it from the event loop's thread (`emit`, `finish`, `fail`); callers use
    `events`, `cancel` and `result`.
    """

    def __init__(self, n: int, on_cancel: Callable[[int | None], None]) -> None:
        self.n = n
        self._on_cancel = on_cancel
        self._events: asyncio.Queue[SampleEvent | None] = asyncio.Queue()
        self._result: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        # A caller that stopped waiting (cancelled) must not leave an unread error to be logged.
        self._result.add_done_callback(lambda f: f.cancelled() or f.exception())

    # --- engine side -------------------------------------------------------------------------
    def emit(self, events: Iterable[SampleEvent]) -> None:
        for event in events:
            self._events.put_nowait(event)

    def finish(self, generation: Generation) -> None:
        if not self._result.done():
            self._result.set_result(generation)
        self._events.put_nowait(None)

    def fail(self, error: BaseException) -> None:
        if not self._result.done():
            self._result.set_exception(error)
        self._events.put_nowait(None)

    # --- caller side -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._result.done()

    def cancel(self, index: int | None = None) -> None:
        """Stop sample `index` (or every sample). Tokens already generated stay counted."""
        if index is not None and not 0 <= index < self.n:
            raise IndexError(f"sample index {index} out of range 0..{self.n - 1}")
        if not self._result.done():
            self._on_cancel(index)

    async def events(self) -> AsyncIterator[SampleEvent]:
        """Deltas and finished samples as they happen; ends when the request ends, raising the
        request's error if it failed."""
        while True:
            event = await self._events.get()
            if event is None:
                if self._result.done() and self._result.exception() is not None:
                    raise self._result.exception()  # type: ignore[misc]
                return
            yield event

    async def result(self) -> Generation:
        """The final generation. If the awaiting task is cancelled, the request is cancelled."""
        try:
            return await asyncio.shield(self._result)
        except asyncio.CancelledError:
            self.cancel()
            raise


class Engine(ABC):
    """A source of samples. Strategies see only this interface."""

    model: str
    capabilities: Capabilities

    @abstractmethod
    def start(self, request: GenerationRequest) -> GenerationHandle:
        """Begin generating; must be called from a running event loop."""

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.start(request).result()

    async def aclose(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release the engine's resources (threads, connections, the model)."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
