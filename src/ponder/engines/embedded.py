"""The embedded engine: llama.cpp in this process, with true parallel sampling.

The prompt is evaluated once and n sequences decode together; concurrent requests share the batch
(see `llama_batcher`). This class only checks requests, formats prompts and connects the worker
thread to asyncio.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ponder.engines.base import Engine, GenerationHandle
from ponder.engines.llama_batcher import Job, LlamaBatcher
from ponder.engines.llama_model import LlamaModel, default_threads
from ponder.engines.types import Capabilities, Generation, GenerationRequest, SampleEvent
from ponder.errors import ContextOverflowError, EngineError, InvalidRequestError


class EmbeddedEngine(Engine):
    """Samples from a local GGUF model with llama.cpp.

    `n_ctx` is the KV cache shared by all running samples (the prompt's cells are stored once per
    request); `max_sequences` bounds how many samples decode together.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        name: str | None = None,
        n_ctx: int = 16384,
        max_sequences: int = 32,
        n_threads: int | None = None,
        flash_attn: bool = True,
        verbose: bool = False,
    ) -> None:
        if n_ctx < 64:
            raise InvalidRequestError(f"n_ctx must be at least 64, got {n_ctx}")
        if not 1 <= max_sequences <= 256:
            raise InvalidRequestError(f"max_sequences must be in 1..256, got {max_sequences}")
        threads = n_threads if n_threads is not None else default_threads()
        if threads < 1:
            raise InvalidRequestError(f"n_threads must be at least 1, got {threads}")
        self._llama = LlamaModel(Path(model_path).expanduser(), verbose=verbose)
        self.model = name or self._llama.path.stem
        self.n_threads = threads
        self._closed = False
        self._batcher = LlamaBatcher(
            self._llama,
            n_ctx=n_ctx,
            max_sequences=max_sequences,
            n_threads=threads,
            flash_attn=flash_attn,
        )
        self.capabilities = Capabilities(
            parallel_n=True,
            logprobs=True,
            max_top_logprobs=20,
            streaming=True,
            prefix_caching=True,
            cancel_sample=True,
        )

    @property
    def n_ctx(self) -> int:
        return self._batcher.n_ctx

    @property
    def max_sequences(self) -> int:
        return self._batcher.max_sequences

    def tokenize_request(self, request: GenerationRequest) -> list[int]:
        """The prompt tokens exactly as the engine will evaluate them."""
        if request.messages is not None:
            return self._llama.chat_prompt(request.messages, request.continue_final)
        assert request.prompt is not None
        return self._llama.raw_prompt(request.prompt)

    def start(self, request: GenerationRequest) -> GenerationHandle:
        if self._closed:
            raise EngineError("the engine is closed")
        params = request.params
        if params.n > self.max_sequences:
            raise InvalidRequestError(
                f"n={params.n} exceeds this engine's max_sequences={self.max_sequences}: "
                "ask for fewer samples per request or start the engine with more sequences"
            )
        prompt = self.tokenize_request(request)
        self._check_fits(len(prompt), params.n, params.max_tokens)
        loop = asyncio.get_running_loop()
        job: Job | None = None

        def on_cancel(index: int | None) -> None:
            assert job is not None
            self._batcher.cancel(job, index)

        handle = GenerationHandle(params.n, on_cancel)

        def hop(method: object, value: object) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(method, value)  # type: ignore[arg-type]

        def deliver(events: list[SampleEvent]) -> None:
            hop(handle.emit, events)

        def complete(generation: Generation) -> None:
            hop(handle.finish, generation)

        def fail(error: BaseException) -> None:
            hop(handle.fail, error)

        job = Job(self.model, prompt, params, deliver, complete, fail)
        self._batcher.submit(job)
        return handle

    def _check_fits(self, prompt_tokens: int, n: int, max_tokens: int) -> None:
        per_sample = prompt_tokens + max_tokens
        window = min(self._llama.n_ctx_train or per_sample, self.n_ctx)
        if per_sample > window:
            raise ContextOverflowError(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens={max_tokens} needs "
                f"{per_sample} tokens, but the context window is {window}: shorten the prompt "
                "or lower max_tokens"
            )
        needed = prompt_tokens + n * max_tokens
        if needed > self.n_ctx:
            raise ContextOverflowError(
                f"n={n} samples of up to {max_tokens} tokens after a {prompt_tokens}-token prompt "
                f"need {needed} KV cells, but the engine has {self.n_ctx}: lower n or max_tokens, "
                "or start the engine with a larger n_ctx"
            )

    def close(self) -> None:
        """Stop the worker (failing requests still running) and free the model."""
        if self._closed:
            return
        self._closed = True
        self._batcher.close()
        self._llama.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
