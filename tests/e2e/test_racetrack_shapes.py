"""Jobs in the shapes of Racetrack's own samples, each pushed as its own repository (their
manifests name `git.directory: sample/<x>`, a path in Racetrack's repository), deployed on the
local runtime and (with an engine, always in CI) on docker, and called as their READMEs show:
auxiliary and static endpoints, webview-only jobs (WSGI and ASGI) with ./static, a chain, an
`extends` overlay and heavy requirements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import (
    JobRepo,
    Server,
    fixture_files,
    http_get,
    remove_docker_leftovers,
    runtime_server,
    wait_for,
)

SHAPES = {  # fixture folder: job name
    "racetrack-layout/python-class": "python-class",
    "aux-static": "aux-static",
    "webview-wsgi": "webview-wsgi",
    "webview-asgi": "webview-asgi",
    "webview-fastapi-form": "webview-fastapi-form",
    "chain": "chain",
    "overlay": "overlay-dev",
    "heavy-requirements": "heavy-requirements",
}


@dataclass
class Platform:
    runtime: str
    server: Server
    token: str
    pushed: dict[str, str]  # job name: the push's remote: lines

    def url(self, job: str, path: str) -> str:
        return f"{self.server.router_url}/pub/job/{job}/latest{path}"

    def get(self, job: str, path: str) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url(job, path), self.token)


@pytest.fixture(scope="module", params=["local", "docker"])
def platform(request, tmp_path_factory) -> Iterator[Platform]:
    server = runtime_server(request.param, tmp_path_factory.mktemp(f"shapes-{request.param}"))
    try:
        pushed = {}
        for folder, job in SHAPES.items():
            checkout = tmp_path_factory.mktemp("repo") / job
            repo = JobRepo.create(checkout, job, fixture_files(folder))
            result = server.push(repo)
            assert result.returncode == 0, result.stderr
            pushed[job] = result.stderr
        yield Platform(request.param, server, server.token(), pushed)
    finally:
        server.stop()
        if request.param == "docker":
            remove_docker_leftovers(server.data_dir)


def test_each_sample_pushed_alone_deploys_from_its_root(platform):
    for job, lines in platform.pushed.items():
        assert "git.directory 'sample/" in lines and "is not in this commit" in lines, job


def test_auxiliary_and_static_endpoints_and_parameters(platform):
    call = platform.server.call
    token = platform.token
    assert call("aux-static", "latest", payload={"x": 40, "y": 2}, token=token) == (200, 42)
    explained = call("aux-static", "latest", "/api/v1/explain", {"x": 1, "y": 3}, token=token)
    assert explained == (200, {"x_importance": 0.25, "y_importance": 0.75})
    status, body = call("aux-static", "latest", payload={"x": 1, "z": 2}, token=token)
    assert (status, body["type"]) == (400, "ValueError")
    assert call("aux-static", "latest", "/api/v1/parameters", token=token, method="GET") == (
        200,
        [
            {"name": "x", "type": "float"},
            {"name": "y", "default_value": 2.0, "type": "float"},
            {"name": "label", "default_value": "sum", "type": "str"},
        ],
    )
    status, headers, body = platform.get("aux-static", "/api/v1/xrai")
    assert (status, headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
    assert body == b"xrai: a file of a type no one knows\n"
    status, headers, _ = platform.get("aux-static", "/api/v1/assets/notes.unknownext")
    assert (status, headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
    status, headers, _ = platform.get("aux-static", "/api/v1/manifest")
    assert (status, headers["Content-Type"]) == (200, "application/x-yaml")


def test_probes_carry_racetracks_fields_and_the_deployment_timestamp(platform):
    status, _, body = platform.get("aux-static", "/live")
    live = json.loads(body)
    assert status == 200 and live["live"] is True and live["deployment_timestamp"].isdigit()
    status, _, body = platform.get("aux-static", "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "pass" and health["ready"] is True
    assert health["deployment_timestamp"] == live["deployment_timestamp"]
    assert health["job_type_version"] == "python3:latest"
    assert health["deployed_by_racetrack_version"]
    assert health["job_name"] == "aux-static" and health["job_version"] == "0.0.1"


def test_a_webview_only_wsgi_job_serves_its_pages_form_and_static_folder(platform):
    base = "/pub/job/webview-wsgi/0.0.2/api/v1/webview"
    status, headers, page = platform.get("webview-wsgi", "/api/v1/webview/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'href="{base}/static/style.css"'.encode() in page
    status, headers, css = platform.get("webview-wsgi", "/api/v1/webview/static/style.css")
    assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    assert css == b"body { font-family: sans-serif; }\n"
    posted = http_get(
        platform.url("webview-wsgi", "/api/v1/webview/postme"), platform.token,
        {"Content-Type": "application/json"}, method="POST", data=b'{"a": 1}',
    )  # fmt: skip
    assert (posted[0], json.loads(posted[2])) == (200, {"hello": {"a": 1}})
    status, body = platform.server.call("webview-wsgi", "latest", payload={}, token=platform.token)
    assert (status, body) == (
        400,
        {"error": "entrypoint doesn't have 'perform' method implemented", "type": "ValueError"},
    )


def test_a_webview_only_asgi_job_redirects_renders_and_serves_static(platform):
    base = "/pub/job/webview-asgi/0.0.1/api/v1/webview"
    status, headers, _ = platform.get("webview-asgi", "/api/v1/webview/")
    assert (status, headers["Location"]) == (302, f"{base}/view")
    status, _, page = platform.get("webview-asgi", "/api/v1/webview/view")
    assert status == 200 and f"{base}/static/page.css".encode() in page
    status, headers, css = platform.get("webview-asgi", "/api/v1/webview/static/page.css")
    assert (status, headers["Content-Type"], css) == (
        200, "text/css; charset=utf-8", b"h1 { color: blue; }\n",
    )  # fmt: skip


def test_a_fastapi_form_works_with_only_fastapi_listed_as_in_racetrack(platform):
    posted = http_get(
        platform.url("webview-fastapi-form", "/api/v1/webview/preview"), platform.token,
        {"Content-Type": "application/x-www-form-urlencoded"}, method="POST",
        data=b"raw_docs=%23+Title",
    )  # fmt: skip
    assert (posted[0], posted[2]) == (200, b"preview of # Title")
    if platform.runtime == "local":  # docker's build steps are in builds:log
        line = "Installing python-multipart>=0.0.9, as Racetrack's runner has it"
        assert line in platform.pushed["webview-fastapi-form"]


def test_a_chain_job_calls_another_once_granted(platform):
    server, token = platform.server, platform.token
    refused = server.call("chain", "latest", payload={"numbers": [0.2, 0.9]}, token=token)
    assert refused[0] == 500 and "403" in refused[1]["error"], "no call_job grant yet"
    granted = server.ssh("perms:grant", "family:chain", "call_job", "--family", "python-class")
    assert granted.returncode == 0, granted.stderr

    def chained() -> bool:
        answer = server.call("chain", "latest", payload={"numbers": [0.2, 0.9]}, token=token)
        return answer == (200, 1)

    wait_for(chained, "the grant to reach the router's cache", 15)


def test_an_overlay_deploys_the_merged_manifest(platform):
    answer = platform.server.call("overlay-dev", "latest", payload={}, token=platform.token)
    assert answer == (200, {"name": "overlay-dev", "version": "0.0.2"})
    info = platform.server.ssh("jobs:info", "overlay-dev").stdout
    assert "0.0.2: running, r1" in info, info
    assert info.count("  up") == 2, "the overlay's replicas: 2"
    lines = platform.pushed["overlay-dev"]
    assert "cpu_max 1 cores" in lines, "the overlay's cpu_max, from its base"
    if platform.runtime == "local":
        assert "resources.memory_min and cpu_min cannot be reserved on local" in lines


def test_a_job_with_heavy_requirements_builds_and_answers(platform):
    answer = platform.server.call(
        "heavy-requirements", "latest", payload={"rows": [[1, 2], [3, 4.5]]}, token=platform.token
    )
    assert answer == (200, [3.0, 7.5])
