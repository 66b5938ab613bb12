"""The python3 job wrapper's HTTP surface, as a real process spoken to over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import swagger_ui_bundle

from tests.harness import wait_for
from tests.unit.wrapper_process import DEADLINE, Wrapper, start_wrapper

ENTRY = '''
import dataclasses, datetime, enum, logging, pathlib, time

log = logging.getLogger("sample")


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Custom:
    def __to_json__(self):
        return {"custom": True}


class FakeArray:  # the shape of a numpy array: tolist()
    def tolist(self):
        return [[1, 2], [3, 4]]


class JobEntrypoint:
    """Adds numbers, and explains itself."""

    def perform(self, numbers: list[float], scale: float = 1.0) -> float:
        """Sum the numbers.

        :param numbers: what to add
        :param scale: multiplies the sum
        :return: the scaled sum
        """
        log.info("adding %d numbers", len(numbers))
        if scale < 0:
            raise ValueError("scale must not be negative")
        if scale == 13:
            raise RuntimeError("unlucky")
        return sum(numbers) * scale

    def explain(self, x: int) -> dict:
        return {"x": x, "when": datetime.date(2026, 11, 24), "point": Point(1, 2),
                "colour": Colour.RED, "custom": Custom(), "array": FakeArray()}

    def slow(self, gate: str) -> str:
        pathlib.Path(gate + ".started").touch()
        while not pathlib.Path(gate).exists():
            time.sleep(0.01)
        return "done"

    def broken(self) -> object:
        return object()

    def auxiliary_endpoints(self):
        return {"/explain": self.explain, "/slow": self.slow, "/broken": self.broken}

    def docs_input_example(self):
        return {"numbers": [40, 2]}

    def docs_input_examples(self):
        return {"/explain": {"x": 7}}

    def static_endpoints(self):
        return {"/manifest": ("job.yaml", "application/x-yaml"), "/readme": "README.md",
                "/assets": "assets"}

    def metrics(self):
        return [{"name": "job_is_crazy", "value": 0.5, "description": "How crazy",
                 "labels": {"colour": "blue"}},
                {"name": "bad name", "value": 1},
                {"name": "no_value_yet", "value": None}]
'''
FILES = {
    "entry.py": ENTRY,
    "job.yaml": "name: sample\n",
    "README.md": "# Sample\n",
    "assets/app.js": "console.log(1)\n",
    "assets/deep/style.css": "body {}\n",
}


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wrapper]:
    running = start_wrapper(
        tmp_path_factory.mktemp("job"), FILES,
        {"MAX_CONCURRENCY": "1", "MAX_CONCURRENCY_QUEUE": "1", "HOME_PAGE": "/api/v1/readme",
         "ENTRYPOINT_CLASS": "JobEntrypoint"},  # the module defines several classes
    )  # fmt: skip
    yield running
    running.stop()


def test_perform_takes_the_json_object_as_keyword_arguments(wrapper):
    answer = wrapper.request("/api/v1/perform", {"numbers": [1, 2, 3], "scale": 2})
    assert (answer.status, answer.json()) == (200, 12)


def test_errors_have_one_shape_and_the_right_status(wrapper):
    cases = [
        (
            {"numbers": [1], "bogus": 1},
            400,
            "ValueError",  # as Racetrack names a call that does not fit
            "failed to call a function: unexpected argument 'bogus' (it takes: numbers, scale)",
        ),
        (
            {"bogus": 1},
            400,
            "ValueError",
            "unexpected argument 'bogus' (it takes: numbers, scale); missing required argument"
            " 'numbers'",
        ),
        ({}, 400, "ValueError", "failed to call a function: missing required argument 'numbers'"),
        ({"numbers": [1], "scale": -1}, 400, "ValueError", "scale must not be negative"),
        ({"numbers": [1], "scale": 13}, 500, "RuntimeError", "unlucky"),
    ]
    for payload, status, kind, text in cases:
        answer = wrapper.request("/api/v1/perform", payload)
        body = answer.json()
        assert (answer.status, body["type"]) == (status, kind), payload
        assert text in body["error"] and set(body) == {"error", "type"}
    not_object = wrapper.request("/api/v1/perform", [1, 2])
    assert (not_object.status, not_object.json()["type"]) == (422, "RequestValidationError")
    assert not_object.json()["detail"][0]["type"] == "dict_type"  # FastAPI's words, as Racetrack
    not_json = wrapper.request("/api/v1/perform", data=b"{nope")
    assert (not_json.status, not_json.json()["type"]) == (422, "RequestValidationError")
    assert not_json.json()["detail"][0]["loc"] == ["body", 1]
    deep = wrapper.request("/api/v1/perform", data=b"[" * 100_000)
    assert (deep.status, deep.json()["type"]) == (400, "BadRequest")
    get = wrapper.request("/api/v1/perform")
    assert (get.status, get.headers["Allow"]) == (405, "POST")
    missing = wrapper.request("/api/v1/nothing", {})
    assert (missing.status, missing.json()) == (404, {
        "detail": "Not Found", "error": "no endpoint /api/v1/nothing", "type": "NotFound",
    })  # fmt: skip


def test_results_are_serialised_whatever_common_type_they_are(wrapper):
    answer = wrapper.request("/api/v1/explain", {"x": 3})
    assert answer.json() == {
        "x": 3, "when": "2026-11-24", "point": {"x": 1, "y": 2}, "colour": "red",
        "custom": {"custom": True}, "array": [[1, 2], [3, 4]],
    }  # fmt: skip
    broken = wrapper.request("/api/v1/broken", {})
    assert broken.status == 500 and "not JSON serializable" in broken.json()["error"]


def test_static_files_and_directories(wrapper):
    manifest = wrapper.request("/api/v1/manifest")
    assert (manifest.status, manifest.headers["Content-Type"], manifest.body) == (
        200, "application/x-yaml", b"name: sample\n",
    )  # fmt: skip
    readme = wrapper.request("/api/v1/readme")
    assert readme.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert readme.body == b"# Sample\n"
    deep = wrapper.request("/api/v1/assets/deep/style.css")
    assert (deep.status, deep.headers["Content-Type"], deep.body) == (
        200, "text/css; charset=utf-8", b"body {}\n",
    )  # fmt: skip
    assert wrapper.request("/api/v1/assets/missing.js").status == 404
    assert wrapper.request("/api/v1/assets/../entry.py").status == 404
    assert wrapper.request("/api/v1/assets/%2e%2e/entry.py").status == 404


def test_the_home_page_and_the_docs_work_behind_the_routers_prefix(wrapper):
    prefix = {"X-Forwarded-Prefix": "/pub/job/sample/1.2.3"}
    home = wrapper.request("/", headers=prefix)
    assert (home.status, home.headers["Location"]) == (307, "/pub/job/sample/1.2.3/api/v1/readme")
    page = wrapper.request("/docs", headers=prefix)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert "/pub/job/sample/1.2.3/openapi.json" in html
    assert "/pub/job/sample/1.2.3/docs/assets/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html, "nothing comes from the internet"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        answer = wrapper.request(f"/docs/assets/{asset}")
        bundled = Path(swagger_ui_bundle.swagger_ui_path) / asset
        assert (answer.status, answer.body) == (200, bundled.read_bytes()), asset
    assert wrapper.request("/docs/assets/../../server.py").status == 404

    document = wrapper.request("/openapi.json", headers=prefix).json()
    assert document["servers"] == [{"url": "/pub/job/sample/1.2.3"}]
    assert document["info"]["title"] == "sample" and document["info"]["version"] == "1.2.3"
    perform = document["paths"]["/api/v1/perform"]["post"]
    body = perform["requestBody"]["content"]["application/json"]
    assert body["example"] == {"numbers": [40, 2]}
    assert body["schema"]["required"] == ["numbers"]
    assert body["schema"]["properties"]["scale"]["default"] == 1.0
    explain = document["paths"]["/api/v1/explain"]["post"]["requestBody"]
    assert explain["content"]["application/json"]["example"] == {"x": 7}
    direct = wrapper.request("/openapi.json").json()
    assert direct["servers"] == [{"url": "/"}]
    hostile = wrapper.request("/openapi.json", headers={"X-Forwarded-Prefix": '/x"><script>'})
    assert hostile.json()["servers"] == [{"url": "/"}], "a prefix that is not a path is ignored"


def test_health_names_the_job(wrapper):
    health = wrapper.request("/health").json()
    assert health == {
        "service": "job", "job_name": "sample", "live": True, "ready": True, "status": "pass",
        "error": None, "job_version": "1.2.3", "git_version": None,
        "deployed_by_racetrack_version": None, "deployment_timestamp": None,
        "job_type_version": None,
    }  # fmt: skip


def test_concurrency_beyond_the_limit_and_its_queue_is_refused_with_429(wrapper):
    gate = wrapper.workdir / "gate"
    answers: list[int] = []
    first = threading.Thread(
        target=lambda: answers.append(wrapper.request("/api/v1/slow", {"gate": str(gate)}).status)
    )
    first.start()
    wait_for(lambda: Path(str(gate) + ".started").exists(), "the first call to run")
    queued = threading.Thread(
        target=lambda: answers.append(wrapper.request("/api/v1/perform", {"numbers": [1]}).status)
    )
    queued.start()
    wait_for(lambda: _metric(wrapper, "job_requests_in_flight") == 2.0, "the second call to queue")

    refused = wrapper.request("/api/v1/perform", {"numbers": [1]})
    assert (refused.status, refused.json()["type"]) == (429, "TooManyRequests")
    assert "max_concurrency 1 with a queue of 1" in refused.json()["error"]
    gate.touch()
    first.join(DEADLINE)
    queued.join(DEADLINE)
    assert sorted(answers) == [200, 200], "the queued call ran once the first was done"


def test_metrics_count_calls_per_endpoint_and_export_the_jobs_own(wrapper):
    wrapper.request("/api/v1/perform", {"numbers": [1]})
    wrapper.request("/api/v1/perform", {"numbers": [1], "scale": 13})
    text = wrapper.request("/metrics").body.decode()
    assert 'job_requests_total{endpoint="/api/v1/perform",status="200"}' in text
    assert _metric(wrapper, 'job_request_errors_total{endpoint="/api/v1/perform",kind="server"}')
    assert 'job_request_duration_seconds_bucket{endpoint="/api/v1/perform",le="+Inf"}' in text
    assert "# TYPE job_request_duration_seconds histogram" in text
    assert _metric(wrapper, "job_last_call_timestamp_seconds") > 1.7e9
    assert "# HELP job_is_crazy How crazy" in text and "# TYPE job_is_crazy gauge" in text
    assert 'job_is_crazy{colour="blue"} 0.5' in text
    assert "bad name" not in text and "no_value_yet" not in text
    assert 'endpoint="/live"' not in text, "probes are not the job's calls"


def test_every_call_is_logged_once_with_status_duration_and_tracing_id(wrapper):
    answer = wrapper.request(
        "/api/v1/perform", {"numbers": [5]}, headers={"X-Request-Tracing-Id": "trace-abc"}
    )
    assert answer.headers["X-Request-Tracing-Id"] == "trace-abc"
    wait_for(lambda: "POST /api/v1/perform 200" in _lines_with(wrapper, "trace-abc"), "the log")
    lines = _lines_with(wrapper, "trace-abc")
    assert "INFO sample: adding 1 numbers [tracing_id=trace-abc]" in lines, "the job's log too"
    generated = wrapper.request("/api/v1/perform", {"numbers": [5]})
    assert len(generated.headers["X-Request-Tracing-Id"]) == 32


def _lines_with(wrapper: Wrapper, needle: str) -> str:
    return "\n".join(line for line in wrapper.log().splitlines() if needle in line)


def _metric(wrapper: Wrapper, sample: str) -> float:
    for line in wrapper.request("/metrics").body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_structured_logs_are_json_lines_with_the_tracing_id(tmp_path):
    wrapper = start_wrapper(
        tmp_path,
        FILES,
        {"LOG_STRUCTURED": "true", "LOG_LEVEL": "debug", "ENTRYPOINT_CLASS": "JobEntrypoint"},
    )
    try:
        wrapper.request("/api/v1/perform", {"numbers": [1]}, headers={"X-Request-Tracing-Id": "t1"})
        wait_for(lambda: '"path": "/api/v1/perform"' in wrapper.log(), "the request's log line")
        entries = [json.loads(line) for line in wrapper.log().splitlines() if '"t1"' in line]
        request_line = next(e for e in entries if e.get("path") == "/api/v1/perform")
        assert request_line["status"] == 200 and request_line["job_name"] == "sample"
        assert isinstance(request_line["duration_ms"], float)
        assert any(e["message"] == "adding 1 numbers" for e in entries)
        assert '"path": "/ready"' in wrapper.log(), "probes are logged at DEBUG"
    finally:
        wrapper.stop()


INIT_ERRORS = {
    "an example that is not an object": (
        "class JobEntrypoint:\n    def perform(self): pass\n"
        "    def docs_input_example(self): return [1, 2]\n",
        "docs_input_example must be a JSON object (a dict), not list",
    ),
    "an example over 1 MB": (
        "class JobEntrypoint:\n    def perform(self, x): pass\n"
        "    def docs_input_example(self): return {'x': 'a' * 1100000}\n",
        "docs_input_example is 1100008 bytes as JSON; the limit is 1048576",
    ),
    "a missing static file": (
        "class JobEntrypoint:\n    def perform(self): pass\n"
        "    def static_endpoints(self): return {'/gone': 'gone.txt'}\n",
        "static_endpoints: 'gone.txt' does not exist in the job's directory",
    ),
    "several classes": (
        "class A:\n    pass\n\nclass B:\n    def perform(self): pass\n",
        "entry.py must define exactly one class, or name it in jobtype_extra.entrypoint_class"
        " (classes found: A, B)",
    ),
    "a failing constructor": (
        "class JobEntrypoint:\n    def __init__(self):\n        raise OSError('no model file')\n"
        "    def perform(self): pass\n",
        "OSError: no model file (entry.py, line 3)",
    ),
}


@pytest.mark.parametrize("case", INIT_ERRORS)
def test_a_broken_entrypoint_is_reported_by_live(tmp_path, case):
    source, reason = INIT_ERRORS[case]
    wrapper = start_wrapper(tmp_path, {"entry.py": source}, ready=False)
    try:
        live = wrapper.request("/live")
        assert (live.status, live.json()["error"]) == (500, reason)
        assert live.json()["live"] is False
        assert (wrapper.request("/ready").status, wrapper.request("/ready").json()) == (
            500, {"ready": False},
        )  # fmt: skip
        health = wrapper.request("/health")
        assert (health.status, health.json()["status"], health.json()["error"]) == (
            500, "fail", reason,
        )  # fmt: skip
    finally:
        wrapper.stop()


def test_live_answers_while_a_slow_entrypoint_loads(tmp_path):
    source = (
        "import pathlib, time\n\nclass JobEntrypoint:\n    def __init__(self):\n"
        "        while not pathlib.Path('loaded').exists():\n            time.sleep(0.01)\n"
        "    def perform(self): return 'ok'\n"
    )
    wrapper = start_wrapper(tmp_path, {"entry.py": source}, ready=False)
    try:
        live = wrapper.request("/live")
        assert (live.status, live.json()) == (200, {"live": True, "deployment_timestamp": None})
        assert wrapper.request("/ready").status == 500
        assert wrapper.request("/api/v1/perform", {}).status == 503
        (tmp_path / "loaded").touch()
        wait_for(lambda: wrapper.request("/ready").status == 200, "loading to finish")
        assert wrapper.request("/api/v1/perform", {}).json() == "ok"
    finally:
        wrapper.stop()


def test_async_perform_runs_on_the_event_loop_and_sees_the_request(tmp_path):
    source = (
        "import asyncio\n\nclass JobEntrypoint:\n"
        "    async def perform(self, n: int):\n        await asyncio.sleep(0)\n"
        "        request = self.request_context.get()\n"
        "        return {'n': n, 'trace': request.headers.get('x-request-tracing-id')}\n"
    )
    wrapper = start_wrapper(tmp_path, {"entry.py": source})
    try:
        answer = wrapper.request(
            "/api/v1/perform", {"n": 4}, headers={"X-Request-Tracing-Id": "abc"}
        )
        assert answer.json() == {"n": 4, "trace": "abc"}
    finally:
        wrapper.stop()


def test_hostile_requests_get_an_answer_and_the_job_keeps_serving(wrapper):
    deep = wrapper.request("/api/v1/perform", data=b"[" * 200_000)
    assert (deep.status, deep.json()["type"]) == (400, "BadRequest")
    assert wrapper.request("/api/v1/assets/a%00b").status == 404
    assert wrapper.request("/api/v1/perform", {"numbers": [1]}).status == 200
    # a call is counted out once its last byte is written, which may be a moment after the
    # client has read it
    wait_for(lambda: _metric(wrapper, "job_requests_in_flight") == 0.0, "every call counted out")


def test_metrics_that_cannot_be_exported_are_skipped_not_fatal(tmp_path):
    source = (
        "class JobEntrypoint:\n    def perform(self): pass\n"
        "    def metrics(self):\n"
        "        return [{'name': 'huge', 'value': 10**400}, {'name': 'fine', 'value': 2}]\n"
    )
    wrapper = start_wrapper(tmp_path, {"entry.py": source})
    try:
        answer = wrapper.request("/metrics")
        assert answer.status == 200 and "fine 2.0" in answer.body.decode()
        assert "huge" not in answer.body.decode().replace("'huge'", "")
    finally:
        wrapper.stop()


def test_with_an_upstream_key_only_calls_bearing_it_are_answered(tmp_path):
    """The router sends the release's key; another job calling the instance directly has it
    not, and is refused (the platform's probes need none)."""
    source = "class JobEntrypoint:\n    def perform(self):\n        return 'ok'\n"
    wrapper = start_wrapper(tmp_path, {"entry.py": source}, {"RACETRACK_UPSTREAM_KEY": "k3y"})
    try:
        around = wrapper.request("/api/v1/perform", {})
        assert (around.status, around.json()) == (
            403,
            {"error": "this job answers calls through the router only", "type": "Forbidden"},
        )
        wrong = wrapper.request("/api/v1/perform", {}, headers={"X-Racetrack-Upstream-Key": "k"})
        assert wrong.status == 403
        routed = wrapper.request("/api/v1/perform", {}, headers={"X-Racetrack-Upstream-Key": "k3y"})
        assert (routed.status, routed.json()) == (200, "ok")
        assert wrapper.request("/live").status == 200 and wrapper.request("/ready").status == 200
        assert wrapper.request("/metrics").status == 403, "metrics come through the router too"
    finally:
        wrapper.stop()


WEBVIEW_ONLY = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"formatted"]


class JobEntrypoint:
    def webview_app(self, base_url):
        return app

    def auxiliary_endpoints(self):
        return {"/format": self.format}

    def format(self, text: str) -> str:
        return text.upper()
"""


def test_a_job_without_perform_loads_and_only_perform_is_refused_as_on_racetrack(tmp_path):
    """Racetrack's docs-formatter shape: a webview and an auxiliary endpoint, no perform."""
    wrapper = start_wrapper(tmp_path, {"entry.py": WEBVIEW_ONLY})
    try:
        assert wrapper.request("/ready").status == 200
        assert wrapper.request("/api/v1/webview/").body == b"formatted"
        assert wrapper.request("/api/v1/format", {"text": "hi"}).json() == "HI"
        refused = wrapper.request("/api/v1/perform", {})
        assert refused.status == 400
        assert refused.json() == {
            "error": "entrypoint doesn't have 'perform' method implemented",
            "type": "ValueError",
        }
    finally:
        wrapper.stop()


def test_clients_that_go_away_leave_no_traceback_in_the_log(wrapper):
    """Probes that give up and callers that time out are not the job's errors."""
    import socket
    import struct

    before = len(wrapper.log())
    for request in (b"GET /ready HTTP/1.1\r\nHost: x\r\n", b"POST /api/v1/perform HTTP/1.1\r\n"):
        connection = socket.create_connection(("127.0.0.1", wrapper.port))
        connection.sendall(request)
        # close with a reset (linger 0), as a client that is killed does
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    big = socket.create_connection(("127.0.0.1", wrapper.port))
    big.sendall(b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n")
    big.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    big.close()  # before the answer is read: the server's write meets a reset
    assert wrapper.request("/ready").status == 200  # still serving
    written = wrapper.log()[before:]  # this test's part of the log
    assert "Traceback" not in written and "ConnectionResetError" not in written, written
