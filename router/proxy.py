"""The reverse proxy for `/pub/job/<name>/<version>/<path>`.

One pooled keep-alive `ClientSession` serves every upstream; request and response bodies are
streamed chunk by chunk, never held whole in memory.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import exposition as prometheus_exposition

from router.auth import AUTH_HEADER, Authorizer, token_from_request
from router.inflight import InFlight
from router.routes import EMPTY_SNAPSHOT, JobRoute, RouteSnapshot

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


class Router:
    """Holds the current route snapshot and serves the proxy application."""

    def __init__(
        self,
        authorizer: Authorizer | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
    ) -> None:
        self._snapshot: RouteSnapshot = EMPTY_SNAPSHOT
        self._authorizer = authorizer
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
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
        app = web.Application()
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
                    return _json_error(denied.status, denied.reason, request_id=tracing_id)
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
            if lower in HOP_BY_HOP or lower in ("host", AUTH_HEADER.lower()):
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

    async def _send(
        self, request: web.Request, route: JobRoute, upstream: str, path: str, tracing_id: str
    ) -> web.StreamResponse:
        assert self._session is not None, "router session not started"
        started = time.perf_counter()
        body = request.content if request.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                upstream + path,
                headers=self._upstream_headers(request, route, tracing_id),
                data=body,
                allow_redirects=False,
            ) as upstream_response:
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
            return self._bad_gateway(route, tracing_id, exc)
