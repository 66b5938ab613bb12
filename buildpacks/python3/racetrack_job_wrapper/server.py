"""The job's HTTP server: reads requests, asks the router for answers, writes them, logs them.

It listens at once and loads the entrypoint in the background (see `state.JobState`). On
SIGTERM it stops accepting, lets in-flight requests finish (bounded by a grace, which the
runtime sets shorter than its own SIGKILL deadline), then exits.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .log.logs import configure_logs
from .request_context import TRACING_HEADER, handling
from .responses import Response, error
from .routing import PLATFORM_PATHS, Request, Router
from .state import JobState

log = logging.getLogger("racetrack.job")

MAX_BODY_BYTES = 64 * 1024 * 1024
UPSTREAM_KEY_HEADER = "X-Racetrack-Upstream-Key"
PROBE_PATHS = frozenset({"/live", "/ready", "/health"})
LISTEN_BACKLOG = 1024
FILE_CHUNK = 256 * 1024
CHUNK_SIZE_RE = re.compile(rb"^[0-9A-Fa-f]{1,16}$")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class JobRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "racetrack-job"
    # headers and body leave in separate writes: with Nagle's algorithm on, the body would
    # wait for the peer's delayed ACK (~40 ms a call on a kept-alive connection)
    disable_nagle_algorithm = True
    state: JobState  # set on the subclass made by `make_server`
    router: Router

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        """Read the whole request, answer it, and count it as in flight until the last byte is
        written, so that a stopping instance lets it finish. Every declared body is read, on
        every method: bytes left unread would be parsed as the next request on the connection.
        """
        self.state.request_started()
        try:
            self._respond()
        finally:
            self.state.request_finished()

    def _respond(self) -> None:
        started = time.perf_counter()
        path, _, query = self.path.partition("?")
        with handling(self.command, path, self.headers) as context:
            if not self._from_the_router(path):
                self.close_connection = True  # its body is never read
                refusal = error(403, "this job answers calls through the router only", "Forbidden")
                self._write(refusal, context.tracing_id)
                self._log(path, 403, time.perf_counter() - started)
                return
            try:
                request = Request(
                    self.command, path, query, self.headers, self._read_body(),
                    self.client_address[:2], self.server.server_address[:2], context,
                )  # fmt: skip
            except BadRequest as exc:
                self.close_connection = True
                self._write(error(exc.status, str(exc), "BadRequest"), context.tracing_id)
                return
            endpoint = self.router.job_endpoint(request)
            if endpoint is not None:
                self.state.metrics.started()
            try:
                response = self.router.route(request, endpoint)
            except Exception as exc:  # a bug or a hostile input: answer, and keep serving
                log.exception("%s %s failed", self.command, path)
                response = error(500, f"the wrapper failed: {exc}", type(exc).__name__)
            try:
                self._write(response, context.tracing_id)
            finally:
                seconds = time.perf_counter() - started
                if endpoint is not None:
                    self.state.metrics.finished(endpoint, response.status, seconds)
                self._log(path, response.status, seconds)

    def _from_the_router(self, path: str) -> bool:
        """Calls carry the key the router was given for this release (the platform's probes
        need none): another job on the same network cannot call this one around the router's
        permission check."""
        key = self.state.upstream_key
        if not key or path in PROBE_PATHS:
            return True
        given = self.headers.get(UPSTREAM_KEY_HEADER, "")
        return hmac.compare_digest(given.encode("utf-8", "replace"), key.encode())

    def _write(self, response: Response, tracing_id: str) -> None:
        if response.file is None:
            self._send(response, tracing_id, len(response.body))
            if self.command != "HEAD":
                self.wfile.write(response.body)
            return
        try:
            source = response.file.open("rb")
        except OSError as exc:
            missing = error(404, f"cannot read {response.file.name}: {exc.strerror}", "NotFound")
            self._write(missing, tracing_id)
            return
        with source:
            size = os.fstat(source.fileno()).st_size  # what is sent is what was measured
            self._send(response, tracing_id, size)
            if self.command != "HEAD":
                self._copy(source, size)

    def _copy(self, source: Any, size: int) -> None:
        """Exactly `size` bytes, the Content-Length sent: a file that shrank meanwhile is padded
        rather than leaving the kept-alive connection out of step."""
        left = size
        while left > 0:
            chunk = source.read(min(FILE_CHUNK, left)) or b"\0" * min(FILE_CHUNK, left)
            self.wfile.write(chunk)
            left -= len(chunk)

    def _send(self, response: Response, tracing_id: str, size: int) -> None:
        declared = next(
            (v for k, v in response.headers if k.lower() == "content-length"), None
        )  # a webview's answer to HEAD says how long its GET answer is
        if self.command != "HEAD" or declared is None:
            declared = str(size)
        self.send_response(response.status)
        if response.content_type:  # a redirect has none
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", declared)
        self.send_header(TRACING_HEADER, tracing_id)
        for name, value in response.headers:
            if name.lower() == "content-length":
                continue
            if any(c in name + value for c in "\r\n\0"):
                log.error("dropped a response header with a line break: %r", name)
                continue
            self.send_header(name, value)
        if self.state.stopping:
            self.send_header("Connection", "close")  # no further requests on this connection
        self.end_headers()

    def _log(self, path: str, status: int, seconds: float) -> None:
        quiet = path in PLATFORM_PATHS or path.startswith("/docs/assets/")
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %d %.1fms",
            self.command,
            path,
            status,
            seconds * 1000,
            extra={
                "fields": {
                    "method": self.command,
                    "path": path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                }
            },
        )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            if self.headers.get("Content-Length") is not None:
                raise BadRequest(400, "both Content-Length and Transfer-Encoding")
            return self._read_chunked()
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            raise BadRequest(501, f"Transfer-Encoding {encoding!r} is not supported")
        length_header = self.headers.get("Content-Length", "0")
        if not (length_header.isascii() and length_header.isdigit()):
            raise BadRequest(400, f"bad Content-Length {length_header!r}")
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not CHUNK_SIZE_RE.fullmatch(size_line):
                raise BadRequest(400, "malformed chunked body")
            size = int(size_line, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(self.rfile.read(size))
            if self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                raise BadRequest(400, "malformed chunked body")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is written by _log


class JobServer(ThreadingHTTPServer):
    # connections the kernel queues before the server accepts them: a burst of calls waits in
    # line instead of being reset (the standard library's default is 5)
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a probe that gave up, a caller that timed out) is not an
        error of the job: no traceback in its logs. Anything else is logged once, naming the
        client."""
        failure = sys.exc_info()[1]
        if isinstance(failure, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        log.error("request from %s failed:\n%s", client_address, traceback.format_exc())


def make_server(state: JobState, host: str, port: int) -> ThreadingHTTPServer:
    attributes = {"state": state, "router": Router(state)}
    handler = type("BoundJobRequestHandler", (JobRequestHandler,), attributes)
    return JobServer((host, port), handler)


def main() -> None:
    configure_logs()
    state = JobState()
    host = os.environ.get("LISTEN_HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "7000"))
    grace = float(os.environ.get("RACETRACK_SHUTDOWN_GRACE", "30"))
    server = make_server(state, host, port)
    log.info("job %s %s listening on %s:%d", state.job_name, state.job_version, host, port)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        state.stopping = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=state.load, name="entrypoint-loader", daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    # Connections already open may still bring requests routed before the swap: serve them,
    # and leave once nothing has been in flight (bounded by the grace).
    if not state.wait_idle(grace):
        log.warning("exiting with calls still running after %.0fs", grace)
    if state.api is not None and state.api.webview is not None:
        state.api.webview.close()  # an ASGI app's lifespan shutdown
    log.info("stopped")
