"""The job's HTTP server: /api/v1/perform, /live, /ready, /health.

It listens at once and loads the entrypoint in the background: `/live` answers 200 while
loading and 500 with the error if loading failed; `/ready` turns 200 when the class is loaded.
On SIGTERM it stops accepting, lets in-flight requests finish (bounded by a grace, which the
runtime sets shorter than its own SIGKILL deadline), then exits.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .entrypoint import InitError, load_entrypoint
from .serialization import to_json

log = logging.getLogger("racetrack.job")

MAX_BODY_BYTES = 64 * 1024 * 1024


class JobState:
    """What the HTTP handlers need to know about the job, shared across threads."""

    def __init__(self) -> None:
        self.entrypoint: Any = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.job_name = os.environ.get("JOB_NAME", "")
        self.job_version = os.environ.get("JOB_VERSION", "")
        self.git_version = os.environ.get("GIT_VERSION", "")
        self.stopping = False
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "ready" if self.ready.is_set() else "starting"

    def load(self) -> None:
        try:
            self.entrypoint = load_entrypoint(
                Path(os.environ.get("JOB_DIR", ".")),
                os.environ["ENTRYPOINT_PATH"],
                os.environ.get("ENTRYPOINT_CLASS") or None,
            )
        except InitError as exc:
            self.error = str(exc)
            log.error("initialization failed: %s", exc)
        except BaseException as exc:
            self.error = _describe_exception(exc)
            log.error("initialization failed:\n%s", traceback.format_exc())
        else:
            self.ready.set()
            log.info("entrypoint loaded: %s", type(self.entrypoint).__name__)

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


def _describe_exception(exc: BaseException) -> str:
    """`ModuleNotFoundError: No module named 'x' (adder.py, line 3)`: one line for the pusher."""
    job_dir = os.environ.get("JOB_DIR", ".")
    if isinstance(exc, SyntaxError):  # its location is the file that failed to parse
        filename = os.path.relpath(exc.filename, job_dir) if exc.filename else "?"
        return f"{type(exc).__name__}: {exc.msg} ({filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    job_frames = [f for f in frames if f.filename.startswith(job_dir)]
    where = ""
    if job_frames:
        frame = job_frames[-1]
        where = f" ({os.path.relpath(frame.filename, job_dir)}, line {frame.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


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

    # routing

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _get(self, path: str, _body: bytes) -> tuple[int, Any]:
        state = self.state
        if path == "/live":
            if state.error is not None:
                return 500, {"live": False, "status": "failed", "error": state.error}
            return 200, {"live": True, "status": state.status}
        if path == "/ready":
            return (
                (200, {"ready": True})
                if state.ready.is_set()
                else (
                    503,
                    {"ready": False, "status": state.status},
                )
            )
        if path == "/health":
            body = {
                "service": "job",
                "job_name": state.job_name,
                "job_version": state.job_version,
                "git_version": state.git_version,
                "status": "pass" if state.ready.is_set() else state.status,
            }
            if state.error is not None:
                body["error"] = state.error
            return (200 if state.ready.is_set() else 503), body
        if path == "/api/v1/perform":
            return 405, {"error": "use POST for /api/v1/perform", "type": "MethodNotAllowed"}
        return 404, {"error": f"no endpoint {path}", "type": "NotFound"}

    def _post(self, path: str, body: bytes) -> tuple[int, Any]:
        if path != "/api/v1/perform":
            return 404, {"error": f"no endpoint {path}", "type": "NotFound"}
        state = self.state
        if not state.ready.is_set():
            return 503, {"error": f"the job is not ready ({state.status})", "type": "NotReady"}
        try:
            kwargs = json.loads(body or b"{}")
        except ValueError as exc:
            return 400, {"error": f"request body is not valid JSON: {exc}", "type": "BadRequest"}
        if not isinstance(kwargs, dict):
            kind = type(kwargs).__name__
            return 400, {
                "error": f"request body must be a JSON object of arguments, not {kind}",
                "type": "BadRequest",
            }
        return self._perform(kwargs)

    def _perform(self, kwargs: dict[str, Any]) -> tuple[int, Any]:
        perform = self.state.entrypoint.perform
        try:
            inspect.signature(perform).bind(**kwargs)
        except TypeError as exc:
            return 400, {"error": f"wrong arguments for perform: {exc}", "type": "TypeError"}
        try:
            return 200, perform(**kwargs)
        except ValueError as exc:
            return 400, {"error": str(exc), "type": type(exc).__name__}
        except Exception as exc:
            log.error("perform failed:\n%s", traceback.format_exc())
            return 500, {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__}

    # plumbing

    def _handle(self, handler: Any) -> None:
        """Read the whole request, answer it, and count it as in flight until the last byte is
        written, so that a stopping instance lets it finish. Every declared body is read, on
        every method: bytes left unread would be parsed as the next request on the connection.
        """
        self.state.request_started()
        try:
            self._respond(handler)
        finally:
            self.state.request_finished()

    def _respond(self, handler: Any) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        try:
            status, payload = handler(path, self._read_body())
        except BadRequest as exc:
            status, payload = exc.status, {"error": str(exc), "type": "BadRequest"}
            self.close_connection = True
        try:
            body = to_json(payload)
        except (TypeError, ValueError) as exc:
            status = 500
            body = to_json(
                {"error": f"result is not JSON serializable: {exc}", "type": "TypeError"}
            )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.state.stopping:
            self.send_header("Connection", "close")  # no further requests on this connection
        self.end_headers()
        self.wfile.write(body)
        log.info(
            "%s %s %d %.1fms tracing_id=%s",
            self.command,
            path,
            status,
            (time.perf_counter() - started) * 1000,
            self.headers.get("X-Request-Tracing-Id", "-"),
        )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest(400, f"bad Content-Length {length_header!r}") from None
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest(400, "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is written by _timed


def make_server(state: JobState, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundJobRequestHandler", (JobRequestHandler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    log.info("stopped")
