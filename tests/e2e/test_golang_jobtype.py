"""The golang job type end to end, in both of Racetrack's conventions, on the local runtime
(compiled with this machine's Go) and on docker: the user guide's form (`package main`,
`Perform(args, kwargs)`, no go.mod) and the plugin's form with a go.mod dependency that the
build downloads through the machine's module proxy (github.com/pkg/errors), each pushed as its
own repository and called through the router."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from openapi_spec_validator import validate

from buildpacks.golang.signature import GUIDE_SIGNATURE, PLUGIN_SIGNATURE
from buildpacks.golang.toolchain import find_go
from tests.harness import (
    RUNTIME_FLAGS,
    JobRepo,
    Server,
    docker_engine_problem,
    fixture_files,
    http_json,
    remove_docker_leftovers,
)

GUIDE, PLUGIN = "golang-guide", "golang-plugin"
GOLANG_IMAGE = "racetrack/golang-base:bookworm"
DOCKER_FLAGS = (
    *RUNTIME_FLAGS["docker"],
    "--golang-base-image", GOLANG_IMAGE,
    "--golang-runtime-image", "racetrack/python3-base:bookworm",
)  # fmt: skip
PERFORM = "/api/v1/perform"
OUTPUTS: dict[tuple[str, str], str] = {}  # the first pushes' output, by runtime and job


def _unavailable(runtime: str) -> str | None:
    if runtime == "local":
        return None if find_go() else "no Go toolchain here: run scripts/setup-go"
    problem = docker_engine_problem()
    if problem is None and os.system(f"docker image inspect {GOLANG_IMAGE} >/dev/null 2>&1"):
        problem = f"no {GOLANG_IMAGE}: run scripts/setup-docker"
    return problem


@pytest.fixture(scope="module", params=["local", "docker"])
def deployed(request, tmp_path_factory) -> Iterator[tuple[Server, str, dict[str, JobRepo]]]:
    """A platform on the runtime with both Go jobs pushed, each from its own repository."""
    problem = _unavailable(request.param)
    if problem is not None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"golang tests must run in CI on {request.param}: {problem}")
        pytest.skip(problem)
    flags = DOCKER_FLAGS if request.param == "docker" else RUNTIME_FLAGS["local"]
    server = Server(tmp_path_factory.mktemp(f"go-{request.param}"), extra_args=flags).start()
    try:
        repos = {}
        for job in (GUIDE, PLUGIN):
            repos[job] = JobRepo.create(
                tmp_path_factory.mktemp("repos") / job, job, fixture_files(job)
            )
            pushed = server.push(repos[job])
            assert pushed.returncode == 0, pushed.stderr
            OUTPUTS[(request.param, job)] = pushed.stderr
        yield server, server.token(), repos
    finally:
        server.stop()
        if request.param == "docker":
            remove_docker_leftovers(server.data_dir)


def get(server: Server, token: str, job: str, path: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"{server.router_url}/pub/job/{job}/1.0.0{path}")
    request.add_header("X-Racetrack-Auth", token)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def counter(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text `text` (0 when it is not there yet)."""
    shown = ",".join(f'{key}="{value}"' for key, value in labels.items())
    sample = f"{name}{{{shown}}}" if labels else name
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def pushed_output(server: Server, job: str) -> str:
    runtime = "docker" if "--runtime" in server.extra_args else "local"
    return OUTPUTS[(runtime, job)]


def test_the_guides_form_takes_kwargs_and_args(deployed):
    server, token, _ = deployed
    output = pushed_output(server, GUIDE)
    assert "remote: Perform in main.go: the guide's convention" in output
    assert "package main: built as package racetrackjob" in output

    def call(payload):
        return server.call(GUIDE, "1.0.0", PERFORM, payload, token=token)

    assert call({"x": 40, "y": 2}) == (200, 42)
    assert call([40, 2]) == (200, 42)  # a JSON array is args
    assert call({"args": [40], "y": 2}) == (200, 42)  # the args key is args, not a kwarg
    # init() read greeting.txt: the job's own files are its working directory
    assert call({"name": "Ada"}) == (200, "hello from the job's directory, Ada")
    assert call({"z": 1}) == (500, {"error": "unexpected keyword arguments: 1", "type": "error"})
    status, body = call({"args": 3})
    assert (status, body["type"]) == (400, "BadRequest") and '"args" must be a JSON array' in (
        body["error"]
    )
    status, body = call("text")
    assert (status, body["type"]) == (400, "BadRequest") and "not a string" in body["error"]


def test_the_plugins_form_with_a_module_from_the_proxy(deployed):
    server, token, _ = deployed
    output = pushed_output(server, PLUGIN)
    assert "remote: Perform in perform.go: the plugin's convention" in output
    assert "go: downloading github.com/pkg/errors v0.9.1" in output  # through the module proxy

    def call(payload):
        return server.call(PLUGIN, "1.0.0", PERFORM, payload, token=token)

    assert call({"numbers": [40, 2]}) == (200, 42)
    # errors.Wrapf from github.com/pkg/errors wrote this message
    assert call({"numbers": [1, "x"]}) == (
        500,
        {"error": "numbers[1]: not a number", "type": "error"},
    )
    status, body = call([1, 2])
    assert (status, body["type"]) == (400, "BadRequest") and "not an array" in body["error"]
    status, body = server.call(PLUGIN, "1.0.0", PERFORM, token=token, method="POST")
    assert (status, body) == (500, {"error": "'numbers' parameter was not given", "type": "error"})


@pytest.mark.parametrize("job", [GUIDE, PLUGIN])
def test_metrics_count_every_call(deployed, job):
    server, token, _ = deployed
    labels = {"endpoint": PERFORM}

    def scrape() -> str:
        status, content_type, body = get(server, token, job, "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        return body.decode()

    before = scrape()
    good = {"x": 1} if job == GUIDE else {"numbers": [1]}
    bad = {"x": "one"} if job == GUIDE else {"numbers": "one"}
    for payload in (good, good, bad):
        server.call(job, "1.0.0", PERFORM, payload, token=token)
    after = scrape()
    ok, failed = {**labels, "status": "200"}, {**labels, "status": "500"}
    assert (
        counter(after, "job_requests_total", **ok)
        == counter(before, "job_requests_total", **ok) + 2
    )
    assert counter(after, "job_requests_total", **failed) == (
        counter(before, "job_requests_total", **failed) + 1
    )
    server_errors = {**labels, "kind": "server"}
    assert counter(after, "job_request_errors_total", **server_errors) == (
        counter(before, "job_request_errors_total", **server_errors) + 1
    )
    count = "job_request_duration_seconds_count"
    assert counter(after, count, **labels) == counter(before, count, **labels) + 3
    assert counter(after, "job_last_call_timestamp_seconds") > 0
    assert "# TYPE job_request_duration_seconds histogram" in after


@pytest.mark.parametrize("job", [GUIDE, PLUGIN])
def test_docs_and_openapi_behind_the_routers_prefix(deployed, job):
    server, token, _ = deployed
    prefix = f"/pub/job/{job}/1.0.0"
    status, content_type, page = get(server, token, job, "/docs")
    html = page.decode()
    assert status == 200 and content_type.startswith("text/html")
    assert f'url: "{prefix}/openapi.json"' in html
    assert "http://" not in html and "https://" not in html  # nothing from the internet
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        status, _, body = get(server, token, job, f"/docs/assets/{asset}")
        assert status == 200 and len(body) > 10_000, asset
    status, document = http_json(f"{server.router_url}{prefix}/openapi.json", token=token)
    assert status == 200 and document["servers"] == [{"url": prefix}]
    validate(document)
    assert document["info"] == {
        "title": job,
        "version": "1.0.0",
        "description": f"A Go job in the {'guide' if job == GUIDE else 'plugin'}'s Perform"
        " convention.",
    }
    assert "post" in document["paths"][PERFORM]


def test_probes_have_the_wrappers_fields(deployed):
    server, token, _ = deployed
    for job in (GUIDE, PLUGIN):
        assert server.call(job, "1.0.0", "/live", token=token)[1]["live"] is True
        assert server.call(job, "1.0.0", "/ready", token=token) == (200, {"ready": True})
        status, health = server.call(job, "1.0.0", "/health", token=token)
        assert status == 200
        assert {k: health[k] for k in ("service", "job_name", "job_version", "status")} == {
            "service": "job",
            "job_name": job,
            "job_version": "1.0.0",
            "status": "pass",
        }
        assert health["live"] is True and health["ready"] is True and health["error"] is None
        assert "deployment_timestamp" in health and "git_version" in health


def test_a_wrong_signature_is_refused_before_compiling(deployed, tmp_path):
    server, _, _ = deployed
    files = {
        **fixture_files(PLUGIN),
        "job.yaml": "name: go-wrong\nowner_email: dev@example.com\njobtype: golang\n",
        "perform.go": "package dummyserver\n\nfunc Perform(input map[string]int) int {\n"
        "\treturn 1\n}\n",
    }
    pushed = server.push(JobRepo.create(tmp_path / "wrong", "go-wrong", files))
    assert pushed.returncode != 0
    # the reason git prints for the ref: one line, both signatures
    (reason,) = [line for line in pushed.stdout.splitlines() if "[remote rejected]" in line]
    assert "perform.go has func Perform(input map[string]int) int; write" in reason, reason
    assert PLUGIN_SIGNATURE in reason and GUIDE_SIGNATURE in reason
    assert "go build" not in pushed.stderr and "Step " not in pushed.stderr


def test_a_compile_error_names_the_line_and_the_old_release_serves_on(deployed):
    """The last test of its runtime: the guide's repository is left a commit ahead."""
    server, token, repos = deployed
    repo = repos[GUIDE]
    broken = (repo.path / "main.go").read_text().replace("total := 0.0", "total := notDefined")
    repo.commit(
        {"main.go": broken, "job.yaml": fixture_files(GUIDE)["job.yaml"].replace("1.0.0", "1.0.1")}
    )
    pushed = server.push(repo, "main")
    assert pushed.returncode != 0
    (reason,) = [line for line in pushed.stdout.splitlines() if "[remote rejected]" in line]
    assert re.search(r"main\.go:\d+:\d+: undefined: notDefined", reason), reason
    assert server.call(GUIDE, "latest", PERFORM, {"x": 40, "y": 2}, token=token) == (200, 42)
