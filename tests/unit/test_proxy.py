"""The router over real loopback HTTP, in front of a small aiohttp upstream."""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from router.auth import AuthDenied
from router.proxy import Router
from router.routes import JobRoute, RouteSnapshot


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
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


@asynccontextmanager
async def routed(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    authorizer=None,
    public: tuple[str, ...] = (),
) -> AsyncIterator[str]:
    """A router in front of an upstream answering every path with `handler`; yields the
    router's URL for job `echo` 1.0.0 (`.../pub/job/echo`)."""
    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", handler)
    router = Router(authorizer=authorizer)
    async with serving(upstream) as upstream_url, serving(router.make_app()) as router_url:
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
