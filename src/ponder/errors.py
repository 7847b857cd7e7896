"""One exception hierarchy, so callers (CLI, server, library users) can catch ponder's errors
and show their messages as they are: every message says what went wrong and what to do."""

from __future__ import annotations


class PonderError(Exception):
    """Base of every error ponder raises on purpose."""


class InvalidRequestError(PonderError, ValueError):
    """The caller asked for something malformed or out of range (empty question, n < 1, ...)."""


class ModelNotFoundError(PonderError, LookupError):
    """A model name that is neither in the catalogue nor a readable GGUF path."""


class ModelDownloadError(PonderError):
    """Fetching a model failed (network, pip, or a checksum mismatch)."""


class ChecksumMismatchError(ModelDownloadError):
    """A downloaded model's sha256 differs from the catalogue: the file is not used."""


class MissingDependencyError(PonderError, ImportError):
    """An optional dependency (llama-cpp-python, huggingface_hub) is not installed."""


class EngineError(PonderError):
    """The engine could not serve a request."""


class ContextOverflowError(EngineError, InvalidRequestError):
    """Prompt plus requested tokens do not fit the model's context window."""


class BackendUnavailableError(EngineError):
    """A remote server could not be reached, or kept failing after retries."""


class BackendTimeoutError(BackendUnavailableError, TimeoutError):
    """A remote server did not answer in time."""


class BackendResponseError(EngineError):
    """A remote server answered with an error or a response ponder cannot use."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
