"""A loaded GGUF model for the embedded engine: weights, vocabulary, tokenizer and chat template.

It owns no context: the batching worker owns the one llama context. Everything here only reads the
model and vocabulary, which llama.cpp allows from any thread.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Any

from ponder.engines.types import Message
from ponder.errors import EngineError, MissingDependencyError, ModelNotFoundError

PREFILL_MARKER = "\u0000ponder-prefill\u0000"
GGML_LOG_LEVEL_ERROR = 4  # ggml's enum: none, debug, info, warn, error, cont


def import_llama_cpp() -> Any:
    """llama-cpp-python is an optional dependency: say how to get it when it is missing."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the embedded engine needs llama-cpp-python: pip install 'ponder[embedded]' "
            "(or use a remote engine: --engine http://HOST:PORT/v1)"
        ) from exc
    return llama_cpp


def quiet_llama_logs(lib: Any, verbose: bool) -> None:
    """Let llama.cpp print only errors unless asked (its load-time warnings confuse users).

    llama-cpp-python's own hook maps ggml's log levels off by one, so it shows warnings.
    """
    lib.llama_log_set(_log_hook(lib, verbose), ctypes.c_void_p(0))


@functools.cache
def _log_hook(lib: Any, verbose: bool) -> Any:
    """The C callback, kept alive for the life of the process (llama.cpp holds a pointer to it)."""

    def hook(
        level: int,
        text: bytes,
        _user_data: ctypes.c_void_p,
        _write: Any = sys.stderr.write,  # bound now: module globals are gone at interpreter exit
        _error: int = GGML_LOG_LEVEL_ERROR,
    ) -> None:
        if verbose or level == _error:
            _write(text.decode(errors="replace"))

    return lib.llama_log_callback(hook)


def default_threads() -> int:
    """All the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LlamaModel:
    """Weights and vocabulary of one GGUF file, loaded once."""

    def __init__(self, path: Path, *, verbose: bool = False) -> None:
        self.path = path
        self.lib = import_llama_cpp()
        lib = self.lib
        quiet_llama_logs(lib, verbose)
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise EngineError(f"llama.cpp could not load {path}: is it a valid GGUF model?")
        self.model = model
        self.vocab = lib.llama_model_get_vocab(model)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = lib.llama_model_n_ctx_train(model)
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.bos_text = self._special_text(lib.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(lib.llama_vocab_eos(self.vocab))
        template = lib.llama_model_chat_template(model, None)
        self.chat_template: str | None = template.decode() if template else None
        self._formatter: Any = None

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    # --- text <-> tokens ---------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        tokens = (self.lib.llama_token * capacity)()
        count = self.lib.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, parse_special
        )
        if count < 0:  # pragma: no cover - capacity above is always enough for BPE/SPM vocabularies
            raise EngineError(f"tokenizer needed {-count} slots for {len(data)} bytes")
        return list(tokens[:count])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as empty: they are control, not text)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._render(token, special=False)
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def _special_text(self, token: int) -> str:
        return "" if token < 0 else self._render(token, special=True).decode(errors="replace")

    def _render(self, token: int, *, special: bool) -> bytes:
        buf = self._piece_buf
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    # --- prompts -----------------------------------------------------------------------------
    def chat_prompt(self, messages: tuple[Message, ...], continue_final: bool = False) -> list[int]:
        """Format with the model's own chat template (jinja2, as Transformers does); tokenize."""
        if self.chat_template is None:
            raise EngineError(
                f"{self.path.name} has no chat template: send a raw prompt instead of messages"
            )
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self.chat_template, eos_token=self.eos_text, bos_token=self.bos_text
            )
        payload = [m.model_dump(exclude_none=True) for m in messages]
        if continue_final:  # render the reply as a marker, then cut the turn's end off after it
            prefill = str(payload[-1].get("content") or "")
            payload[-1]["content"] = PREFILL_MARKER
        text: str = self._formatter(messages=payload).prompt
        if continue_final:
            text = text[: text.index(PREFILL_MARKER)] + prefill
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.tokenize(text, add_special=add_bos)

    def raw_prompt(self, prompt: str) -> list[int]:
        return self.tokenize(prompt, add_special=True)
