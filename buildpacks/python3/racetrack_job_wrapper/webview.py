"""Serving a job's `webview_app` (WSGI or ASGI) under `/api/v1/webview/`.

The HTTP server hands over a fully read `WebRequest`; the app's answer comes back as one
`WebResponse`. Responses are **buffered**: the whole body is collected before anything is sent,
so streaming responses (server-sent events, endless generators) are not streamed and an endless
one never finishes. WSGI apps run in the calling server thread; ASGI apps run on the shared
`AsyncRunner` loop while the calling thread waits.

Path semantics, which existing Racetrack jobs depend on (`base_url` is the public prefix of the
webview, e.g. `/pub/job/adder/1.0.0/api/v1/webview`, without a trailing slash):
- WSGI: `SCRIPT_NAME` is "" and `PATH_INFO` is `base_url` + the path below the mount, so a Flask
  app registers `@app.route(base_url + '/')`.
- ASGI: `root_path` is `base_url` and `path` is the path below the mount, so a FastAPI app
  registers `@app.get('/')`.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from .async_runner import AsyncRunner

log = logging.getLogger("racetrack.job")

LIFESPAN_STARTUP_TIMEOUT = 60.0
LIFESPAN_SHUTDOWN_TIMEOUT = 10.0

# Not forwarded from the app: the server frames the buffered body itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

AppKind = Literal["wsgi", "asgi"]
Message = dict[str, Any]


@dataclass(frozen=True)
class WebRequest:
    method: str
    path: str  # below the mount, starts with "/", percent-encoded as received (raw)
    query: str  # raw query string without "?"
    headers: list[tuple[str, str]]  # as received, in order, repeated names allowed
    body: bytes
    client: tuple[str, int] | None
    server: tuple[str, int]
    scheme: str = "http"


@dataclass
class WebResponse:
    """The app's whole response.

    `headers` never holds hop-by-hop headers (Connection, Transfer-Encoding, ...) and holds
    Content-Length only for HEAD requests (the length a GET would have had): the server should
    add `Content-Length: len(body)` unless a Content-Length header is already present.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class LifespanError(RuntimeError):
    """The ASGI app reported (or timed out in) `lifespan.startup`."""


def mount_webview(app: Any, base_url: str, runner: AsyncRunner) -> WebviewHandler:
    """Wrap the object returned by `webview_app(base_url)` as a `WebRequest -> WebResponse`
    callable.

    Raises TypeError when `app` is neither a WSGI nor an ASGI app, and LifespanError when an
    ASGI app that speaks the lifespan protocol fails to start.
    """
    kind = detect_app_kind(app)
    handler = WebviewHandler(app, kind, base_url, runner)
    if kind == "asgi":
        handler.start()
    return handler


class WebviewHandler:
    """Callable `WebRequest -> WebResponse`; `close()` runs the ASGI lifespan shutdown."""

    def __init__(self, app: Any, kind: AppKind, base_url: str, runner: AsyncRunner) -> None:
        self.app = app
        self.kind: AppKind = kind
        self.base_url = base_url
        self._runner = runner
        self._lifespan: _Lifespan | None = None

    def start(self) -> None:
        """Run the ASGI lifespan startup, if the app supports the protocol."""
        lifespan = _Lifespan(self.app)
        if self._runner.run(lifespan.startup(LIFESPAN_STARTUP_TIMEOUT)):
            self._lifespan = lifespan

    def close(self) -> None:
        """Run the ASGI lifespan shutdown (bounded); failures are logged, not raised."""
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is None:
            return
        try:
            self._runner.run(lifespan.shutdown(LIFESPAN_SHUTDOWN_TIMEOUT))
        except Exception:
            log.exception("webview lifespan shutdown failed")

    def __call__(self, request: WebRequest) -> WebResponse:
        try:
            if self.kind == "wsgi":
                return _call_wsgi(self.app, self.base_url, request)
            state = dict(self._lifespan.state) if self._lifespan else {}
            scope = _asgi_scope(request, self.base_url, state)
            exchange = self._runner.run(_serve_asgi(self.app, scope, request.body))
            return exchange.response(request.method)
        except Exception as exc:
            log.error("webview %s %s failed", request.method, request.path, exc_info=exc)
            return error_response(exc)


def error_response(exc: BaseException) -> WebResponse:
    """500 with the JSON error body the rest of the wrapper uses."""
    payload = {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__}
    body = json.dumps(payload).encode("utf-8")
    return WebResponse(500, [("Content-Type", "application/json")], body)


# detection


def detect_app_kind(app: Any) -> AppKind:
    """Tell an ASGI app, a coroutine callable of (scope, receive, send), from a WSGI app, a
    callable of (environ, start_response), by both signs; TypeError when it is neither."""
    if isinstance(app, str | bytes) or inspect.isclass(app) or not callable(app):
        raise TypeError(f"webview_app() must return a WSGI or ASGI app, not {_describe(app)}")
    is_async = _is_coroutine_callable(app)
    arity = _positional_arity(app)
    if arity is None:  # no signature (a builtin): trust the coroutine check alone
        return "asgi" if is_async else "wsgi"
    low, high = arity
    takes_two, takes_three = low <= 2 <= high, low <= 3 <= high
    if is_async and takes_three:
        return "asgi"
    if not is_async and takes_two:
        return "wsgi"
    if not is_async and takes_three:
        return "asgi"  # a plain callable returning an awaitable, as some wrappers are
    params = f"{low}" if low == high else f"{low} to {high}"
    what = "a coroutine function" if is_async else "a callable"
    raise TypeError(
        f"webview_app() returned {_describe(app)}, {what} taking {params} positional "
        "parameter(s); expected a WSGI app (environ, start_response) "
        "or an ASGI app (async, scope, receive, send)"
    )


def _is_coroutine_callable(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    return inspect.iscoroutinefunction(type(app).__call__)  # an object with `async __call__`


def _positional_arity(app: Any) -> tuple[int, float] | None:
    """(required, maximum) positional parameters; maximum is infinite with *args."""
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in parameters if p.kind in positional and p.default is p.empty)
    high: float = sum(1 for p in parameters if p.kind in positional)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        high = float("inf")
    return required, high


def _describe(app: Any) -> str:
    text = repr(app)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(app).__name__} {text}"


# shared helpers


def _to_bytes(text: str) -> bytes:
    """http.server decodes the request line and headers as latin-1; undo that."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _response_headers(headers: Iterable[tuple[str, str]], method: str) -> list[tuple[str, str]]:
    keep_length = method.upper() == "HEAD"
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in _HOP_BY_HOP and (keep_length or name.lower() != "content-length")
    ]


# WSGI (PEP 3333)


def _call_wsgi(app: Any, base_url: str, request: WebRequest) -> WebResponse:
    response = _WsgiResponse()
    result = app(wsgi_environ(request, base_url), response.start_response)
    try:
        for chunk in result:
            response.write(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return response.finish(request.method)


def wsgi_environ(request: WebRequest, base_url: str) -> dict[str, Any]:
    """The PEP 3333 environ; PATH_INFO is base_url + the decoded path, as latin-1 text."""
    path_info = (base_url.encode("utf-8") + unquote_to_bytes(_to_bytes(request.path))).decode(
        "latin-1"
    )
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.upper(),
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query,
        "SERVER_NAME": request.server[0],
        "SERVER_PORT": str(request.server[1]),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.input_terminated": True,  # the body is complete, whatever CONTENT_LENGTH says
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if request.client is not None:
        environ["REMOTE_ADDR"] = request.client[0]
        environ["REMOTE_PORT"] = str(request.client[1])
    environ.update(_wsgi_headers(request.headers))
    if request.body or "CONTENT_LENGTH" in environ:
        # the server may have de-chunked the body: describe what wsgi.input really holds
        environ["CONTENT_LENGTH"] = str(len(request.body))
    return environ


def _wsgi_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """HTTP_* keys (repeats comma-joined, cookies with "; "), CONTENT_TYPE, CONTENT_LENGTH."""
    environ: dict[str, str] = {}
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = environ[key] + separator + value
        else:
            environ[key] = value
    return environ


class _WsgiResponse:
    """start_response, write and the body collected from the app's iterable."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.headers_sent = False  # as a streaming server would have: at the first body byte

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle, as PEP 3333 asks
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        _parse_wsgi_status(status)
        if not isinstance(headers, list) or not all(
            isinstance(h, tuple) and len(h) == 2 and all(isinstance(p, str) for p in h)
            for h in headers
        ):
            raise TypeError("WSGI response headers must be a list of (str, str) tuples")
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
        if not data:
            return
        if self.status is None:
            raise AssertionError("WSGI app produced body before calling start_response()")
        self.headers_sent = True
        self.chunks.append(bytes(data))

    def finish(self, method: str) -> WebResponse:
        if self.status is None:
            raise RuntimeError("WSGI app returned without calling start_response()")
        return WebResponse(
            _parse_wsgi_status(self.status),
            _response_headers(self.headers, method),
            b"".join(self.chunks),
        )


def _parse_wsgi_status(status: str) -> int:
    """ "200 OK" -> 200."""
    code = status.split(" ", 1)[0] if isinstance(status, str) else ""
    if len(code) != 3 or not code.isdigit():
        raise ValueError(f"bad WSGI status {status!r}: expected e.g. '200 OK'")
    return int(code)


# ASGI (spec 2.x, version 3.0)


def _asgi_scope(request: WebRequest, base_url: str, state: dict[str, Any]) -> Message:
    raw_path = _to_bytes(request.path)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method.upper(),
        "scheme": request.scheme,
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": _to_bytes(request.query),
        "root_path": base_url,
        "headers": [(_to_bytes(name).lower(), _to_bytes(value)) for name, value in request.headers],
        "client": request.client,
        "server": request.server,
        "state": state,
    }


async def _call_asgi(
    app: Any,
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    result = app(scope, receive, send)
    if not inspect.isawaitable(result):
        raise TypeError(f"ASGI app returned {type(result).__name__}, not an awaitable")
    await result


class _AsgiExchange:
    """One request and its response; lives on the loop (create it there)."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.ended = asyncio.Event()  # the response is complete or the app has returned
        self.complete = False
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []

    async def receive(self) -> Message:
        """The whole body once; then `http.disconnect` when the response is over."""
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if self.complete:
            raise RuntimeError(f"ASGI app sent {kind!r} after the response was complete")
        if kind == "http.response.start":
            self._start(message)
        elif kind == "http.response.body":
            self._body_chunk(message)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")

    def _start(self, message: Message) -> None:
        if self.status is not None:
            raise RuntimeError("ASGI app sent 'http.response.start' twice")
        status = message.get("status")
        if not isinstance(status, int):
            raise TypeError(f"ASGI response status must be an int, not {status!r}")
        self.status = status
        self.headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in message.get("headers", ())
        ]

    def _body_chunk(self, message: Message) -> None:
        if self.status is None:
            raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'")
        body = message.get("body", b"")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"ASGI response body must be bytes, not {type(body).__name__}")
        self.chunks.append(bytes(body))
        if not message.get("more_body", False):
            self.complete = True
            self.ended.set()

    def response(self, method: str) -> WebResponse:
        assert self.status is not None
        return WebResponse(
            self.status, _response_headers(self.headers, method), b"".join(self.chunks)
        )


async def _serve_asgi(app: Any, scope: Message, body: bytes) -> _AsgiExchange:
    """Run the app until its response is complete; let it go on in the background after that
    (Starlette runs background tasks after the last body message).

    Raises what the app raised if it failed before starting the response.
    """
    exchange = _AsgiExchange(body)
    task = asyncio.ensure_future(_call_asgi(app, scope, exchange.receive, exchange.send))
    ended = asyncio.ensure_future(exchange.ended.wait())
    try:
        await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        ended.cancel()
    if not task.done():
        task.add_done_callback(_log_late_failure)
        return exchange
    exchange.ended.set()  # wakes whatever in the app still waits for the disconnect
    error = None if task.cancelled() else task.exception()
    if exchange.status is None:
        if error is not None:
            raise error
        raise RuntimeError("ASGI app returned without sending a response")
    if error is not None:
        log.error("webview app failed after starting its response", exc_info=error)
    if not exchange.complete:
        log.warning("webview app returned before finishing its response body")
    return exchange


def _log_late_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("webview app failed after its response", exc_info=task.exception())


def _retrieve_exception(task: asyncio.Future[None]) -> None:
    """Mark the exception as seen; the lifespan code reports it where it matters."""
    if not task.cancelled():
        task.exception()


class _Lifespan:
    """The ASGI lifespan protocol; its coroutines run on the runner's loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._task: asyncio.Future[None] | None = None
        self._started: asyncio.Future[tuple[bool, str]] | None = None
        self._stopped: asyncio.Future[tuple[bool, str]] | None = None
        self._shutdown: asyncio.Event | None = None
        self._startup_sent = False

    async def startup(self, timeout: float) -> bool:
        """True once the app reports startup complete, False if it does not speak lifespan."""
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._shutdown = asyncio.Event()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        self._task = asyncio.ensure_future(_call_asgi(self.app, scope, self._receive, self._send))
        self._task.add_done_callback(_retrieve_exception)
        await asyncio.wait(
            {self._started, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._started.done():
            ok, message = self._started.result()
            if not ok:
                self._task.cancel()
                raise LifespanError(f"webview lifespan startup failed: {message}")
            return True
        if self._task.done():
            self._log_unsupported()
            return False
        self._task.cancel()
        raise LifespanError(f"webview lifespan startup did not finish within {timeout:g}s")

    async def shutdown(self, timeout: float) -> None:
        assert self._task is not None and self._stopped is not None and self._shutdown
        self._shutdown.set()
        await asyncio.wait(
            {self._stopped, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._stopped.done():
            ok, message = self._stopped.result()
            if not ok:
                log.error("webview lifespan shutdown failed: %s", message)
        elif not self._task.done():
            self._task.cancel()
            log.warning("webview lifespan shutdown did not finish within %gs", timeout)

    def _log_unsupported(self) -> None:
        assert self._task is not None
        error = None if self._task.cancelled() else self._task.exception()
        log.info("the webview app does not support the ASGI lifespan protocol")
        if error is not None:
            log.debug("lifespan attempt raised", exc_info=error)

    async def _receive(self) -> Message:
        assert self._shutdown is not None
        if not self._startup_sent:
            self._startup_sent = True
            return {"type": "lifespan.startup"}
        await self._shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self._started is not None and self._stopped is not None
        kind = message.get("type")
        outcomes = {
            "lifespan.startup.complete": (self._started, True),
            "lifespan.startup.failed": (self._started, False),
            "lifespan.shutdown.complete": (self._stopped, True),
            "lifespan.shutdown.failed": (self._stopped, False),
        }
        if kind not in outcomes:
            raise RuntimeError(f"unexpected ASGI lifespan message type {kind!r}")
        future, ok = outcomes[kind]
        if future.done():
            raise RuntimeError(f"ASGI app sent {kind!r} out of turn")
        future.set_result((ok, str(message.get("message", ""))))
