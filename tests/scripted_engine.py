"""A deterministic stand-in engine for fast unit tests of strategy logic.

It replays scripted texts (one per sample, in the order samples are drawn), emits them word by word
as deltas (one token per word), honours `max_tokens`, stop strings and cancellation, and keeps every
request it saw, so strategies can be tested branch by branch without a model. Given a `logprobs`
script it also returns logprobs (when asked), so confidence-based logic can be tested token by
token. The real engines have their own tests on real models.

As in the real engines, a stop string ends a sample with finish "stop" and is cut out of its text,
while the word that carried it still counts as a token (and keeps its logprob). Words are re-joined
with single spaces unless `verbatim=True`, which keeps the script's own whitespace (newlines), as
a step-wise strategy with a "\n\n" step delimiter needs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    TokenLogprob,
    TopLogprob,
    Usage,
)

Script = Callable[[GenerationRequest, int], str]
LogprobScript = Callable[[int, int, str], float]
"""(sample number k of the engine's life, token position, word) -> that token's logprob."""


@dataclass
class _Sample:
    words: list[str]
    number: int = 0
    made: int = 0
    ended: FinishReason | None = None
    cancel: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)
    verbatim: bool = False
    stopped: bool = False
    cut: int | None = None

    def piece(self, k: int) -> str:
        """Token k's text: verbatim words carry their own whitespace."""
        return self.words[k] if self.verbatim or k == 0 else " " + self.words[k]

    @property
    def text(self) -> str:
        return "".join(self.piece(k) for k in range(self.made))[: self.cut]


@dataclass
class _Run:
    request: GenerationRequest
    samples: list[_Sample]
    handle: GenerationHandle | None = None
    cancel_all: bool = False
    prompt_tokens: int = 10
    step_s: float = 0.0
    model: str = "scripted"
    logprob_script: LogprobScript | None = None

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
                if s.stopped:
                    s.ended = "stop"
                elif self.cancel_all or s.cancel:
                    s.ended = "cancelled"
                elif s.made >= len(s.words):
                    s.ended = "stop"
                elif s.made >= limit:
                    s.ended = "length"
                else:
                    word = s.piece(s.made)
                    entry = self.logprob(s, word)
                    before = len(s.text)
                    s.made += 1
                    self.stop_at_stop_string(s, before)
                    self.handle.emit(
                        [
                            SampleDelta(
                                index=i,
                                text=s.text[before:],
                                tokens=1,
                                logprobs=None if entry is None else [entry],
                            )
                        ]
                    )
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

    def stop_at_stop_string(self, s: _Sample, before: int) -> None:
        """Cut the text at the first stop string the newest word completed, and end the sample."""
        stops = self.request.params.stop
        if not stops:
            return
        text = s.text
        start = max(0, before - max(map(len, stops)) + 1)
        hits = [at for at in (text.find(stop, start) for stop in stops) if at >= 0]
        if hits:
            s.cut, s.stopped = min(hits), True

    def logprob(self, s: _Sample, word: str) -> TokenLogprob | None:
        """The scripted logprob of the next word, when the request asked for logprobs. The
        alternatives repeat it, so the token's DeepConf confidence is exactly -logprob."""
        params = self.request.params
        if self.logprob_script is None or not params.wants_logprobs:
            return None
        value = self.logprob_script(s.number, s.made, s.words[s.made])
        tops = [TopLogprob(token=f"{word}#{j}", logprob=value) for j in range(params.top_logprobs)]
        entry = TokenLogprob(token=word, logprob=value, top_logprobs=tops)
        s.logprobs.append(entry)
        return entry

    def completion(self, i: int) -> Completion:
        s = self.samples[i]
        assert s.ended is not None
        logprobs = None
        if self.logprob_script is not None and self.request.params.wants_logprobs:
            logprobs = list(s.logprobs)
        return Completion(
            index=i,
            text=s.text,
            finish_reason=s.ended,
            completion_tokens=s.made,
            latency_s=0.0,
            logprobs=logprobs,
        )


class ScriptedEngine(Engine):
    """Sample k of the engine's life answers `texts[k % len(texts)]` (or `script(request, k)`);
    with `logprobs`, its token at position i has logprob `logprobs(k, i, word)`. With
    `verbatim`, a word keeps the whitespace around it, so the text is the script's exactly."""

    def __init__(
        self,
        texts: Sequence[str] | Script,
        *,
        prompt_tokens: int = 10,
        step_s: float = 0.0,
        logprobs: LogprobScript | None = None,
        verbatim: bool = False,
    ) -> None:
        self.model = "scripted"
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=logprobs is not None,
            max_top_logprobs=20 if logprobs is not None else 0,
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
        self.logprobs = logprobs
        self.verbatim = verbatim
        self.requests: list[GenerationRequest] = []
        self._drawn = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _words(self, text: str) -> list[str]:
        return re.findall(r"\s*\S+\s*", text) if self.verbatim else text.split()

    def start(self, request: GenerationRequest) -> GenerationHandle:
        self.requests.append(request)
        first, self._drawn = self._drawn, self._drawn + request.params.n
        samples = [
            _Sample(
                self._words(self._script(request, first + i)),
                number=first + i,
                verbatim=self.verbatim,
            )
            for i in range(request.params.n)
        ]
        run = _Run(
            request,
            samples,
            prompt_tokens=self.prompt_tokens,
            step_s=self.step_s,
            logprob_script=self.logprobs,
        )
        run.handle = GenerationHandle(request.params.n, run.on_cancel)
        task = asyncio.get_running_loop().create_task(run.play())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run.handle
