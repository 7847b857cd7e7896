"""An httpx transport over aiohttp's connection pool, for `RemoteEngine` when aiohttp is installed
(the ``server`` extra brings it).

Why: a proxy in front of a fast model server pays the HTTP client on every request. httpx's own
pool costs about 2 ms of CPU per request once it keeps a few dozen connections alive (it walks,
and probes the socket of, every pooled connection each time a request starts or ends); aiohttp's
costs about a tenth of that. Keeping httpx's API on top means one client API everywhere (and the
tests' mock transports keep working). httpx-aiohttp does the same job but maps a refused
connection to a timeout, which would turn a down server's 502 into a 504 and change what is
retried, so the mapping here is ponder's own.

Failures arrive as httpx's exceptions: no connection is `ConnectError` (`ConnectTimeout` when it
timed out), a read that stalled is `ReadTimeout`, a connection lost or a body cut short is
`RemoteProtocolError` or `ReadError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

# Most specific first: several aiohttp errors derive from each other.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.ReadError),
    (OSError, httpx.ReadError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError:
        raise
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(f"{type(exc).__name__}: {exc}") from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for piece in self._response.content.iter_any():
                yield piece

    async def aclose(self) -> None:
        # A body read to its end leaves the connection in the pool; one closed early closes it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one aiohttp session, created on first use (aiohttp binds it to
    the running event loop), through `proxy` when one is given. Honours the request's
    connect/read/pool timeouts."""

    def __init__(self, limits: httpx.Limits, *, proxy: str | None = None) -> None:
        self._limits = limits
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            )
            # trust_env would look the proxy and ~/.netrc up again on every request, in threads.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        session = self._open_session()
        with _as_httpx_errors():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=await request.aread() or None,
                allow_redirects=False,
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
