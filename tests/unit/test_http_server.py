"""`serve_http` over real loopback sockets: the server runs its own event loop in a thread, so
that the tests can speak raw, blocking HTTP to it (half heads, trickles, slow bodies)."""

import asyncio
import gzip
import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from aiohttp import web

from router.http_server import refuse_compressed_bodies, serve_http

HEADER_TIMEOUT = 0.5
HALF_HEAD = b"GET /pub/job/x/1.0.0/ HTTP/1.1\r\nHost: a\r\n"


def app_for_tests(**app_options) -> web.Application:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        return web.Response(text="late but whole")

    async def raw(request: web.Request) -> web.Response:
        return web.Response(body=await request.content.read())

    app = web.Application(**app_options)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_post("/raw", raw)
    return app


@contextmanager
def served(app: web.Application, **options) -> Iterator[int]:
    """Serve `app` with `serve_http` (header timeout HEADER_TIMEOUT) on a loop in a thread;
    yields the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    options.setdefault("header_timeout", HEADER_TIMEOUT)
    runner = asyncio.run_coroutine_threadsafe(
        serve_http(app, "127.0.0.1", 0, **options), loop
    ).result(10)
    try:
        yield runner.addresses[0][1]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """What the server sends until it closes the connection (EOF or reset); fails when it is
    still open after `within` seconds."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"still open after {within}s; got {received!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            continue
        if not chunk:
            return received
        received += chunk


def still_open_after(sock: socket.socket, seconds: float) -> bool:
    """True when nothing (neither data nor EOF) arrives for `seconds`."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length from a kept-alive socket."""
    sock.settimeout(5)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def test_half_a_head_and_then_nothing_is_answered_408_and_closed_in_time():
    with served(app_for_tests()) as port, connect(port) as sock:
        sock.sendall(HALF_HEAD)
        started = time.monotonic()
        answer = read_until_closed(sock, within=5)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
        "error": "request head not received within 0.5s"
    }
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.5


def test_a_connection_that_never_sends_anything_is_closed_without_an_answer():
    with served(app_for_tests()) as port, connect(port) as sock:
        assert read_until_closed(sock, within=5) == b""


def test_a_trickled_head_is_closed_after_the_total_timeout():
    """One byte every 0.2 s: every byte is progress, but the bound is for the whole head."""
    head = HALF_HEAD + b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"
    with served(app_for_tests()) as port, connect(port) as sock:
        started = time.monotonic()
        sent = 0
        closed = False
        while sent < len(head) and time.monotonic() - started < 5:
            try:
                sock.sendall(head[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            if not still_open_after(sock, 0.2):  # paces the trickle
                read_until_closed(sock, within=2)
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, f"server kept the connection for {elapsed:.1f}s after {sent} bytes"
    assert sent < len(head)
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.5


def test_complete_requests_succeed_and_an_idle_kept_alive_connection_stays_open():
    with served(app_for_tests()) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/hello")
        first = client.getresponse()
        assert (first.status, first.read()) == (200, b"hello")
        sock = client.sock
        assert still_open_after(sock, HEADER_TIMEOUT * 2)  # keepalive_timeout governs idling
        client.request("GET", "/hello")
        second = client.getresponse()
        assert (second.status, second.read()) == (200, b"hello")
        assert client.sock is sock  # the same connection served both
        client.close()


def test_the_next_head_on_a_kept_alive_connection_is_timed_from_its_first_byte():
    with served(app_for_tests()) as port, connect(port) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(sock) == (200, b"hello")
        assert still_open_after(sock, HEADER_TIMEOUT * 1.5)
        sock.sendall(HALF_HEAD)
        started = time.monotonic()
        answer = read_until_closed(sock, within=5)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408")
    assert elapsed < HEADER_TIMEOUT + 1.5


def test_a_slow_body_after_a_complete_head_is_not_cut():
    body = b"0123456789"
    with served(app_for_tests()) as port, connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
        started = time.monotonic()
        for byte in body[:-1]:  # 9 x 0.15 s: over two header timeouts
            sock.sendall(bytes([byte]))
            assert still_open_after(sock, 0.15)
        assert time.monotonic() - started > HEADER_TIMEOUT * 2
        sock.sendall(body[-1:])
        assert read_response(sock) == (200, body)


def test_a_long_running_response_is_not_cut():
    with served(app_for_tests()) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/slow")
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"late but whole")
        client.close()


def test_300_half_open_connections_are_all_closed_while_others_are_served():
    with served(app_for_tests()) as port, ExitStack() as stack:
        started = time.monotonic()
        stalled = [stack.enter_context(connect(port)) for _ in range(300)]
        for sock in stalled:
            sock.sendall(HALF_HEAD)
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/hello")
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"hello")
        client.close()
        deadline = started + HEADER_TIMEOUT + 3
        for sock in stalled:
            read_until_closed(sock, within=max(deadline - time.monotonic(), 0.01))


def test_aiohttp_bounds_and_the_applications_handler_args_still_apply():
    """Options reach aiohttp's handler through the timed one: `max_headers` here, and the
    application's own `handler_args` (the router turns off request decompression)."""
    compressed = gzip.compress(b"as sent")
    app = app_for_tests(handler_args={"auto_decompress": False})
    with served(app, max_headers=4) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/hello", headers={f"X-{n}": "v" for n in range(10)})
        assert client.getresponse().status == 400
        client.close()
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("POST", "/raw", body=compressed, headers={"Content-Encoding": "gzip"})
        response = client.getresponse()
        assert (response.status, response.read()) == (200, compressed)
        client.close()


def test_compressed_request_bodies_can_be_refused():
    app = app_for_tests(middlewares=[refuse_compressed_bodies])
    with served(app) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request(
            "POST", "/echo", body=gzip.compress(b"{}"), headers={"Content-Encoding": "gzip"}
        )
        refused = client.getresponse()
        assert refused.status == 415
        assert refused.getheader("Accept-Encoding") == "identity"
        assert json.loads(refused.read()) == {
            "error": "request bodies with Content-Encoding 'gzip' are not accepted"
        }
        client.close()
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("POST", "/echo", body=b"{}", headers={"Content-Encoding": "identity"})
        plain = client.getresponse()
        assert (plain.status, plain.read()) == (200, b"{}")
        client.close()


def test_connections_over_the_cap_are_answered_503_and_closed_at_once():
    """Beyond `max_connections` a server is told so at once, before it runs out of file
    descriptors (then nobody, honest or not, could connect)."""
    with served(app_for_tests(), max_connections=5, header_timeout=30) as port, ExitStack() as held:
        idle = [held.enter_context(connect(port)) for _ in range(5)]
        for sock in idle:  # each is accepted: it is answered (hello) on the same connection
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_response(sock) == (200, b"hello")
        over = connect(port)
        received = read_until_closed(over, within=5)
        assert received.startswith(b"HTTP/1.1 503")
        assert b"the server holds 5 connections, its limit" in received
        idle[0].close()
        deadline = time.monotonic() + 5
        while True:  # the freed place is taken by the next connection
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            client.request("GET", "/hello")
            answer = client.getresponse()
            if answer.status == 200 or time.monotonic() > deadline:
                break
            client.close()
        assert (answer.status, answer.read()) == (200, b"hello")
        client.close()
