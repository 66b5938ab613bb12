"""The python3 job wrapper as a real process on a real port, spoken to over raw HTTP."""

import json
import signal
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.unit.wrapper_process import DEADLINE, start_wrapper

ENTRYPOINT = """
import pathlib, time

class JobEntrypoint:
    calls = 0

    def perform(self, size=1, wait_for=None):
        JobEntrypoint.calls += 1
        if wait_for:
            pathlib.Path(wait_for + ".started").touch()
            while not pathlib.Path(wait_for).exists():  # the test says when to finish
                time.sleep(0.01)
        return {"calls": JobEntrypoint.calls, "payload": "x" * size}
"""


@pytest.fixture
def job(tmp_path: Path):
    wrapper = start_wrapper(tmp_path, {"entry.py": ENTRYPOINT})
    yield wrapper.process, wrapper.port, tmp_path
    wrapper.stop()


def post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/perform", data=json.dumps(payload).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=DEADLINE) as response:
        return json.loads(response.read())


def test_a_body_on_a_probe_is_read_not_run_as_a_second_request(job):
    """A body smuggled behind GET /live must not become an unauthenticated perform call on a
    kept-alive connection (as the router's pooled ones are)."""
    _process, port, _ = job
    smuggled = b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    request = (
        b"GET /live HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\n\r\n"
        + smuggled
        + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 ") == 2  # /live and /health, nothing in between
    assert post(port, {})["calls"] == 1, "perform ran only for the real call"


def test_sigterm_lets_a_call_in_flight_finish_its_whole_response(job):
    process, port, workdir = job
    gate = workdir / "gate"
    results: dict = {}
    size = 5 * 1024 * 1024
    caller = threading.Thread(
        target=lambda: results.update(answer=post(port, {"size": size, "wait_for": str(gate)}))
    )
    caller.start()
    wait_for(lambda: (workdir / "gate.started").exists(), "perform to start")

    process.send_signal(signal.SIGTERM)
    wait_for(lambda: not _accepts(port), "the listener to close")
    gate.touch()
    caller.join(DEADLINE)

    assert len(results["answer"]["payload"]) == size
    assert process.wait(DEADLINE) == 0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (b"Content-Length: -5\r\n", b"", b"400"),
        (b"Content-Length: +5\r\n", b"", b"400"),
        (b"Transfer-Encoding: chunked\r\n", b"-1\r\n", b"400"),
        (b"Transfer-Encoding: chunked\r\n", b"0x2\r\n", b"400"),
        (b"Transfer-Encoding: gzip, chunked\r\n", b"", b"501"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", b"", b"400"),
    ],
)
def test_a_body_whose_length_is_not_plain_is_refused_and_the_connection_closed(
    job, headers, body, status
):
    """Lengths other servers read differently are how requests get smuggled past a proxy."""
    _process, port, _ = job
    smuggled = b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    request = b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body + smuggled
    answer = _raw(port, request)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    assert answer.count(b"HTTP/1.1 ") == 1, "nothing after it was run as a request"
    assert post(port, {})["calls"] == 1, "the job still serves, and ran nothing smuggled"
