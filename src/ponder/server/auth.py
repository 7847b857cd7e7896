"""Optional API keys. A key may come as ``Authorization: Bearer KEY`` (what OpenAI clients send)
or ``X-Api-Key: KEY``. Every configured key is compared in constant time, and all of them are
always compared, so neither the timing nor the number of comparisons tells how close a guess was.
Keys are held as `SecretStr` and never logged or echoed in errors."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from pydantic import SecretStr

from ponder.server.errors import ApiError


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent, if any. `headers` has lower-case keys."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def key_matches(given: str, keys: Sequence[SecretStr]) -> bool:
    candidate = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.get_secret_value().encode())
    return matched


def check_key(headers: Mapping[str, str], keys: Sequence[SecretStr]) -> None:
    """Raise a 401 unless no keys are configured or the request carries one of them."""
    if not keys:
        return
    given = presented_key(headers)
    if given is None:
        raise ApiError(
            401,
            "missing API key: send it as 'Authorization: Bearer KEY'",
            type="authentication_error",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(given, keys):
        raise ApiError(
            401,
            "invalid API key",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
