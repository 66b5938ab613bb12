"""The job wrapper's webview bridge (WSGI and ASGI) and its shared asyncio runner."""

import asyncio
import json
import logging
import sys
import threading

import pytest

from buildpacks.python3.racetrack_job_wrapper import webview as webview_module
from buildpacks.python3.racetrack_job_wrapper.async_runner import AsyncRunner
from buildpacks.python3.racetrack_job_wrapper.webview import (
    LifespanError,
    WebRequest,
    WebResponse,
    detect_app_kind,
    mount_webview,
)

BASE = "/pub/job/adder/1.0.0/api/v1/webview"
WAIT = 5.0


@pytest.fixture
def runner():
    runner = AsyncRunner()
    yield runner
    runner.close()


def request(
    path: str = "/",
    method: str = "GET",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> WebRequest:
    return WebRequest(
        method=method,
        path=path,
        query=query,
        headers=headers if headers is not None else [("Host", "job.example:7000")],
        body=body,
        client=("10.0.0.9", 51234),
        server=("job.example", 7000),
    )


def json_body(response: WebResponse) -> dict:
    return json.loads(response.body)


def header(response: WebResponse, name: str) -> str | None:
    values = [v for k, v in response.headers if k.lower() == name.lower()]
    return values[0] if values else None


# WSGI apps


def wsgi_echo(environ, start_response):
    """Reports what it saw of the environ as JSON."""
    seen = {k: v for k, v in environ.items() if isinstance(v, str | bool | tuple)}
    seen["body"] = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
    seen["errors_is_stderr"] = environ["wsgi.errors"] is sys.stderr
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def wsgi_mount(app, runner) -> webview_module.WebviewHandler:
    handler = mount_webview(app, BASE, runner)
    assert handler.kind == "wsgi"
    return handler


def test_wsgi_path_info_is_base_url_plus_path(runner):
    response = wsgi_mount(wsgi_echo, runner)(request("/items/3"))
    seen = json_body(response)
    assert response.status == 200
    assert seen["PATH_INFO"] == BASE + "/items/3"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["REQUEST_METHOD"] == "GET"


def test_wsgi_root_path(runner):
    assert json_body(wsgi_mount(wsgi_echo, runner)(request("/")))["PATH_INFO"] == BASE + "/"


def test_wsgi_percent_encoded_path_is_decoded_as_latin1(runner):
    seen = json_body(wsgi_mount(wsgi_echo, runner)(request("/a%20b/caf%C3%A9", query="q=%20")))
    assert seen["PATH_INFO"] == BASE + "/a b/caf\xc3\xa9"  # PEP 3333: bytes as latin-1
    assert seen["PATH_INFO"].encode("latin-1").decode("utf-8") == BASE + "/a b/café"
    assert seen["QUERY_STRING"] == "q=%20"


def test_wsgi_environ_has_the_pep_3333_keys(runner):
    seen = json_body(wsgi_mount(wsgi_echo, runner)(request("/x", query="a=1&b=2")))
    assert seen["QUERY_STRING"] == "a=1&b=2"
    assert seen["SERVER_NAME"] == "job.example"
    assert seen["SERVER_PORT"] == "7000"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "10.0.0.9"
    assert seen["HTTP_HOST"] == "job.example:7000"
    assert seen["wsgi.version"] == [1, 0]
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.multithread"] is True
    assert seen["wsgi.multiprocess"] is False
    assert seen["wsgi.run_once"] is False
    assert seen["errors_is_stderr"] is True


def test_wsgi_post_body_and_content_headers(runner):
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5")]
    seen = json_body(
        wsgi_mount(wsgi_echo, runner)(request("/", "POST", headers=headers, body=b"hello"))
    )
    assert seen["body"] == "hello"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in seen
    assert "HTTP_CONTENT_LENGTH" not in seen


def test_wsgi_dechunked_body_gets_a_content_length(runner):
    headers = [("Transfer-Encoding", "chunked")]
    seen = json_body(
        wsgi_mount(wsgi_echo, runner)(request("/", "POST", headers=headers, body=b"abc"))
    )
    assert seen["CONTENT_LENGTH"] == "3"
    assert seen["body"] == "abc"


def test_wsgi_repeated_headers_are_joined(runner):
    headers = [
        ("X-Tag", "a"),
        ("Cookie", "x=1"),
        ("x-tag", "b"),
        ("Cookie", "y=2"),
        ("X-Forwarded-For", "1.2.3.4"),
    ]
    seen = json_body(wsgi_mount(wsgi_echo, runner)(request(headers=headers)))
    assert seen["HTTP_X_TAG"] == "a, b"
    assert seen["HTTP_COOKIE"] == "x=1; y=2"
    assert seen["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


def test_wsgi_status_and_headers_out(runner):
    def app(environ, start_response):
        start_response(
            "201 Created",
            [
                ("Content-Type", "text/plain"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Content-Length", "7"),
                ("Connection", "keep-alive"),
            ],
        )
        return [b"created"]

    response = wsgi_mount(app, runner)(request())
    assert response.status == 201
    assert response.body == b"created"
    assert response.headers == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_wsgi_head_keeps_the_content_length(runner):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "42")])
        return []

    response = wsgi_mount(app, runner)(request(method="HEAD"))
    assert response.body == b""
    assert header(response, "Content-Length") == "42"


def test_wsgi_streaming_iterable_is_collected_and_closed(runner):
    closed = threading.Event()

    class Body:
        def __iter__(self):
            yield b"one,"
            yield b""
            yield b"two,"
            yield bytearray(b"three")

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    response = wsgi_mount(app, runner)(request())
    assert response.body == b"one,two,three"
    assert closed.is_set()


def test_wsgi_generator_that_starts_the_response_lazily(runner):
    def app(environ, start_response):
        start_response("202 Accepted", [("X-Lazy", "1")])
        yield b"lazy"

    response = wsgi_mount(app, runner)(request())
    assert (response.status, response.body, header(response, "X-Lazy")) == (202, b"lazy", "1")


def test_wsgi_legacy_write_callable(runner):
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"written ")
        return [b"then returned"]

    assert wsgi_mount(app, runner)(request()).body == b"written then returned"


def test_wsgi_close_is_called_when_iteration_fails(runner):
    closed = threading.Event()

    class Body:
        def __iter__(self):
            yield b"partial"
            raise RuntimeError("broke mid-body")

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    response = wsgi_mount(app, runner)(request())
    assert response.status == 500
    assert json_body(response) == {"error": "broke mid-body", "type": "RuntimeError"}
    assert closed.is_set()


def test_wsgi_exc_info_replaces_headers_not_yet_sent(runner):
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Second", "1")], sys.exc_info())
        return [b"sorry"]

    response = wsgi_mount(app, runner)(request())
    assert response.status == 503
    assert response.headers == [("X-Second", "1")]
    assert response.body == b"sorry"


def test_wsgi_exc_info_after_body_reraises(runner):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"already out"
        try:
            raise KeyError("late")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    response = wsgi_mount(app, runner)(request())
    assert response.status == 500
    assert json_body(response)["type"] == "KeyError"


def test_wsgi_start_response_twice_without_exc_info_is_an_error(runner):
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    response = wsgi_mount(app, runner)(request())
    assert response.status == 500
    assert json_body(response)["type"] == "AssertionError"


def test_wsgi_app_that_never_starts_a_response(runner):
    response = wsgi_mount(lambda environ, start_response: [], runner)(request())
    assert response.status == 500
    assert "start_response" in json_body(response)["error"]


def test_wsgi_bad_status_line(runner):
    def app(environ, start_response):
        start_response("OK", [])
        return [b""]

    response = wsgi_mount(app, runner)(request())
    assert response.status == 500
    assert json_body(response)["type"] == "ValueError"


def test_wsgi_app_raising_gives_a_logged_500(runner, caplog):
    def app(environ, start_response):
        raise ZeroDivisionError("division by zero in the job")

    with caplog.at_level(logging.ERROR, logger="racetrack.job"):
        response = wsgi_mount(app, runner)(request("/boom"))
    assert response.status == 500
    assert header(response, "Content-Type") == "application/json"
    assert json_body(response) == {
        "error": "division by zero in the job",
        "type": "ZeroDivisionError",
    }
    assert "ZeroDivisionError" in caplog.text
    assert "Traceback" in caplog.text


def test_wsgi_bound_method_is_detected(runner):
    class FlaskLike:
        def wsgi_app(self, environ, start_response):
            start_response("200 OK", [])
            return [environ["PATH_INFO"].encode()]

    response = wsgi_mount(FlaskLike().wsgi_app, runner)(request("/hello"))
    assert response.body == (BASE + "/hello").encode()


# ASGI apps


async def asgi_echo(scope, receive, send):
    """Reports the scope and the request body as JSON."""
    assert scope["type"] == "http"
    message = await receive()
    seen = {
        key: (value.decode("latin-1") if isinstance(value, bytes) else value)
        for key, value in scope.items()
        if key != "headers"
    }
    seen["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    seen["body"] = message["body"].decode()
    seen["more_body"] = message["more_body"]
    seen["raw_path_is_bytes"] = isinstance(scope["raw_path"], bytes)
    seen["query_is_bytes"] = isinstance(scope["query_string"], bytes)
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def asgi_mount(app, runner) -> webview_module.WebviewHandler:
    handler = mount_webview(app, BASE, runner)
    assert handler.kind == "asgi"
    return handler


def test_asgi_root_path_and_path(runner):
    handler = asgi_mount(asgi_echo, runner)
    seen = json_body(handler(request("/items/3")))
    assert seen["root_path"] == BASE
    assert seen["path"] == "/items/3"
    assert seen["raw_path"] == "/items/3"
    assert json_body(handler(request("/")))["path"] == "/"


def test_asgi_scope_fields(runner):
    seen = json_body(asgi_mount(asgi_echo, runner)(request("/x", "post", query="a=1&b=%20")))
    assert seen["type"] == "http"
    assert seen["asgi"]["version"] == "3.0"
    assert seen["http_version"] == "1.1"
    assert seen["method"] == "POST"
    assert seen["scheme"] == "http"
    assert seen["query_string"] == "a=1&b=%20"
    assert seen["query_is_bytes"] and seen["raw_path_is_bytes"]
    assert seen["client"] == ["10.0.0.9", 51234]
    assert seen["server"] == ["job.example", 7000]
    assert seen["state"] == {}


def test_asgi_percent_encoded_path(runner):
    seen = json_body(asgi_mount(asgi_echo, runner)(request("/a%20b/caf%C3%A9")))
    assert seen["path"] == "/a b/café"
    assert seen["raw_path"] == "/a%20b/caf%C3%A9"


def test_asgi_post_body_and_repeated_headers(runner):
    headers = [("Content-Type", "text/plain"), ("X-Tag", "a"), ("X-TAG", "b")]
    seen = json_body(
        asgi_mount(asgi_echo, runner)(request("/", "POST", headers=headers, body=b"hi"))
    )
    assert seen["body"] == "hi"
    assert seen["more_body"] is False
    assert seen["headers"] == [["content-type", "text/plain"], ["x-tag", "a"], ["x-tag", "b"]]


def test_asgi_status_headers_and_more_body_chunks(runner):
    async def app(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 418,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"set-cookie", b"a=1"),
                    (b"set-cookie", b"b=2"),
                    (b"transfer-encoding", b"chunked"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"I'm ", "more_body": True})
        await send({"type": "http.response.body", "more_body": True})
        await send({"type": "http.response.body", "body": b"a teapot"})

    response = asgi_mount(app, runner)(request())
    assert response.status == 418
    assert response.body == b"I'm a teapot"
    assert response.headers == [
        ("content-type", "text/plain"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
    ]


def test_asgi_receive_returns_disconnect_only_after_the_response(runner):
    async def app(scope, receive, send):
        await receive()
        waiter = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        pending_before = not waiter.done()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})
        message = await waiter
        assert pending_before and message == {"type": "http.disconnect"}

    response = asgi_mount(app, runner)(request())
    assert (response.status, response.body) == (200, b"done")


def test_asgi_app_may_go_on_after_completing_its_response(runner):
    proceed, finished = threading.Event(), threading.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"early"})
        await asyncio.get_running_loop().run_in_executor(None, proceed.wait, WAIT)
        finished.set()  # like Starlette's background tasks

    response = asgi_mount(app, runner)(request())
    assert response.body == b"early"
    assert not finished.is_set()
    proceed.set()
    assert finished.wait(WAIT)


def test_asgi_app_raising_before_the_response_gives_a_500(runner, caplog):
    async def app(scope, receive, send):
        raise LookupError("no such item")

    with caplog.at_level(logging.ERROR, logger="racetrack.job"):
        response = asgi_mount(app, runner)(request("/items/9"))
    assert response.status == 500
    assert header(response, "Content-Type") == "application/json"
    assert json_body(response) == {"error": "no such item", "type": "LookupError"}
    assert "LookupError" in caplog.text
    assert "Traceback" in caplog.text


def test_asgi_app_raising_after_the_start_keeps_its_status(runner, caplog):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 206, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("stream broke")

    with caplog.at_level(logging.ERROR, logger="racetrack.job"):
        response = asgi_mount(app, runner)(request())
    assert (response.status, response.body, response.headers) == (206, b"part", [("x-a", "1")])
    assert "stream broke" in caplog.text


def test_asgi_app_returning_without_a_response(runner):
    async def app(scope, receive, send):
        await receive()

    response = asgi_mount(app, runner)(request())
    assert response.status == 500
    assert "without sending a response" in json_body(response)["error"]


def test_asgi_body_before_start_is_an_error(runner):
    async def app(scope, receive, send):
        await send({"type": "http.response.body", "body": b"x"})

    response = asgi_mount(app, runner)(request())
    assert response.status == 500
    assert "before 'http.response.start'" in json_body(response)["error"]


def test_asgi_object_with_async_call_and_sync_callable_returning_awaitable(runner):
    class App:
        async def __call__(self, scope, receive, send):
            await asgi_echo(scope, receive, send)

    def wrapper(scope, receive, send):
        return asgi_echo(scope, receive, send)

    for app in (App(), wrapper):
        assert json_body(asgi_mount(app, runner)(request("/p")))["path"] == "/p"


def test_asgi_requests_run_concurrently_from_many_threads(runner):
    count = 8
    arrived: list[str] = []
    all_here = threading.Event()

    async def app(scope, receive, send):
        arrived.append(scope["path"])
        if len(arrived) == count:
            all_here.set()
        # only possible if every request is in flight on the loop at the same time
        await asyncio.get_running_loop().run_in_executor(None, all_here.wait, WAIT)
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    handler = asgi_mount(app, runner)
    results: dict[int, WebResponse] = {}

    def call(i: int) -> None:
        results[i] = handler(request(f"/n/{i}"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all_here.is_set()
    assert {i: r.body for i, r in results.items()} == {i: f"/n/{i}".encode() for i in range(count)}


# lifespan


class LifespanApp:
    """An ASGI app speaking the lifespan protocol, like Starlette."""

    def __init__(self, fail_with: str | None = None) -> None:
        self.fail_with = fail_with
        self.events: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": json.dumps(scope["state"]).encode()})

    async def lifespan(self, scope, receive, send):
        assert (await receive())["type"] == "lifespan.startup"
        if self.fail_with:
            await send({"type": "lifespan.startup.failed", "message": self.fail_with})
            raise RuntimeError(self.fail_with)
        scope["state"]["db"] = "connected"
        self.events.append("startup")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        self.events.append("shutdown")
        await send({"type": "lifespan.shutdown.complete"})


def test_lifespan_startup_runs_on_mount_and_state_reaches_requests(runner):
    app = LifespanApp()
    handler = asgi_mount(app, runner)
    assert app.events == ["startup"]
    response = handler(request())
    assert json_body(response) == {"db": "connected"}
    handler.close()
    assert app.events == ["startup", "shutdown"]
    handler.close()  # idempotent


def test_lifespan_request_state_is_a_copy(runner):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["hits"] = 0
            await send({"type": "lifespan.startup.complete"})
            await receive()
            return
        scope["state"]["hits"] += 1
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": str(scope["state"]["hits"]).encode()})

    handler = asgi_mount(app, runner)
    assert [handler(request()).body for _ in range(2)] == [b"1", b"1"]


def test_lifespan_startup_failure_raises_from_mount(runner):
    with pytest.raises(LifespanError, match="cannot reach the database"):
        mount_webview(LifespanApp(fail_with="cannot reach the database"), BASE, runner)


def test_lifespan_unsupported_by_raising_is_fine(runner):
    async def app(scope, receive, send):
        assert scope["type"] == "http", "only http"
        await asgi_echo(scope, receive, send)

    handler = asgi_mount(app, runner)
    assert handler(request("/ok")).status == 200
    handler.close()


def test_lifespan_unsupported_by_returning_is_fine(runner):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asgi_echo(scope, receive, send)

    assert asgi_mount(app, runner)(request("/ok")).status == 200


def test_lifespan_startup_that_never_answers_times_out(runner, monkeypatch):
    monkeypatch.setattr(webview_module, "LIFESPAN_STARTUP_TIMEOUT", 0.05)

    async def app(scope, receive, send):
        await receive()
        await asyncio.Event().wait()  # hangs in startup

    with pytest.raises(LifespanError, match="did not finish"):
        mount_webview(app, BASE, runner)


# detection


def test_detection_of_a_one_parameter_function():
    def app(environ):
        return []

    with pytest.raises(TypeError, match=r"function .*1 positional parameter"):
        detect_app_kind(app)


def test_detection_of_a_string():
    with pytest.raises(TypeError, match=r"WSGI or ASGI app, not str 'hello'"):
        detect_app_kind("hello")


@pytest.mark.parametrize("value", [None, 42, dict, b"bytes"])
def test_detection_of_other_non_apps(value):
    with pytest.raises(TypeError, match="must return a WSGI or ASGI app"):
        detect_app_kind(value)


def test_detection_of_a_two_parameter_coroutine():
    async def app(environ, start_response):
        pass

    with pytest.raises(TypeError, match="coroutine function taking 2"):
        detect_app_kind(app)


def test_detection_kinds():
    async def asgi(scope, receive, send):
        pass

    def wsgi(environ, start_response):
        return []

    def flexible(*args):
        return []

    assert detect_app_kind(asgi) == "asgi"
    assert detect_app_kind(wsgi) == "wsgi"
    assert detect_app_kind(flexible) == "wsgi"
    assert detect_app_kind(LifespanApp()) == "asgi"


def test_mount_webview_raises_type_error(runner):
    with pytest.raises(TypeError, match="not str"):
        mount_webview("not an app", BASE, runner)


# AsyncRunner


def test_runner_from_many_threads_at_once_shares_one_loop():
    runner = AsyncRunner()
    count = 32
    barrier = threading.Barrier(count)
    results: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    async def work(i: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return i * i, id(asyncio.get_running_loop())

    def call(i: int) -> None:
        try:
            barrier.wait(WAIT)  # every thread starts the lazy loop at the same moment
            results[i] = runner.run(work(i), timeout=WAIT)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not errors
        assert {i: r[0] for i, r in results.items()} == {i: i * i for i in range(count)}
        assert len({r[1] for r in results.values()}) == 1  # one loop, started once
    finally:
        runner.close()


def test_runner_reraises_the_coroutine_exception(runner):
    async def fail() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        runner.run(fail())


def test_runner_timeout_cancels(runner):
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        runner.run(forever(), timeout=0.05)
    assert cancelled.wait(WAIT)


def test_runner_submit_returns_a_future(runner):
    async def add(a: int, b: int) -> int:
        return a + b

    assert runner.submit(add(2, 3)).result(WAIT) == 5


def test_runner_accepts_non_coroutine_awaitables(runner):
    async def make_future() -> asyncio.Future[str]:
        future = asyncio.get_running_loop().create_future()
        future.get_loop().call_soon(future.set_result, "resolved")
        return future

    future = runner.run(make_future())
    assert runner.run(future) == "resolved"


def test_runner_run_from_its_own_loop_is_refused(runner):
    async def inner() -> int:
        return 1

    async def outer() -> int:
        return runner.run(inner())

    with pytest.raises(RuntimeError, match="own event loop"):
        runner.run(outer())


def test_runner_close_cancels_pending_and_refuses_new_work():
    runner = AsyncRunner()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    future = runner.submit(forever())
    assert started.wait(WAIT)
    runner.close()
    assert future.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(forever())
    runner.close()  # idempotent
