"""The python3 job type end to end: the sample monorepo under examples/python3 pushed whole to
each job's remote, deployed on the local runtime and (with an engine, always in CI) on docker,
and every item of the convention checked through the router."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest

from tests.harness import (
    EXAMPLES,
    JobRepo,
    Server,
    http_get,
    http_json,
    remove_docker_leftovers,
    runtime_server,
    wait_for,
)

SAMPLES = EXAMPLES / "python3"
SHOWCASE, FLASK, PINNED = "python3-showcase", "python3-webview-flask", "python3-pinned-aiohttp"


@pytest.fixture(scope="module", params=["local", "docker"])
def deployed(request, tmp_path_factory) -> Iterator[tuple[Server, str, dict[str, str]]]:
    """A platform on the runtime, with the three sample jobs pushed from one monorepo."""
    server = runtime_server(request.param, tmp_path_factory.mktemp(f"py3-{request.param}"))
    try:
        checkout = tmp_path_factory.mktemp("monorepo") / "samples"
        shutil.copytree(SAMPLES, checkout)
        repo = JobRepo(checkout, SHOWCASE)
        repo.git("init", "-q", "-b", "main")
        repo.commit({}, "the python3 samples")
        outputs = {}
        for job in (SHOWCASE, FLASK, PINNED):
            pushed = server.push(JobRepo(checkout, job))
            assert pushed.returncode == 0, pushed.stderr
            outputs[job] = pushed.stderr
        yield server, server.token(), outputs
    finally:
        server.stop()
        if request.param == "docker":
            remove_docker_leftovers(server.data_dir)


def get(server: Server, token: str, job: str, path: str, headers: dict | None = None):
    """GET through the router without following redirects: (status, headers, body)."""
    return http_get(f"{server.router_url}/pub/job/{job}/1.0.0{path}", token, headers)


def test_perform_auxiliary_endpoints_errors_and_runtime_env(deployed):
    server, token, _ = deployed
    assert server.call(SHOWCASE, "1.0.0", payload={"numbers": [40, 2]}, token=token) == (200, 42)
    mean = server.call(SHOWCASE, "latest", payload={"numbers": [1, 2], "mode": "mean"}, token=token)
    assert mean == (200, 1.5)
    status, body = server.call(SHOWCASE, "1.0.0", payload={"numbers": [], "mode": "mean"},
                               token=token)  # fmt: skip
    assert (status, body) == (400, {"error": "the mean of no numbers is undefined",
                                    "type": "ValueError"})  # fmt: skip
    status, body = server.call(SHOWCASE, "1.0.0", payload={"nums": [1]}, token=token)
    assert status == 400 and body["type"] == "ValueError" and "nums" in body["error"]
    summary = server.call(SHOWCASE, "1.0.0", "/api/v1/summary", {"numbers": [1, 2]}, token=token)
    assert summary == (200, {"total": 3, "count": 2})
    greet = server.call(SHOWCASE, "1.0.0", "/api/v1/greet", {"name": "Ada"}, token=token)
    assert greet == (200, "hello, Ada")


def test_static_endpoints_and_the_home_page(deployed):
    server, token, _ = deployed
    status, headers, body = get(server, token, SHOWCASE, "/api/v1/guide")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<h1>The showcase job</h1>" in body
    status, headers, body = get(server, token, SHOWCASE, "/api/v1/assets/dot.gif")
    assert (status, headers["Content-Type"], body[:6]) == (200, "image/gif", b"GIF89a")
    status, _, body = get(server, token, SHOWCASE, "/api/v1/manifest")
    assert status == 200 and b"name: python3-showcase" in body
    status, headers, _ = get(server, token, SHOWCASE, "/")
    assert (status, headers["Location"]) == (307, f"/pub/job/{SHOWCASE}/1.0.0/api/v1/guide")


def test_api_docs_work_behind_the_routers_prefix_with_nothing_from_the_internet(deployed):
    server, token, _ = deployed
    prefix = f"/pub/job/{SHOWCASE}/1.0.0"
    status, _, page = get(server, token, SHOWCASE, "/docs")
    html = page.decode()
    assert status == 200 and f"{prefix}/openapi.json" in html
    assert "http://" not in html and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        status, _, body = get(server, token, SHOWCASE, f"/docs/assets/{asset}")
        assert status == 200 and len(body) > 10_000, asset
    status, document = http_json(f"{server.router_url}{prefix}/openapi.json", token=token)
    assert status == 200 and document["servers"] == [{"url": prefix}]
    perform = document["paths"]["/api/v1/perform"]["post"]
    schema = perform["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["numbers"]
    assert schema["properties"]["mode"]["enum"] == ["sum", "mean"]
    assert schema["properties"]["mode"]["default"] == "sum"
    assert perform["summary"] == "Add up the numbers, or average them."
    example = perform["requestBody"]["content"]["application/json"]["example"]
    assert example == {"numbers": [40, 2], "mode": "sum"}
    assert {"/api/v1/summary", "/api/v1/greet", "/api/v1/guide"} <= set(document["paths"])


def test_max_concurrency_refuses_what_neither_runs_nor_queues(deployed):
    server, token, _ = deployed
    held: list[tuple[int, object]] = []
    holder = threading.Thread(target=lambda: held.append(
        server.call(SHOWCASE, "1.0.0", "/api/v1/hold", {"seconds": 5}, token=token)
    ))  # fmt: skip
    holder.start()
    wait_for(lambda: _in_flight(server, token) == 1, "the holding call to run")
    status, body = server.call(SHOWCASE, "1.0.0", payload={"numbers": [1]}, token=token)
    assert (status, body["type"]) == (429, "TooManyRequests")
    holder.join(60)
    assert held == [(200, "held")]


def _in_flight(server: Server, token: str) -> float:
    _status, _headers, body = get(server, token, SHOWCASE, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("job_requests_in_flight "):
            return float(line.split()[1])
    return -1


def test_metrics_and_health(deployed):
    server, token, _ = deployed
    server.call(SHOWCASE, "1.0.0", payload={"numbers": [1]}, token=token)
    status, headers, body = get(server, token, SHOWCASE, "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'job_requests_total{endpoint="/api/v1/perform",status="200"}' in text
    assert "# TYPE showcase_calls gauge" in text
    status, health = http_json(f"{server.router_url}/pub/job/{SHOWCASE}/1.0.0/health",
                               token=token)  # fmt: skip
    assert status == 200 and health["job_name"] == SHOWCASE and health["status"] == "pass"
    assert health["job_version"] == "1.0.0" and len(health["git_version"]) >= 7


def test_a_flask_webview_behind_the_prefix(deployed):
    server, token, _ = deployed
    base = f"/pub/job/{FLASK}/1.0.0/api/v1/webview"
    status, headers, page = get(server, token, FLASK, "/api/v1/webview/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'action="{base}/postme"'.encode() in page
    posted = http_json(f"{server.router_url}{base}/postme?q=1", {"a": 1}, token=token)
    assert posted == (200, {"hello": {"a": 1}, "query": "1"})
    status, headers, _ = get(server, token, FLASK, "/")
    assert (status, headers["Location"]) == (307, f"{base}/")


def test_a_job_pinning_old_aiohttp_chains_to_another_job_and_serves_asgi(deployed):
    server, token, _ = deployed
    refused = server.call(PINNED, "1.0.0", payload={"numbers": [1, 2]}, token=token)
    assert refused[0] == 500 and "403" in refused[1]["error"], "no call_job grant yet"
    granted = server.ssh("perms:grant", f"family:{PINNED}", "call_job", "--family", SHOWCASE)
    assert granted.returncode == 0, granted.stderr

    def chained() -> bool:
        status, _ = server.call(PINNED, "1.0.0", payload={"numbers": [1]}, token=token)
        return status == 200

    wait_for(chained, "the grant to reach the router's cache", 15)
    answer = http_json(
        f"{server.router_url}/pub/job/{PINNED}/1.0.0/api/v1/perform", {"numbers": [1, 2]},
        token=token, headers={"X-Request-Tracing-Id": "chain-trace-1"},
    )  # fmt: skip
    assert answer == (200, {"aiohttp": "3.8.6", "total": 3, "squares": [1.0, 4.0]})
    coroutine = server.call(PINNED, "1.0.0", "/api/v1/chained", {"numbers": [2, 3]}, token=token)
    assert coroutine == (200, {"total": 5, "count": 2})

    def traced_in_showcase_logs() -> bool:
        logs = server.ssh("logs", SHOWCASE, "--tail", "200")
        return "chain-trace-1" in logs.stdout

    wait_for(traced_in_showcase_logs, "the tracing id to reach the called job's log")

    base = f"/pub/job/{PINNED}/1.0.0/api/v1/webview"
    status, asgi = http_json(f"{server.router_url}{base}/items/3", token=token)
    assert status == 200 and asgi["root_path"] == base and asgi["base_url"] == base
    assert asgi["path"].endswith("/items/3")
