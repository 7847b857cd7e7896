"""The continuous-batching worker of the embedded engine.

One thread owns the llama context. Each request's prompt is evaluated once into one sequence slot,
its KV cells are shared with the request's other samples (`llama_memory_seq_cp`), and then every
live sequence of every admitted request advances by one token per `llama_decode` call. Requests
that arrive while others run join the batch at the next step; finished or cancelled sequences
give their slot and KV cells back at once.

Admission is by reservation: a request enters only when its prompt plus n x max_tokens KV cells
fit beside what running requests may still use, so a decode never runs out of cache mid-way.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ponder.engines.llama_model import LlamaModel
from ponder.engines.types import (
    Completion,
    FinishReason,
    Generation,
    SampleDelta,
    SampleEvent,
    SampleFinished,
    SamplingParams,
    Timings,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from ponder.errors import EngineError

NEAR_PEAK_NATS = 10.0
LLAMA_RANDOM_SEED = 0xFFFFFFFF


@dataclass(eq=False)
class Job:
    """One request as the worker sees it. The callbacks are thread-safe (they hop to the loop)."""

    model_name: str
    prompt: list[int]
    params: SamplingParams
    deliver: Callable[[list[SampleEvent]], None]
    complete: Callable[[Generation], None]
    fail: Callable[[BaseException], None]
    submitted: float = field(default_factory=time.perf_counter)
    # worker-side state
    cancel_all: bool = False
    cancelled: set[int] = field(default_factory=set)
    sequences: list[Sequence] = field(default_factory=list)
    started: float = 0.0
    prompt_s: float = 0.0
    outbox: list[SampleEvent] = field(default_factory=list)

    @property
    def cells(self) -> int:
        """KV cells this job may occupy at most: the shared prompt plus every sample's tokens."""
        return len(self.prompt) + self.params.n * self.params.max_tokens


@dataclass(eq=False)
class Sequence:
    """One sample being decoded in one llama sequence slot."""

    job: Job
    index: int
    slot: int
    sampler: Any
    pos: int
    token: int = -1
    n_tokens: int = 0
    text: str = ""
    emitted: int = 0
    reported_tokens: int = 0
    reported: bool = False
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    logprobs: list[TokenLogprob] | None = None
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finished_at: float = 0.0


class LlamaBatcher:
    """Owns the llama context and runs the decode loop on its own thread."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        max_sequences: int,
        n_threads: int,
        n_batch: int = 512,
        flash_attn: bool = True,
    ) -> None:
        lib = model.lib
        self.lib = lib
        self.model = model
        self.max_sequences = max_sequences
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(n_batch, max_sequences)
        params.n_ubatch = params.n_batch
        params.n_seq_max = max_sequences
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True
        params.no_perf = True
        params.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = lib.llama_init_from_model(model.model, params)
        if not ctx:
            raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.ctx = ctx
        self.n_ctx: int = lib.llama_n_ctx(ctx)
        self.n_batch: int = params.n_batch
        self.memory = lib.llama_get_memory(ctx)
        self.batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._cv = threading.Condition()
        self._pending: deque[Job] = deque()
        self._cancels: deque[tuple[Job, int | None]] = deque()
        self._active: list[Sequence] = []
        self._jobs: list[Job] = []
        self._free_slots = list(range(max_sequences - 1, -1, -1))
        self._reserved = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ponder-llama", daemon=True)
        self._thread.start()

    # --- called from other threads -----------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise EngineError("the engine is closed")
            self._pending.append(job)
            self._cv.notify()

    def cancel(self, job: Job, index: int | None) -> None:
        with self._cv:
            self._cancels.append((job, index))
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    # --- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._stopping or self._pending or self._active or self._cancels):
                        self._cv.wait()
                    if self._stopping:
                        break
                    admitted = self._admit_locked()
                self._apply_cancels()
                for job in admitted:
                    self._start(job)
                    self._apply_cancels()
                if self._active:
                    self._step()
                self._flush()
        finally:
            self._shutdown()

    def _apply_cancels(self) -> None:
        """Apply the cancellations asked for so far and hand their results over at once: a
        caller stopping at a deadline must not also wait for other requests' prompts."""
        with self._cv:
            cancels = list(self._cancels)
            self._cancels.clear()
        for job, index in cancels:
            self._apply_cancel(job, index)
        if cancels:
            self._flush()

    def _admit_locked(self) -> list[Job]:
        """First come, first served: stop at the first job that does not fit yet (no starvation)."""
        admitted = []
        slots = len(self._free_slots)  # jobs admitted here take their slots only in `_start`
        while self._pending:
            job = self._pending[0]
            if job.params.n > slots or self._reserved + job.cells > self.n_ctx:
                break
            self._pending.popleft()
            slots -= job.params.n
            self._reserved += job.cells
            admitted.append(job)
        return admitted

    def _apply_cancel(self, job: Job, index: int | None) -> None:
        if index is None:
            job.cancel_all = True
            with self._cv:
                waiting = job in self._pending
                if waiting:
                    self._pending.remove(job)
            if waiting:  # never admitted: finish it now rather than after a wait for capacity
                self._reserved += job.cells
                self._start(job)
                return
        else:
            job.cancelled.add(index)
        for seq in job.sequences:
            if seq.finish_reason is None and (index is None or seq.index == index):
                self._finish(seq, "cancelled")

    def _start(self, job: Job) -> None:
        """Evaluate the prompt once, share its cells with every sample, draw each first token."""
        lib = self.lib
        job.started = time.perf_counter()
        self._jobs.append(job)
        if job.cancel_all:  # cancelled while queued: nothing to run
            job.sequences = [
                Sequence(job, i, -1, None, len(job.prompt)) for i in range(job.params.n)
            ]
            for seq in job.sequences:
                self._finish(seq, "cancelled")
            return
        want_logprobs = job.params.wants_logprobs
        job.sequences = [
            Sequence(
                job,
                i,
                self._free_slots.pop(),
                self._make_sampler(job.params, i),
                pos=len(job.prompt),
                logprobs=[] if want_logprobs else None,
            )
            for i in range(job.params.n)
        ]
        for seq in job.sequences:
            if seq.index in job.cancelled:
                self._finish(seq, "cancelled")
        live = [seq for seq in job.sequences if seq.finish_reason is None]
        if not live:
            return
        first = live[0].slot
        try:
            self._eval_prompt(job.prompt, first)
        except EngineError as exc:
            self._abort_job(job, exc)
            return
        for seq in live:
            if seq.slot != first:
                lib.llama_memory_seq_cp(self.memory, first, seq.slot, -1, -1)
        job.prompt_s = time.perf_counter() - job.started
        for seq in live:
            self._accept(seq, -1)
            if seq.finish_reason is None:
                self._active.append(seq)

    def _eval_prompt(self, prompt: list[int], slot: int) -> None:
        batch = self.batch
        for start in range(0, len(prompt), self.n_batch):
            chunk = prompt[start : start + self.n_batch]
            for k, token in enumerate(chunk):
                batch.token[k] = token
                batch.pos[k] = start + k
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = slot
                batch.logits[k] = 0
            batch.logits[len(chunk) - 1] = start + len(chunk) == len(prompt)
            batch.n_tokens = len(chunk)
            self._decode()

    def _step(self) -> None:
        """One token for every live sequence, in one llama_decode."""
        batch = self.batch
        active = self._active = [s for s in self._active if s.finish_reason is None]
        if not active:
            return
        for k, seq in enumerate(active):
            batch.token[k] = seq.token
            batch.pos[k] = seq.pos
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = seq.slot
            batch.logits[k] = 1
        batch.n_tokens = len(active)
        try:
            self._decode()
        except EngineError as exc:
            for job in {seq.job for seq in active}:
                self._abort_job(job, exc)
            return
        for k, seq in enumerate(active):
            seq.pos += 1
            self._accept(seq, k)

    def _decode(self) -> None:
        rc = self.lib.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc}")

    def _accept(self, seq: Sequence, row: int) -> None:
        """Sample the next token of `seq` from output `row` and update its text and state."""
        lib = self.lib
        token = lib.llama_sampler_sample(seq.sampler, self.ctx, row)
        seq.token = token
        seq.n_tokens += 1
        params = seq.job.params
        if self.model.is_eog(token) and not params.ignore_eos:
            self._finish(seq, "stop")
            return
        if seq.logprobs is not None:
            entry = self._logprob(row, token, params.top_logprobs)
            seq.logprobs.append(entry)
            seq.new_logprobs.append(entry)
        before = len(seq.text)
        seq.text += seq.decoder.decode(self.model.piece(token))
        if params.stop and self._cut_at_stop(seq, before):
            self._finish(seq, "stop")
        elif seq.n_tokens >= params.max_tokens:
            self._finish(seq, "length")

    @staticmethod
    def _cut_at_stop(seq: Sequence, before: int) -> bool:
        stops = seq.job.params.stop
        start = max(0, before - max(map(len, stops)) + 1)
        hits = [i for i in (seq.text.find(s, start) for s in stops) if i >= 0]
        if hits:
            seq.text = seq.text[: min(hits)]
        return bool(hits)

    def _logprob(self, row: int, token: int, top: int) -> TokenLogprob:
        ptr = self.lib.llama_get_logits_ith(self.ctx, row)
        logits = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))
        peak = float(logits.max())
        lse = peak + float(np.log(np.exp(logits - peak, dtype=np.float32).sum()))
        alternatives: list[TopLogprob] = []
        if top:
            best = top_indices(logits, peak, top)
            alternatives = [
                TopLogprob.model_construct(
                    token=self._token_text(int(t)), logprob=float(logits[t]) - lse
                )
                for t in best
            ]
        return TokenLogprob.model_construct(
            token=self._token_text(token),
            logprob=float(logits[token]) - lse,
            top_logprobs=alternatives,
        )

    def _token_text(self, token: int) -> str:
        return self.model.piece(token).decode(errors="replace")

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.finish_reason is not None:
            return
        seq.finish_reason = reason
        seq.finished_at = time.perf_counter()
        seq.text += seq.decoder.decode(b"", final=True)
        self._reserved -= seq.job.params.max_tokens
        if seq.sampler is not None:
            self.lib.llama_sampler_free(seq.sampler)
            seq.sampler = None
        if seq.slot >= 0:
            self.lib.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
            self._free_slots.append(seq.slot)

    def _abort_job(self, job: Job, error: BaseException) -> None:
        for seq in job.sequences:
            self._finish(seq, "error")
        self._active = [s for s in self._active if s.job is not job]
        self._release(job)
        job.fail(error)

    def _release(self, job: Job) -> None:
        self._jobs.remove(job)
        self._reserved -= len(job.prompt)

    def _flush(self) -> None:
        """Hand each job's new text to its caller; complete jobs whose samples all ended."""
        for job in list(self._jobs):
            events: list[SampleEvent] = []
            for seq in job.sequences:
                done = seq.finish_reason is not None
                if seq.job.params.stop and not done:
                    edge = max(seq.emitted, len(seq.text) - max(map(len, job.params.stop)) + 1)
                else:
                    edge = len(seq.text)
                if edge > seq.emitted or seq.n_tokens > seq.reported_tokens:
                    events.append(
                        SampleDelta.model_construct(
                            index=seq.index,
                            text=seq.text[seq.emitted : edge],
                            tokens=seq.n_tokens - seq.reported_tokens,
                            logprobs=seq.new_logprobs or None,
                        )
                    )
                    seq.emitted = edge
                    seq.reported_tokens = seq.n_tokens
                    seq.new_logprobs = []
                if done and not seq.reported:
                    events.append(SampleFinished.model_construct(completion=self._completion(seq)))
                    seq.reported = True
            if events:
                job.deliver(events)
            if all(seq.finish_reason is not None for seq in job.sequences):
                self._release(job)
                job.complete(self._generation(job))

    def _completion(self, seq: Sequence) -> Completion:
        assert seq.finish_reason is not None
        return Completion(
            index=seq.index,
            text=seq.text,
            finish_reason=seq.finish_reason,
            completion_tokens=seq.n_tokens,
            logprobs=seq.logprobs,
            latency_s=seq.finished_at - seq.job.submitted,
        )

    def _generation(self, job: Job) -> Generation:
        completions = [self._completion(seq) for seq in job.sequences]
        ran = any(seq.n_tokens for seq in job.sequences)
        return Generation(
            model=job.model_name,
            completions=completions,
            usage=Usage(
                prompt_tokens=len(job.prompt) if ran else 0,
                completion_tokens=sum(c.completion_tokens for c in completions),
            ),
            timings=Timings(
                queued_s=job.started - job.submitted,
                prompt_s=job.prompt_s if ran else None,
                total_s=time.perf_counter() - job.submitted,
            ),
        )

    def _make_sampler(self, params: SamplingParams, index: int) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.temperature == 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if params.top_k:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(params.min_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
        # 0xFFFFFFFF means "random" to llama.cpp: keep seeds below it.
        base = params.seed if params.seed is not None else int.from_bytes(os.urandom(4))
        seed = (base + index) % LLAMA_RANDOM_SEED
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def _shutdown(self) -> None:
        error = EngineError("the engine was closed while this request ran")
        with self._cv:
            pending = list(self._pending)
            self._pending.clear()
        for job in pending:
            job.fail(error)
        for job in list(self._jobs):
            self._abort_job(job, error)
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.ctx = None


def top_indices(logits: np.ndarray[Any, np.dtype[np.float32]], peak: float, k: int) -> Any:
    """Indices of the k largest logits, largest first. The top k almost always lie within a few
    nats of the peak, so look there first: one comparison pass instead of a partition of the
    whole vocabulary (about 2.5x faster per token on a 152k vocabulary)."""
    near = np.flatnonzero(logits > peak - NEAR_PEAK_NATS)
    if len(near) < k:
        near = np.argpartition(logits, -k)[-k:]
    return near[np.argsort(-logits[near], kind="stable")[:k]]
