"""The reverse proxy for `/pub/job/<name>/<version>/<path>`.

One pooled keep-alive `ClientSession` serves every upstream; request and response bodies are
streamed chunk by chunk, never held whole in memory, and passed on as they came (a compressed
body stays compressed: decoding it is the job's business).

An upstream that does not answer within `upstream_timeout` gets its caller a 504; one that
stalls that long in the middle of a body has its caller's connection cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.streams import StreamReader
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import exposition as prometheus_exposition

from router.auth import AUTH_HEADER, AuthDenied, Authorizer, token_from_request
from router.auth_page import unauthorized_page, wants_html
from router.inflight import InFlight
from router.routes import EMPTY_SNAPSHOT, UPSTREAM_KEY_HEADER, JobRoute, RouteSnapshot

log = logging.getLogger("racetrack.router")

TRACING_HEADER = "X-Request-Tracing-Id"
# RFC 9110 §7.6.1: connection-specific headers a proxy must not forward.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
CHUNK_SIZE = 64 * 1024
UPSTREAM_KEY = UPSTREAM_KEY_HEADER.lower()
JOB_PREFIX_PARTS = 5  # '', 'pub', 'job', <name>, <version>


def _json_error(status: int, message: str, **fields: Any) -> web.Response:
    return web.json_response({"error": message, **fields}, status=status)


def _upstream_path(raw_path: str) -> str:
    """The part of the raw (still percent-encoded) path after `/pub/job/<name>/<version>`."""
    path, _, query = raw_path.partition("?")
    parts = path.split("/", JOB_PREFIX_PARTS)
    rest = "/" + parts[JOB_PREFIX_PARTS] if len(parts) > JOB_PREFIX_PARTS else "/"
    return rest + ("?" + query if query else "")


def _strip_auth_cookie(cookie_header: str) -> str:
    """Drop the caller's token cookie: a job never sees its callers' credentials."""
    kept = [
        part.strip()
        for part in cookie_header.split(";")
        if part.strip() and part.split("=", 1)[0].strip() != AUTH_HEADER
    ]
    return "; ".join(kept)


class _AnswerDeadline:
    """Cancels a pending upstream request once `seconds` pass without the upstream answering.

    The clock starts with the request and restarts whenever the upstream has taken a chunk of
    the request body (and at its end), so the wait for the response headers is bounded from the
    moment the job has the whole request. It stands still while the body is being read from the
    caller: a slow upload is not the job's delay. The body is written by an aiohttp task, and the
    request runs in a task of its own, so that an expiry cancels only that request.
    """

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[Any] | None = None
        self.expired = False

    def watch(self, task: asyncio.Future[Any]) -> None:
        self._task = task
        self.restart()

    def restart(self) -> None:
        if self._task is None or self._task.done():
            return
        self._at = self._loop.time() + self._seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._at, self._check)

    def pause(self) -> None:
        self._at = None

    def stop(self) -> None:
        self._task = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._task is None or self._task.done() or self._at is None:
            return  # answered, or paused: restart() sets the clock again
        if self._loop.time() < self._at:  # restarted since this check was scheduled
            self._handle = self._loop.call_at(self._at, self._check)
            return
        self.expired = True
        self._task.cancel()


async def _request_body(content: StreamReader, deadline: _AnswerDeadline) -> AsyncIterator[bytes]:
    """The caller's body as it arrives, telling `deadline` when the upstream is the one awaited."""
    while True:
        deadline.pause()
        chunk = await content.readany()
        deadline.restart()
        if not chunk:
            return
        yield chunk


class Router:
    """Holds the current route snapshot and serves the proxy application."""

    def __init__(
        self,
        authorizer: Authorizer | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
        upstream_timeout: float = 300.0,
    ) -> None:
        """`upstream_timeout`: seconds an upstream has for its response headers once it has the
        request (504 past that), and, unless `read_timeout` says otherwise, the longest silence
        between chunks of its response body (the caller's connection is cut past that)."""
        self._snapshot: RouteSnapshot = EMPTY_SNAPSHOT
        self._authorizer = authorizer
        self._upstream_timeout = upstream_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=connect_timeout,
            sock_read=upstream_timeout if read_timeout is None else read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        # how a user gets a token, for the page a browser gets with a 401 (set once SSH listens)
        self.token_command = "ssh -p PORT git@HOST auth:token"
        self._in_flight = InFlight()
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "racetrack_router_requests",
            "Calls routed to jobs",
            ["job", "version", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "racetrack_router_request_duration_seconds",
            "Time to the upstream's response headers",
            ["job", "version"],
            registry=self.registry,
        )

    @property
    def snapshot(self) -> RouteSnapshot:
        return self._snapshot

    def publish(self, snapshot: RouteSnapshot) -> None:
        """Swap the whole table at once; requests already routed keep their upstream."""
        self._snapshot = snapshot

    def make_app(self) -> web.Application:
        # Bodies go upstream byte for byte: decompressed here, they would reach the job still
        # labelled with their Content-Encoding and Content-Length, which no longer fit them.
        app = web.Application(handler_args={"auto_decompress": False})
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", r"/pub/job/{job}/{version}{tail:(/.*)?}", self._proxy)
        app.cleanup_ctx.append(self._session_ctx)
        return app

    async def _session_ctx(self, _app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, use_dns_cache=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )
        yield
        await self._session.close()

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "routes": self._snapshot.generation})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": prometheus_exposition.CONTENT_TYPE_LATEST},
        )

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        job, selector = request.match_info["job"], request.match_info["version"]
        tracing_id = request.headers.get(TRACING_HEADER) or uuid.uuid4().hex
        route = self._snapshot.resolve(job, selector)
        if route is None:
            return _json_error(
                404,
                f"no running version {selector!r} of job {job!r}",
                job=job,
                version=selector,
                request_id=tracing_id,
            )
        path = _upstream_path(request.raw_path)
        bare_path = path.partition("?")[0]
        probe = route.probe_answer(bare_path)
        if probe is not None:  # only ready instances are routed: the platform knows the answer
            return web.json_response(probe)
        if not route.upstreams:
            return _json_error(
                503,
                f"job {job} {route.version} has no instance ready (restarting after a crash)",
                job=job,
                version=route.version,
                request_id=tracing_id,
            )
        upstream = route.pick_upstream()
        with self._in_flight.track(upstream):  # counted before anything is awaited
            if self._authorizer is not None and not route.is_public(bare_path):
                denied = await self._authorizer(
                    token_from_request(request), job, route.version, bare_path
                )
                if denied is not None:
                    self._requests.labels(job, route.version, str(denied.status)).inc()
                    return self._denied(request, route, denied, tracing_id)
            upstream_path = route.upstream_path(path)
            if upstream_path is None:
                return _json_error(
                    404,
                    f"job {job} {route.version} answers under {route.strip_prefix}/ only",
                    job=job,
                    version=route.version,
                    request_id=tracing_id,
                )
            return await self._forward(request, route, upstream, upstream_path, tracing_id)

    def _denied(
        self, request: web.Request, route: JobRoute, denied: AuthDenied, tracing_id: str
    ) -> web.Response:
        """The refusal: JSON, or for a browser's 401 a page saying how to get in."""
        if denied.status != 401 or not wants_html(request.headers.get("Accept", "")):
            return _json_error(denied.status, denied.reason, request_id=tracing_id)
        page = unauthorized_page(
            job=route.job,
            version=route.version,
            reason=denied.reason,
            request_id=tracing_id,
            token_command=self.token_command,
        )
        return web.Response(
            status=401,
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Vary": "Accept"},
        )

    async def drain(self, upstreams: list[str], timeout: float) -> bool:
        """Wait until the calls already routed to `upstreams` are done (no new ones are routed
        there once a snapshot without them is published); False if `timeout` passed first."""
        return await self._in_flight.drained(upstreams, timeout)

    def _alternative(self, route: JobRoute, tried: set[str]) -> str | None:
        """Another ready instance of the same job version, from the current snapshot."""
        current = self._snapshot.resolve(route.job, route.version)
        if current is None:
            return None
        for _ in current.upstreams:
            upstream = current.pick_upstream()
            if upstream not in tried:
                return upstream
        return None

    def _upstream_headers(
        self, request: web.Request, route: JobRoute, tracing_id: str
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in ("host", AUTH_HEADER.lower(), UPSTREAM_KEY):
                continue
            if lower == "cookie":
                value = _strip_auth_cookie(value)
                if not value:
                    continue
            headers.add(name, value)
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Prefix"] = f"/pub/job/{route.job}/{route.version}"
        headers[TRACING_HEADER] = tracing_id
        if route.upstream_key:  # only the router knows it: callers' copies were dropped above
            headers[UPSTREAM_KEY_HEADER] = route.upstream_key
        return headers

    async def _forward(
        self, request: web.Request, route: JobRoute, upstream: str, path: str, tracing_id: str
    ) -> web.StreamResponse:
        """Send to `upstream`; if it refuses the connection (nothing was sent: a crashed
        instance), try the job version's other ready instances."""
        tried = {upstream}
        with contextlib.ExitStack() as counted:
            while True:
                try:
                    return await self._send(request, route, upstream, path, tracing_id)
                except aiohttp.ClientConnectorError as exc:
                    alternative = self._alternative(route, tried)
                    if alternative is None:
                        return self._bad_gateway(route, tracing_id, exc)
                    log.info("%s refused %s: trying %s", upstream, tracing_id, alternative)
                    counted.enter_context(self._in_flight.track(alternative))
                    tried.add(alternative)
                    upstream = alternative

    def _gateway_timeout(self, route: JobRoute, upstream: str, tracing_id: str) -> web.Response:
        self._requests.labels(route.job, route.version, "504").inc()
        log.warning(
            "upstream %s of %s %s did not answer within %gs (request %s)",
            upstream,
            route.job,
            route.version,
            self._upstream_timeout,
            tracing_id,
        )
        return _json_error(
            504,
            f"job {route.job} {route.version} did not answer within {self._upstream_timeout:g}s",
            job=route.job,
            version=route.version,
            request_id=tracing_id,
        )

    def _bad_gateway(self, route: JobRoute, tracing_id: str, exc: Exception) -> web.Response:
        self._requests.labels(route.job, route.version, "502").inc()
        log.warning(
            "upstream of %s %s failed (request %s): %r", route.job, route.version, tracing_id, exc
        )
        return _json_error(
            502,
            f"job {route.job} {route.version} did not answer: {exc.__class__.__name__}"
            + (f": {exc}" if str(exc) else ""),
            job=route.job,
            version=route.version,
            request_id=tracing_id,
        )

    async def _answer(
        self, request: web.Request, route: JobRoute, upstream: str, path: str, tracing_id: str
    ) -> aiohttp.ClientResponse:
        """The upstream's response once its headers are in; TimeoutError when `_AnswerDeadline`
        expired first (or aiohttp's sock_read did, after the whole request was sent)."""
        assert self._session is not None, "router session not started"
        deadline = _AnswerDeadline(self._upstream_timeout)
        body = _request_body(request.content, deadline) if request.body_exists else None
        pending = asyncio.ensure_future(
            self._session.request(
                request.method,
                upstream + path,
                headers=self._upstream_headers(request, route, tracing_id),
                data=body,
                allow_redirects=False,
            )
        )
        deadline.watch(pending)
        try:
            return await pending
        except asyncio.CancelledError:
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                pending.result().close()  # the caller left just as the answer came
            current = asyncio.current_task()
            if deadline.expired and not (current is not None and current.cancelling()):
                raise TimeoutError from None
            raise
        finally:
            deadline.stop()

    async def _send(
        self, request: web.Request, route: JobRoute, upstream: str, path: str, tracing_id: str
    ) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            upstream_response = await self._answer(request, route, upstream, path, tracing_id)
            async with upstream_response:
                self._duration.labels(route.job, route.version).observe(
                    time.perf_counter() - started
                )
                self._requests.labels(route.job, route.version, str(upstream_response.status)).inc()
                response = web.StreamResponse(
                    status=upstream_response.status, reason=upstream_response.reason
                )
                for name, value in upstream_response.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_chunked(CHUNK_SIZE):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectorError:
            raise  # nothing was sent: _forward may try another instance
        except aiohttp.ConnectionTimeoutError as exc:
            return self._bad_gateway(route, tracing_id, exc)  # sock_connect: unreachable
        except (aiohttp.ClientError, TimeoutError) as exc:
            if response is not None and response.prepared:
                # Headers are out: the only honest signal left is a cut connection.
                log.warning(
                    "upstream of %s %s broke mid-body (request %s): %r",
                    route.job,
                    route.version,
                    tracing_id,
                    exc,
                )
                raise
            if isinstance(exc, TimeoutError):
                return self._gateway_timeout(route, upstream, tracing_id)
            return self._bad_gateway(route, tracing_id, exc)
