"""Serving an aiohttp application with the bounds aiohttp leaves open.

aiohttp (3.14) has no timeout for reading a request's head: a connection that sends half a
request line, or one header byte every few seconds (slowloris), is held until `keepalive_timeout`
(3630 s by default), which only runs while nothing at all is being handled. `serve_http` adds a
header-read timeout: from the connection opening (first request) or from the first byte of the
next request on a kept-alive connection, the whole head (request line + headers) must arrive
within `header_timeout`; bytes trickling in do not extend it. A connection still idle after a
response is left to `keepalive_timeout`, and nothing is timed once a head is complete (slow
uploads and long responses are the application's business).

The hook: aiohttp creates one `web.RequestHandler` per connection from the `web.Server` the
runner makes, and offers no class argument, so a small `AppRunner` subclass (its `_make_server`
is the runner's abstract creation step) hands the sites a `web.Server` subclass whose protocol
factory (`__call__`) makes a `RequestHandler` subclass; that one watches `data_received` and
`finish_response`. Everything aiohttp configures (the application's `handler_args`, debug,
access log) passes through unchanged.

Request bodies with `Content-Encoding` are decompressed by aiohttp's server while they are read
(`auto_decompress=True`, a `RequestHandler` argument). `request.read()`, `.text()`, `.json()` and
`.post()` stop at the application's `client_max_size` counted on the decompressed bytes, but
`request.content.read()` is unbounded (1 MiB of gzip becomes 1 GiB in memory):
`refuse_compressed_bodies` is a middleware for applications that never need compressed bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

log = logging.getLogger("racetrack.http")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BACKLOG = 1024
# connections one server holds at once; more are answered 503 and closed at once
DEFAULT_MAX_CONNECTIONS = 4096
# aiohttp 3.14's own defaults, stated so that older versions (max_headers was 32768) get them too
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _closing_answer(status: str, error: str, *extra_headers: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error, written straight to a connection that is
    closed after it (aiohttp's request handling never saw the request)."""
    body = json.dumps({"error": error})
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        *extra_headers,
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def _busy_answer(limit: int) -> bytes:
    error = f"the server holds {limit} connections, its limit; try again"
    return _closing_answer("503 Service Unavailable", error, "Retry-After: 1")


def _timeout_answer(header_timeout: float) -> bytes:
    error = f"request head not received within {header_timeout:g}s"
    return _closing_answer("408 Request Timeout", error)


class _HeadTimeoutHandler(web.RequestHandler):
    """A `RequestHandler` that closes its connection when a request head takes too long.

    Relies on two aiohttp internals, covered by tests/unit/test_http_server.py:
    `_request_count` (heads parsed so far) and `_messages` (parsed, not yet handled requests).
    """

    __slots__ = (
        "_answered",
        "_body",
        "_head_loop",
        "_head_started",
        "_head_timeout",
        "_head_timer",
        "_max_connections",
        "_timeout_answer",
    )

    def __init__(
        self, manager: web.Server, *, header_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._max_connections = max_connections
        self._head_timeout = header_timeout
        self._timeout_answer = _timeout_answer(header_timeout)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_loop: asyncio.AbstractEventLoop | None = None
        self._head_started = False  # bytes of a head that is not complete yet have arrived
        self._answered = 0  # responses finished; heads parsed minus this = requests in hand
        self._body: StreamReader | None = None  # of the last parsed request

    @property
    def _in_hand(self) -> int:
        return self._request_count - self._answered

    def _arm(self) -> None:
        """Start the clock, unless it runs already: the bound is for the whole head."""
        if self._head_timer is None and self._head_loop is not None:
            self._head_timer = self._head_loop.call_later(self._head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_loop = asyncio.get_running_loop()
        assert self._manager is not None
        if len(self._manager.connections) > self._max_connections:
            # over the cap: told so and closed at once, before the server runs out of
            # descriptors (then it could accept nobody, not even the honest)
            transport.write(_busy_answer(self._max_connections))  # type: ignore[attr-defined]
            self.force_close()
            transport.close()
            return
        self._arm()  # the first request is timed from the connection opening

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        # Bytes are a new head's only once the last request's body is complete.
        between_requests = self._body is None or self._body.is_eof()
        super().data_received(data)
        if self._request_count != parsed:
            # A head is complete: nothing is timed until its response is finished. (Bytes of a
            # further head in the same read cannot be told apart; they wait like an idle one.)
            self._disarm()
            self._head_started = False
            if self._messages:
                self._body = self._messages[-1][1]
        elif data and between_requests:
            self._head_started = True
            if not self._in_hand:  # else timed once the request in hand is answered
                self._arm()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._head_started and not self._in_hand:  # the next head was on its way
                self._arm()

    def _timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._in_hand:
            return
        log.debug(
            "closing connection from %s: no complete request head within %gs",
            self.peername,
            self._head_timeout,
        )
        if self._head_started and transport.get_write_buffer_size() == 0:
            transport.write(self._timeout_answer)
        unsent = transport.get_write_buffer_size() > 0  # a peer that does not read
        self.force_close()
        if unsent:
            transport.abort()


class _HeadTimeoutServer(web.Server):
    """The `web.Server` an application runner made, with `_HeadTimeoutHandler` connections.

    `_kwargs` are the handler arguments aiohttp gathered (runner options, the application's
    `handler_args`, debug, access log class); they are passed on as they are.
    """

    def __init__(self, made: web.Server, header_timeout: float, max_connections: int) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,
        )
        self._header_timeout = header_timeout
        self._max_connections = max_connections

    def __call__(self) -> web.RequestHandler:
        return _HeadTimeoutHandler(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            max_connections=self._max_connections,
            **self._kwargs,
        )


class _HeadTimeoutRunner(web.AppRunner):
    __slots__ = ("_header_timeout", "_max_connections")

    def __init__(
        self, app: web.Application, *, header_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _HeadTimeoutServer(made, self._header_timeout, self._max_connections)


async def serve_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    backlog: int = DEFAULT_BACKLOG,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keepalive_timeout: float | None = None,
    max_line_size: int = MAX_LINE_SIZE,
    max_field_size: int = MAX_FIELD_SIZE,
    max_headers: int = MAX_HEADERS,
    access_log: logging.Logger | None = None,
    reuse_address: bool = True,
) -> web.AppRunner:
    """Start serving `app` on host:port and return its runner (`runner.cleanup()` stops it).

    `keepalive_timeout=None` keeps aiohttp's default. A bind failure raises the OSError after
    the application has been cleaned up again.
    """
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be positive, not {header_timeout}")
    options: dict[str, Any] = {
        "max_line_size": max_line_size,
        "max_field_size": max_field_size,
        "max_headers": max_headers,
    }
    if keepalive_timeout is not None:
        options["keepalive_timeout"] = keepalive_timeout
    runner = _HeadTimeoutRunner(
        app,
        header_timeout=header_timeout,
        max_connections=max_connections,
        access_log=access_log,
        handle_signals=False,
        **options,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=reuse_address)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


@web.middleware
async def refuse_compressed_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a request body with a Content-Encoding (RFC 7694), before aiohttp inflates it
    for a handler: for APIs whose callers send small plain bodies."""
    encoding = request.headers.get("Content-Encoding", "").strip()
    if request.body_exists and encoding and encoding.lower() != "identity":
        response = web.json_response(
            {"error": f"request bodies with Content-Encoding {encoding!r} are not accepted"},
            status=415,
            headers={"Accept-Encoding": "identity"},
        )
        response.force_close()  # the unread body is not worth keeping the connection for
        return response
    return await handler(request)
