"""What a call without a token reaches through the real router, and what a browser is told."""

import asyncio
import posixpath
import re
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web

from router.auth import AuthDenied
from router.paths import is_under
from tests.unit.test_proxy import routed, run

PREFIX = "/api/v1/webview"


async def refuse(_token, _job, _version, _path):
    return AuthDenied(401, "missing X-Racetrack-Auth header <b>&</b>")


def widest_reading(raw: str) -> str:
    """The path the most lenient server could make of `raw`: decoded until nothing changes,
    backslashes as separators, `;` parameters dropped, dot segments resolved."""
    path = urlsplit(raw).path
    while (decoded := unquote(path)) != path:
        path = decoded
    path = path.replace("\\", "/")
    path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
    return posixpath.normpath(path)


async def raw_get(url: str, target: str) -> int:
    """GET `target` exactly as written (no client normalises it); the status."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
    return int(status_line.split()[1])


TRICKS = [
    "/api/v1/webview/../perform",
    "/api/v1/webview/../../../../secret",
    "/api/v1/webview/%2e%2e/perform",
    "/api/v1/webview/%2E%2E/%2e%2E/secret",
    "/api/v1/webview/.%2e/perform",
    "/api/v1/webview%2f..%2fperform",
    "/api/v1/webview/..%2F..%2Fsecret",
    "/api/v1/webview/%252e%252e/perform",
    "/api/v1/webview/%25%32%65%25%32%65/perform",
    "/api/v1/webview\\..\\perform",
    "/api/v1/webview/%5c..%5cperform",
    "/api/v1/webview/..;/perform",
    "/api/v1/webview/..%3b/perform",
    "/api/v1/webview//../perform",
    "/api/v1/webview/./../perform",
    "/api/v1/webview/%c0%ae%c0%ae/perform",
    "/api/v1/webview#/../../perform",
    "/api/v1/webviewer",
    "/api/v1/WEBVIEW/x",
    "/api/v1/perform?/api/v1/webview",
]
OPEN = [
    "/api/v1/webview",
    "/api/v1/webview/",
    "/api/v1/webview/postme",
    "/api/v1/webview/static/style.css?v=1",
    "/api/v1/web%76iew/x%20y",
]


def test_a_call_without_a_token_never_reaches_a_path_outside_the_public_prefix():
    reached: list[str] = []

    async def job(request: web.Request) -> web.Response:
        reached.append(request.raw_path)
        return web.Response(text="job")

    async def scenario() -> None:
        async with routed(job, authorizer=refuse, public=(PREFIX,)) as job_url:
            base = urlsplit(job_url).path + "/1.0.0"
            for trick in TRICKS:
                assert await raw_get(job_url, base + trick) == 401, trick
            assert reached == []
            for path in OPEN:
                assert await raw_get(job_url, base + path) == 200, path

    run(scenario)
    assert len(reached) == len(OPEN)
    for raw in reached:
        assert is_under(widest_reading(raw), PREFIX), raw


def test_a_browser_gets_a_page_saying_how_to_get_a_token_and_set_the_cookie():
    async def job(_request: web.Request) -> web.Response:
        return web.Response(text="job")

    async def scenario() -> None:
        async with (
            routed(job, authorizer=refuse) as job_url,
            aiohttp.ClientSession() as client,
        ):
            accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            page = await client.get(
                f"{job_url}/latest/docs",
                headers={"Accept": accept, "X-Request-Tracing-Id": '<i>"id"</i>'},
            )
            assert page.status == 401
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert page.headers["Cache-Control"] == "no-store"
            text = await page.text()
            assert "ssh -p PORT git@HOST auth:token" in text  # the platform sets the real one
            assert 'document.cookie = "X-Racetrack-Auth=TOKEN; path=/pub/job/' in text
            assert "X-Racetrack-Auth: TOKEN" in text  # and the header, for programs
            assert "echo 1.0.0 needs a Racetrack token" in text
            # what is echoed is escaped
            assert "header &lt;b&gt;&amp;&lt;/b&gt;" in text and "<b>&</b>" not in text
            assert "&lt;i&gt;&quot;id&quot;&lt;/i&gt;" in text and "<i>" not in text
            assert not re.search(r"<(?!/?(html|head|meta|title|style|body|h1|h2|p|pre|code|"
                                 r"form|input|button|small|script)\b|!DOCTYPE)", text)  # fmt: skip

    run(scenario)


def test_programs_keep_the_json_401():
    async def job(_request: web.Request) -> web.Response:
        return web.Response(text="job")

    async def scenario() -> None:
        async with (
            routed(job, authorizer=refuse) as job_url,
            aiohttp.ClientSession() as client,
        ):
            for accept in (None, "*/*", "application/json", "text/html;q=0", "text/htmlx"):
                headers = {"X-Request-Tracing-Id": "r1"} | ({"Accept": accept} if accept else {})
                denied = await client.get(f"{job_url}/latest/docs", headers=headers)
                assert denied.status == 401, accept
                assert denied.content_type == "application/json", accept
                assert await denied.json() == {
                    "error": "missing X-Racetrack-Auth header <b>&</b>",
                    "request_id": "r1",
                }

    run(scenario)


def test_a_browser_refused_with_403_gets_the_json_as_before():
    async def forbid(_token, _job, _version, _path):
        return AuthDenied(403, "user bob may not call echo 1.0.0 /docs")

    async def job(_request: web.Request) -> web.Response:
        return web.Response(text="job")

    async def scenario() -> None:
        async with (
            routed(job, authorizer=forbid) as job_url,
            aiohttp.ClientSession() as client,
        ):
            denied = await client.get(f"{job_url}/latest/docs", headers={"Accept": "text/html"})
            assert denied.status == 403 and denied.content_type == "application/json"

    run(scenario)
