"""The router over real loopback HTTP, in front of a small aiohttp upstream."""

import asyncio
import contextlib
import gzip
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from router.auth import AuthDenied
from router.proxy import Router
from router.routes import JobRoute, RouteSnapshot


@asynccontextmanager
async def serving(app: web.Application, **runner_options) -> AsyncIterator[str]:
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def route_to(upstream: str, version: str = "1.0.0", public: tuple[str, ...] = ()) -> RouteSnapshot:
    return RouteSnapshot.build(
        [JobRoute("echo", version, 1, (upstream,), frozenset(public))], generation=1
    )


def answering(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """An upstream answering every path with `handler`."""
    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", handler)
    return upstream


@asynccontextmanager
async def routed(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    authorizer=None,
    public: tuple[str, ...] = (),
    **router_options,
) -> AsyncIterator[str]:
    """A router in front of an upstream answering every path with `handler`; yields the
    router's URL for job `echo` 1.0.0 (`.../pub/job/echo`)."""
    router = Router(authorizer=authorizer, **router_options)
    async with (
        serving(answering(handler)) as upstream_url,
        serving(router.make_app()) as router_url,
    ):
        router.publish(route_to(upstream_url, public=public))
        yield f"{router_url}/pub/job/echo"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_path_query_and_forwarded_headers_reach_the_upstream():
    seen: dict = {}

    async def echo(request: web.Request) -> web.Response:
        seen.update(path=request.raw_path, headers=dict(request.headers))
        return web.json_response({"ok": True}, headers={"X-From-Job": "yes"})

    async def scenario() -> None:
        async with routed(echo) as job_url, aiohttp.ClientSession() as client:
            response = await client.get(
                f"{job_url}/latest/api/v1/a%20b?x=1",
                headers={"X-Racetrack-Auth": "secret", "Cookie": "X-Racetrack-Auth=s; k=v"},
            )
            assert response.status == 200
            assert response.headers["X-From-Job"] == "yes"

    run(scenario)
    assert seen["path"] == "/api/v1/a%20b?x=1"
    headers = seen["headers"]
    assert headers["X-Forwarded-Prefix"] == "/pub/job/echo/1.0.0"  # the resolved version
    assert "X-Racetrack-Auth" not in headers  # callers' credentials stay with the router
    assert headers["Cookie"] == "k=v"
    assert len(headers["X-Request-Tracing-Id"]) == 32


def test_response_body_is_streamed_not_buffered():
    """The client reads the first chunk while the upstream is still holding back the second."""
    release_second = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first;")
        await release_second.wait()
        await response.write(b"second")
        await response.write_eof()
        return response

    async def scenario() -> None:
        async with (
            routed(slow) as job_url,
            aiohttp.ClientSession() as client,
            client.get(f"{job_url}/1.0.0/stream") as response,
        ):
            assert await response.content.readexactly(6) == b"first;"
            release_second.set()
            assert await response.content.read() == b"second"

    run(scenario)


def test_request_body_is_streamed_not_buffered():
    """The upstream sees the first part of the body before the client has sent the rest."""
    got_first = asyncio.Event()

    async def consume(request: web.Request) -> web.Response:
        first = await request.content.readexactly(6)
        got_first.set()
        rest = await request.content.read()
        return web.json_response({"body": (first + rest).decode()})

    async def body() -> AsyncIterator[bytes]:
        yield b"first;"
        await got_first.wait()
        yield b"second"

    async def scenario() -> None:
        async with (
            routed(consume) as job_url,
            aiohttp.ClientSession() as client,
            client.post(f"{job_url}/1.0.0/upload", data=body()) as response,
        ):
            assert await response.json() == {"body": "first;second"}

    run(scenario)


def test_unknown_job_is_404_and_dead_upstream_is_502_naming_job_version_and_request():
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{placeholder.getsockname()[1]}"

    async def scenario() -> None:
        router = Router(authorizer=None)
        async with serving(router.make_app()) as router_url:
            router.publish(route_to(dead))
            async with aiohttp.ClientSession() as client:
                missing = await client.get(f"{router_url}/pub/job/nope/latest/")
                assert missing.status == 404
                assert (await missing.json())[
                    "error"
                ] == "no running version 'latest' of job 'nope'"
                failed = await client.get(
                    f"{router_url}/pub/job/echo/1.x/", headers={"X-Request-Tracing-Id": "abc123"}
                )
                assert failed.status == 502
                body = await failed.json()
                assert (body["job"], body["version"], body["request_id"]) == (
                    "echo",
                    "1.0.0",
                    "abc123",
                )
                assert body["error"].startswith(
                    "job echo 1.0.0 did not answer: ClientConnectorError"
                )

    run(scenario)


def test_authorizer_is_asked_except_for_probes_and_public_endpoints():
    asked: list[tuple] = []

    async def authorizer(token, job, version, path):
        asked.append((token, job, version, path))
        return None if token == "good" else AuthDenied(401, "invalid token")

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response("ok")

    async def scenario() -> None:
        async with (
            routed(ok, authorizer=authorizer, public=("/open",)) as job_url,
            aiohttp.ClientSession() as client,
        ):
            base = f"{job_url}/latest"
            assert (await client.get(f"{base}/health")).status == 200
            assert (await client.get(f"{base}/open")).status == 200
            denied = await client.post(f"{base}/api/v1/perform", json={})
            assert denied.status == 401
            assert (await denied.json())["error"] == "invalid token"
            allowed = await client.post(
                f"{base}/api/v1/perform?x=1", json={}, headers={"X-Racetrack-Auth": "good"}
            )
            assert allowed.status == 200

    run(scenario)
    assert asked == [
        (None, "echo", "1.0.0", "/api/v1/perform"),
        ("good", "echo", "1.0.0", "/api/v1/perform"),
    ]


def test_a_swap_never_disturbs_requests_already_routed():
    """A request holds the snapshot it started with; publishing a new one affects only new calls."""
    hold = asyncio.Event()
    reached_old = asyncio.Event()

    def app(name: str) -> web.Application:
        async def answer(_request: web.Request) -> web.Response:
            if name == "old":
                reached_old.set()
                await hold.wait()
            return web.json_response(name)

        application = web.Application()
        application.router.add_get("/", answer)
        return application

    async def scenario() -> None:
        router = Router(authorizer=None)
        async with (
            serving(app("old")) as old_url,
            serving(app("new")) as new_url,
            serving(router.make_app()) as router_url,
            aiohttp.ClientSession() as client,
        ):
            router.publish(route_to(old_url))
            in_flight = asyncio.ensure_future(client.get(f"{router_url}/pub/job/echo/1.0.0/"))
            await reached_old.wait()
            router.publish(route_to(new_url))
            after = await client.get(f"{router_url}/pub/job/echo/1.0.0/")
            assert await after.json() == "new"
            hold.set()
            assert await (await in_flight).json() == "old"

    run(scenario)


def test_a_job_that_never_answers_is_504_in_time_and_the_router_goes_on(caplog):
    """The call ends after `upstream_timeout`, is counted and logged once, and no longer holds
    the upstream's in-flight count (a swap's drain is not kept waiting)."""
    release = asyncio.Event()

    async def hangs_on_request(request: web.Request) -> web.Response:
        if request.path == "/hang":
            await release.wait()
        return web.json_response("fine")

    async def scenario() -> None:
        router = Router(authorizer=None, upstream_timeout=0.5)
        async with (
            serving(answering(hangs_on_request)) as upstream_url,
            serving(router.make_app()) as router_url,
            aiohttp.ClientSession() as client,
        ):
            router.publish(route_to(upstream_url))
            try:
                started = time.monotonic()
                hung = await client.get(
                    f"{router_url}/pub/job/echo/1.x/hang", headers={"X-Request-Tracing-Id": "t1"}
                )
                elapsed = time.monotonic() - started
                assert hung.status == 504
                assert await hung.json() == {
                    "error": "job echo 1.0.0 did not answer within 0.5s",
                    "job": "echo",
                    "version": "1.0.0",
                    "request_id": "t1",
                }
                assert 0.45 <= elapsed < 2.5
                assert await router.drain([upstream_url], 1.0)
                fine = await client.get(f"{router_url}/pub/job/echo/1.0.0/other")
                assert (fine.status, await fine.json()) == (200, "fine")
            finally:
                release.set()
        counted = router.registry.get_sample_value(
            "racetrack_router_requests_total", {"job": "echo", "version": "1.0.0", "status": "504"}
        )
        assert counted == 1

    with caplog.at_level(logging.WARNING, logger="racetrack.router"):
        run(scenario)
    warnings = [r for r in caplog.records if r.name == "racetrack.router"]
    assert len(warnings) == 1
    assert "did not answer within 0.5s" in warnings[0].getMessage()


def test_a_response_stalling_mid_body_is_cut():
    """Its headers are out, so the caller sees the connection end before the body does."""
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first;")
        await release.wait()
        with contextlib.suppress(ConnectionResetError):  # the router has hung up by now
            await response.write_eof()
        return response

    async def scenario() -> None:
        async with (
            routed(stalls, upstream_timeout=0.5) as job_url,
            aiohttp.ClientSession() as client,
            client.get(f"{job_url}/1.0.0/stream") as response,
        ):
            try:
                assert response.status == 200
                assert await response.content.readexactly(6) == b"first;"
                started = time.monotonic()
                with pytest.raises(aiohttp.ClientPayloadError):
                    await asyncio.wait_for(response.content.read(), 5)
                assert time.monotonic() - started < 2.5
            finally:
                release.set()

    run(scenario)


def test_a_slow_upload_does_not_count_against_the_job():
    """The clock stands still while the caller is the one sending: an upload taking longer than
    `upstream_timeout` still gets the job's answer."""

    async def consume(request: web.Request) -> web.Response:
        return web.json_response({"body": (await request.read()).decode()})

    async def body() -> AsyncIterator[bytes]:
        for part in (b"a;", b"b;", b"c;", b"d"):
            yield part
            await asyncio.sleep(0.3)

    async def scenario() -> None:
        async with (
            routed(consume, upstream_timeout=0.5) as job_url,
            aiohttp.ClientSession() as client,
            client.post(f"{job_url}/1.0.0/upload", data=body()) as response,
        ):
            assert response.status == 200
            assert await response.json() == {"body": "a;b;c;d"}

    run(scenario)


def test_a_compressed_request_body_reaches_the_job_as_sent():
    """The router passes the bytes on; the job's server is the one that inflates them."""
    original = b"racetrack " * 10_000
    seen: dict = {}

    async def inflate(request: web.Request) -> web.Response:
        seen.update(encoding=request.headers.get("Content-Encoding"), body=await request.read())
        return web.json_response("ok")

    async def scenario() -> None:
        async with routed(inflate) as job_url, aiohttp.ClientSession() as client:
            response = await client.post(
                f"{job_url}/1.0.0/upload",
                data=gzip.compress(original),
                headers={"Content-Encoding": "gzip"},
            )
            assert response.status == 200

    run(scenario)
    assert seen == {"encoding": "gzip", "body": original}


@asynccontextmanager
async def raw_upstream(answer: Callable[[asyncio.StreamWriter], Awaitable[None]]):
    """A TCP upstream that does `answer` with each connection, reading nothing; yields its URL."""
    release = asyncio.Event()
    handlers: set[asyncio.Task] = set()

    async def on_connection(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())
        try:
            with contextlib.suppress(ConnectionError):  # the router hung up
                await answer(writer)
                await release.wait()
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        release.set()
        server.close()
        await asyncio.gather(*handlers)
        await server.wait_closed()


def test_the_timeout_bounds_the_whole_wait_for_headers_not_just_silence():
    """An upstream trickling its response head keeps aiohttp's sock_read from firing, and one
    that never reads the request body keeps it from starting: both are 504 after the timeout."""

    async def trickle_head(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(50):
            await asyncio.sleep(0.1)
            writer.write(b"X-Still: coming\r\n")
            await writer.drain()

    async def nothing(_writer: asyncio.StreamWriter) -> None:
        pass

    async def big_body() -> AsyncIterator[bytes]:
        for _ in range(512):  # 32 MiB: more than the socket buffers between router and job
            yield b"x" * 65536

    async def scenario() -> None:
        for answer, body in ((trickle_head, None), (nothing, big_body())):
            router = Router(authorizer=None, upstream_timeout=0.5)
            async with (
                raw_upstream(answer) as upstream_url,
                # aiohttp gives a caller that hung up mid-upload 10 s of lingering: not waited for
                serving(router.make_app(), shutdown_timeout=0.5) as router_url,
                aiohttp.ClientSession() as client,
            ):
                router.publish(route_to(upstream_url))
                started = time.monotonic()
                async with client.post(f"{router_url}/pub/job/echo/1.0.0/", data=body) as response:
                    assert response.status == 504, answer
                    assert (await response.json())["error"].endswith("within 0.5s")
                assert time.monotonic() - started < 3
                assert await router.drain([upstream_url], 1.0)

    run(scenario)


def test_the_router_sends_the_releases_upstream_key_and_never_a_callers():
    seen: list[list[str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.getall("X-Racetrack-Upstream-Key", []))
        return web.json_response("ok")

    async def scenario() -> None:
        upstream = web.Application()
        upstream.router.add_route("*", "/{tail:.*}", echo)
        router = Router(authorizer=None)
        async with serving(upstream) as upstream_url, serving(router.make_app()) as router_url:
            route = JobRoute("echo", "1.0.0", 1, (upstream_url,), upstream_key="the-key")
            router.publish(RouteSnapshot.build([route], generation=1))
            async with aiohttp.ClientSession() as client:
                forged = {"X-Racetrack-Upstream-Key": "forged", "x-racetrack-upstream-key": "2"}
                async with client.get(f"{router_url}/pub/job/echo/1.0.0/", headers=forged) as r:
                    assert r.status == 200

    run(scenario)
    assert seen == [["the-key"]]
