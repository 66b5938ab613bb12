"""Our python3 wrapper against Racetrack's runner (racetrack-job-runner==1.18.0): the same
fixture jobs, the same requests, the same answers.

Each runner gets requests the way its platform's gateway delivers them: Racetrack's PUB passes
the whole path (`/pub/job/<name>/<version>/...`); our router passes the path below that prefix
and names the prefix in `X-Forwarded-Prefix`.

What must match: the status, the Content-Type, the Location (without scheme and host) and the
body. A JSON object of ours may carry keys theirs lacks only where `DELIBERATE` says why; every
key theirs has, ours has with the same value. Other deliberate differences are listed below,
each with what is compared instead. Not compared: `GET /metrics`, which Racetrack's runner
redirects to `/metrics/` and ours answers at both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.job_runners import (
    DEPLOYMENT_TIMESTAMP,
    Reply,
    RunningJob,
    copy_fixture,
    our_wrapper,
    reference_problem,
    reference_runner,
)

JSON = {"Content-Type": "application/json"}
# Our errors always say what was wrong in `error` and `type`; where Racetrack's runner answers
# FastAPI's bare `{"detail": ...}` (404, 405, 422), ours has those two keys besides `detail`.
ERROR_KEYS = {"error", "type"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] | None = None
    # None: everything must match; otherwise why not, and only the status (and for errors the
    # error type) is compared
    deliberate: str | None = None


def post(path: str, body: bytes, deliberate: str | None = None, **headers: str) -> Call:
    return Call("POST", path, body, headers or JSON, deliberate)


def get(path: str, deliberate: str | None = None) -> Call:
    return Call("GET", path, deliberate=deliberate)


ARGUMENTS = (
    "a call that does not fit the signature: ours names every unexpected and missing argument"
    " and the arguments perform takes, where Python's TypeError names the first"
)
PROBES_AND_ROOT = [
    get("/live"),
    get("/ready"),
    get("/health"),
    get("/"),
    get("/docs", "the API page: ours is the bundled Swagger UI, served offline"),
    get("/metrics/", "the metrics: ours count calls by endpoint under job_* names"),
    get("/nope"),
]
CALLS: dict[str, list[Call]] = {
    "aux-static": [
        *PROBES_AND_ROOT,
        post("/api/v1/perform", b'{"x": 40, "y": 2}'),
        post("/api/v1/perform", b'{"x": 40}'),
        post("/api/v1/perform", b'{"x": 40, "label": "total"}'),
        post("/api/v1/perform", b'{"x": 1, "y": 0.5}'),
        post("/api/v1/perform", b'{"x": 1e999}'),  # infinity: null, as FastAPI writes it
        post("/api/v1/perform", '{"x": 1, "y": "é"}'.encode()),
        post("/api/v1/perform", b'{"x": 13}'),  # a ValueError of the job's: 400
        post("/api/v1/perform", b'{"x": 666}'),  # any other exception: 500
        post("/api/v1/perform", b'{"x": 7}'),  # a TypeError inside perform: 400 ValueError
        post("/api/v1/perform", b'{"x": 99}'),  # a set: a list
        post("/api/v1/perform", b'{"x": 40, "y": 2, "z": 1}', ARGUMENTS),
        post("/api/v1/perform", b'{"y": 2}', ARGUMENTS),
        post("/api/v1/perform", b"{}", ARGUMENTS),
        post("/api/v1/perform", b""),  # no body: the docs example
        post("/api/v1/perform", b'{"x":'),
        post("/api/v1/perform", b"\xff\xfe"),
        post("/api/v1/perform", b"[1, 2]"),
        post("/api/v1/perform", b"42"),
        post("/api/v1/perform", b'"text"'),
        post("/api/v1/perform", b"null"),
        post("/api/v1/perform", b"[" * 5000),
        get("/api/v1/perform"),
        post("/api/v1/explain", b'{"x": 1, "y": 3}'),
        post("/api/v1/explain", b""),  # its own docs example
        post("/api/v1/midpoint", b'{"start": 1, "end": 3}'),
        post("/api/v1/midpoint", b"", ARGUMENTS),  # no example: no arguments
        get("/api/v1/parameters"),
        get("/api/v1/xrai"),  # a type no one knows: text/plain
        get("/api/v1/manifest"),  # the type the job gave
        get("/api/v1/docs/readme"),
        get("/api/v1/assets/site.css"),
        get("/api/v1/assets/notes.unknownext"),
        get("/api/v1/assets/missing.css"),
        get("/api/v1/nope"),
        post("/api/v1/nope", b"{}"),
        get("/api/v1/webview"),
        get("/api/v1/webview/static/x.css"),
    ],
    "webview-wsgi": [
        *PROBES_AND_ROOT,
        post("/api/v1/perform", b"{}"),  # no perform: Racetrack's 400
        get("/api/v1/parameters"),
        get("/api/v1/webview"),
        get("/api/v1/webview/"),
        post("/api/v1/webview/postme", b'{"a": 1}'),
        get("/api/v1/webview/other?x=1"),
        get("/api/v1/webview/static/style.css"),
        get("/api/v1/webview/static/notes.unknownext"),  # here: application/octet-stream
        get("/api/v1/webview/static/missing.css"),
        get("/api/v1/webview/static/../entrypoint.py"),
    ],
    "webview-asgi": [
        *PROBES_AND_ROOT,
        get("/api/v1/webview"),
        get("/api/v1/webview/"),
        get("/api/v1/webview/view"),
        Call("POST", "/api/v1/webview/preview", b"abc", {"Content-Type": "text/plain"}),
        get("/api/v1/webview/static/page.css"),
        get("/api/v1/webview/zzz"),
    ],
    "racetrack-layout/python-class": [
        *PROBES_AND_ROOT,
        post("/api/v1/perform", b'{"numbers": [40, 2]}'),
        post("/api/v1/perform", b""),
        post("/api/v1/perform", b'{"numbers": "ab"}'),  # sum() of a string: TypeError → 400
        get("/api/v1/parameters"),
    ],
    "user-guide": [
        *PROBES_AND_ROOT,
        post("/api/v1/perform", b'{"x": 40, "y": 2}'),
        post("/api/v1/perform", b'{"x": "4", "y": "2"}'),
        get("/api/v1/parameters"),
    ],
    "chain": [
        *PROBES_AND_ROOT,
        get("/api/v1/parameters"),
    ],
    "overlay": [
        *PROBES_AND_ROOT,
        post("/api/v1/perform", b""),
    ],
}
# heavy-requirements is left out: numpy, its requirement, is installed by a job's build, not
# in either runner's test environment (tests/e2e/test_racetrack_shapes.py deploys it).


def manifest_of(job_dir: Path) -> dict[str, Any]:
    """The job's manifest, its `extends` base under it (as both platforms merge it)."""
    manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
    if "extends" in manifest:
        base = yaml.safe_load((job_dir / manifest.pop("extends")).read_text())
        manifest = {**base, **manifest}
    return manifest


@pytest.fixture(scope="module")
def reference_available() -> None:
    problem = reference_problem()
    if problem:
        pytest.fail(problem)


@dataclass
class Runners:
    fixture: str
    name: str
    theirs: RunningJob
    ours: RunningJob


@pytest.fixture(params=sorted(CALLS), ids=lambda name: name.replace("/", "-"))
def runners(
    request: pytest.FixtureRequest, tmp_path: Path, reference_available: None
) -> Iterator[Runners]:
    fixture: str = request.param
    job_dir = copy_fixture(fixture, tmp_path)
    manifest = manifest_of(job_dir)
    extra = manifest.get("jobtype_extra") or {}
    entrypoint, class_name = extra["entrypoint_path"], extra.get("entrypoint_class", "")
    (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest))  # theirs reads ./job.yaml
    name = manifest["name"]
    ours_env = {"HOME_PAGE": extra["home_page"]} if extra.get("home_page") else {}
    with (
        reference_runner(job_dir, name, entrypoint, class_name) as theirs,
        our_wrapper(job_dir, name, entrypoint, class_name, ours_env) as ours,
    ):
        yield Runners(fixture, name, theirs, ours)


def test_both_runners_answer_every_request_alike(runners: Runners) -> None:
    prefix = f"/pub/job/{runners.name}/0.0.1"
    problems = []
    for call in CALLS[runners.fixture]:
        headers = call.headers or {}
        reference = runners.theirs.send(call.method, prefix + call.path, call.body, headers)
        answer = runners.ours.send(
            call.method, call.path, call.body, {**headers, "X-Forwarded-Prefix": prefix}
        )
        problem = difference(call, reference, answer)
        if problem:
            problems.append(f"{call.method} {call.path} {call.body!r:.60}: {problem}")
    assert not problems, "\n".join(problems)


def difference(call: Call, theirs: Reply, ours: Reply) -> str | None:
    if theirs.status != ours.status:
        return f"status {ours.status}, Racetrack's {theirs.status}: {ours.body[:300]!r}"
    if call.deliberate is not None:
        return _error_type_difference(theirs, ours)
    if theirs.content_type != ours.content_type:
        return f"Content-Type {ours.content_type!r}, Racetrack's {theirs.content_type!r}"
    location = re.sub(r"^https?://[^/]+", "", theirs.location)
    if location != ours.location:
        return f"Location {ours.location!r}, Racetrack's {location!r}"
    return _body_difference(theirs.body, ours.body)


def _error_type_difference(theirs: Reply, ours: Reply) -> str | None:
    mine, reference = _json(ours.body), _json(theirs.body)
    if isinstance(reference, dict) and "type" in reference:
        if not isinstance(mine, dict) or mine.get("type") != reference["type"]:
            return f"error type of {ours.body[:300]!r}, Racetrack's {theirs.body[:300]!r}"
        if not str(mine.get("error", "")).startswith(_words_before_colon(reference["error"])):
            theirs_error = reference["error"]
            return f"error {mine.get('error')!r} does not start as Racetrack's {theirs_error!r}"
    return None


def _words_before_colon(message: str) -> str:
    return message.split(": ", 1)[0] if ": " in message else ""


def _body_difference(theirs: bytes, ours: bytes) -> str | None:
    reference, mine = _json(theirs), _json(ours)
    if isinstance(reference, dict) and isinstance(mine, dict):
        missing = {k: v for k, v in reference.items() if mine.get(k, object()) != v}
        extra = set(mine) - set(reference)
        if missing:
            return f"body {ours[:300]!r} differs from Racetrack's {theirs[:300]!r} in {missing}"
        if extra and not ("detail" in reference and extra <= ERROR_KEYS):
            return f"body {ours[:300]!r} has keys Racetrack's {theirs[:300]!r} lacks: {extra}"
        return None
    if theirs != ours:
        return f"body {ours[:300]!r}, Racetrack's {theirs[:300]!r}"
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def test_the_deployment_timestamp_is_echoed_by_both(
    tmp_path: Path, reference_available: None
) -> None:
    job_dir = copy_fixture("user-guide", tmp_path)
    name = "my_fantabulous_skynet_AI"
    with (
        reference_runner(job_dir, name, "job_entrypoint.py", "") as theirs,
        our_wrapper(job_dir, name, "job_entrypoint.py", "") as ours,
    ):
        for runner, prefix in ((theirs, f"/pub/job/{name}/0.0.1"), (ours, "")):
            live = json.loads(runner.send("GET", prefix + "/live").body)
            assert live == {"live": True, "deployment_timestamp": DEPLOYMENT_TIMESTAMP}
            health = json.loads(runner.send("GET", prefix + "/health").body)
            assert health["deployment_timestamp"] == DEPLOYMENT_TIMESTAMP
