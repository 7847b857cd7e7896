"""A deterministic stand-in engine for fast unit tests of strategy logic.

It replays scripted texts (one per sample, in the order samples are drawn), emits them word by word
as deltas (one token per word), honours `max_tokens` and cancellation, and keeps every request it
saw, so strategies can be tested branch by branch without a model. The real engines have their own
tests on real models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.types import (
    Capabilities,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    SampleDelta,
    SampleFinished,
    Timings,
    Usage,
)

Script = Callable[[GenerationRequest, int], str]


@dataclass
class _Sample:
    words: list[str]
    made: int = 0
    ended: FinishReason | None = None
    cancel: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.words[: self.made])


@dataclass
class _Run:
    request: GenerationRequest
    samples: list[_Sample]
    handle: GenerationHandle | None = None
    cancel_all: bool = False
    prompt_tokens: int = 10
    step_s: float = 0.0
    model: str = "scripted"

    def on_cancel(self, index: int | None) -> None:
        if index is None:
            self.cancel_all = True
        else:
            self.samples[index].cancel = True

    async def play(self) -> None:
        assert self.handle is not None
        limit = self.request.params.max_tokens
        while any(s.ended is None for s in self.samples):
            for i, s in enumerate(self.samples):
                if s.ended is not None:
                    continue
                if self.cancel_all or s.cancel:
                    s.ended = "cancelled"
                elif s.made >= len(s.words):
                    s.ended = "stop"
                elif s.made >= limit:
                    s.ended = "length"
                else:
                    word = s.words[s.made] if s.made == 0 else " " + s.words[s.made]
                    s.made += 1
                    self.handle.emit([SampleDelta(index=i, text=word, tokens=1)])
                    continue
                self.handle.emit([SampleFinished(completion=self.completion(i))])
            await asyncio.sleep(self.step_s)
        completions = [self.completion(i) for i in range(len(self.samples))]
        self.handle.finish(
            Generation(
                model=self.model,
                completions=completions,
                usage=Usage(
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=sum(c.completion_tokens for c in completions),
                ),
                timings=Timings(total_s=0.0),
            )
        )

    def completion(self, i: int) -> Completion:
        s = self.samples[i]
        assert s.ended is not None
        return Completion(
            index=i, text=s.text, finish_reason=s.ended, completion_tokens=s.made, latency_s=0.0
        )


class ScriptedEngine(Engine):
    """Sample k of the engine's life answers `texts[k % len(texts)]` (or `script(request, k)`)."""

    def __init__(
        self, texts: Sequence[str] | Script, *, prompt_tokens: int = 10, step_s: float = 0.0
    ) -> None:
        self.model = "scripted"
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=False,
            max_top_logprobs=0,
            streaming=True,
            prefix_caching=False,
            cancel_sample=True,
        )
        if callable(texts):
            self._script: Script = texts
        else:
            fixed = list(texts)
            self._script = lambda _request, k: fixed[k % len(fixed)]
        self.prompt_tokens = prompt_tokens
        self.step_s = step_s
        self.requests: list[GenerationRequest] = []
        self._drawn = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, request: GenerationRequest) -> GenerationHandle:
        self.requests.append(request)
        first, self._drawn = self._drawn, self._drawn + request.params.n
        samples = [
            _Sample(self._script(request, first + i).split()) for i in range(request.params.n)
        ]
        run = _Run(request, samples, prompt_tokens=self.prompt_tokens, step_s=self.step_s)
        run.handle = GenerationHandle(request.params.n, run.on_cancel)
        task = asyncio.get_running_loop().create_task(run.play())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run.handle
