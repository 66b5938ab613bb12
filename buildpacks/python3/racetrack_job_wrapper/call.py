"""Job chaining: call another job through the router with this job's family token.

`call_job(self, 'adder', '/api/v1/perform', {'numbers': [1, 2]})` inside a `perform` keeps
Racetrack's signature. The call carries `AUTH_TOKEN` (the family's token, which needs a
`call_job` grant on the target) and the incoming call's tracing id and caller name.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .request_context import CALLER_HEADER, TRACING_HEADER, current_request

MAX_ERROR_TEXT = 2000


def call_job(
    entrypoint: Any,
    job_name: str,
    path: str = "/api/v1/perform",
    payload: dict[str, Any] | None = None,
    version: str = "latest",
    method: str = "POST",
    timeout: float | None = 10,
) -> Any:
    """Call `path` of job `job_name` (`version`: exact, `latest` or a wildcard like `1.x`) and
    return its decoded JSON answer; any failure raises RuntimeError saying which call failed."""
    source = os.environ.get("JOB_NAME", "")
    what = f'failed to call job "{job_name} {version}" by {source}'
    try:
        request = _build_request(entrypoint, job_name, path, payload, version, method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read(MAX_ERROR_TEXT).decode("utf-8", "replace")
        raise RuntimeError(f"{what}: HTTP {exc.code} {exc.reason}: {text}") from exc
    except Exception as exc:
        raise RuntimeError(f"{what}: {exc}") from exc
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise RuntimeError(f"{what}: the answer is not JSON: {exc}") from exc


async def call_job_coroutine(
    entrypoint: Any,
    job_name: str,
    path: str = "/api/v1/perform",
    payload: dict[str, Any] | None = None,
    version: str = "latest",
    method: str = "POST",
    timeout: float | None = 10,
) -> Any:
    """`call_job` for `async def` code: the call runs in a thread, the event loop stays free."""
    return await asyncio.to_thread(
        call_job, entrypoint, job_name, path, payload, version, method, timeout
    )


def _build_request(
    entrypoint: Any,
    job_name: str,
    path: str,
    payload: dict[str, Any] | None,
    version: str,
    method: str,
) -> urllib.request.Request:
    pub_url = os.environ.get("PUB_URL")
    if not pub_url:
        raise RuntimeError("PUB_URL is not set: this code does not run as a Racetrack job")
    token = os.environ.get("AUTH_TOKEN")
    if not token:
        raise RuntimeError("AUTH_TOKEN is not set: this job has no family token")
    quoted = "/".join(urllib.parse.quote(part, safe="") for part in (job_name, version))
    url = f"{pub_url.rstrip('/')}/job/{quoted}/{path.lstrip('/')}"
    headers = {"X-Racetrack-Auth": token, **_propagated_headers(entrypoint)}
    data = None
    if payload is not None or method.upper() not in ("GET", "HEAD", "DELETE"):
        data = json.dumps(payload if payload is not None else {}).encode("utf-8")
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=data, headers=headers, method=method.upper())


def _propagated_headers(entrypoint: Any) -> dict[str, str]:
    """The incoming call's tracing id and caller name, so logs of both jobs line up."""
    headers: dict[str, str] = {}
    context = current_request.get()
    if context is not None:
        headers[TRACING_HEADER] = context.tracing_id
        caller = context.headers.get(CALLER_HEADER)
        if caller:
            headers[CALLER_HEADER] = caller
        return headers
    request_context = getattr(entrypoint, "request_context", None)
    getter = getattr(request_context, "get", None)
    request = getter() if callable(getter) else None
    request_headers = getattr(request, "headers", None)
    if request_headers is not None:
        for name in (TRACING_HEADER, CALLER_HEADER):
            value = request_headers.get(name)
            if value:
                headers[name] = value
    return headers
