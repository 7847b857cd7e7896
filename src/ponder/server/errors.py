"""OpenAI-style errors: every failure leaves the server as
``{"error": {"message", "type", "param", "code"}}`` with the status a client can act on.

`ponder.errors` keeps one exception hierarchy for the whole library; this module is the one place
that decides which HTTP status each kind of failure gets, so the CLI and the server agree on the
wording of every message and differ only in how they show it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ponder.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    ContextOverflowError,
    EngineError,
    InvalidRequestError,
    MissingDependencyError,
    ModelDownloadError,
    ModelNotFoundError,
    PonderError,
)


class ApiError(Exception):
    """An error response in waiting: status, OpenAI error fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def from_ponder_error(exc: PonderError) -> ApiError:
    """The status for each kind of library error. Upstream (engine) failures are 502, or 504 when
    the upstream did not answer in time, and carry the cause; the caller's mistakes are 4xx."""
    message = str(exc) or type(exc).__name__
    param = getattr(exc, "param", None)
    if isinstance(exc, ContextOverflowError):  # an EngineError too, but the caller's to fix
        return ApiError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, message, param="model", code="model_not_found")
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, message, param=param if isinstance(param, str) else None)
    if isinstance(exc, BackendTimeoutError):
        return ApiError(
            504, f"upstream timed out: {message}", type="upstream_error", code="timeout"
        )
    if isinstance(exc, BackendResponseError):
        status = f" (HTTP {exc.status_code})" if exc.status_code else ""
        return ApiError(502, f"upstream error{status}: {message}", type="upstream_error")
    if isinstance(exc, BackendUnavailableError | EngineError | ModelDownloadError):
        return ApiError(502, f"upstream error: {message}", type="upstream_error")
    if isinstance(exc, MissingDependencyError):
        return ApiError(500, message, type="server_error")
    return ApiError(500, message, type="server_error")


def too_many_requests(retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        f"the server is at capacity and its queue is full; retry after {retry_after_s}s",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )
