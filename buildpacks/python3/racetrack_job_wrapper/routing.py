"""Which answer a request gets: the wrapper's own endpoints, then the job's.

The wrapper's: `/live`, `/ready`, `/health`, `/metrics`, `/openapi.json`, `/docs` (Swagger UI),
and `/` (a redirect to the home page). The job's: `POST /api/v1/perform` and the auxiliary
endpoints, `GET` static files and directories, and the webview under `/api/v1/webview/`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import traceback
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .concurrency import TooBusy
from .docs_page import swagger_ui_page
from .job_api import (
    MISSING_PERFORM,
    PARAMETERS_PATH,
    WEBVIEW_PATH,
    WEBVIEW_STATIC_PATH,
    JobApi,
    guess_mimetype,
    static_dir_file,
)
from .openapi import openapi_document
from .parameters import perform_parameters
from .request_context import RequestContext, current_request
from .responses import (
    Response,
    error,
    invalid_body,
    json_response,
    method_not_allowed,
    not_an_object,
    not_found,
    redirect,
)
from .state import JobState
from .webview import WebRequest, WebResponse

log = logging.getLogger("racetrack.job")

SWAGGER_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~%+-]+)*$")
PLATFORM_PATHS = ("/live", "/ready", "/health", "/metrics")
CALL_FAILED = "failed to call a function: "  # Racetrack's words for a call that did not fit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Message
    body: bytes
    client: tuple[str, int] | None
    server: tuple[str, int]
    context: RequestContext

    @property
    def prefix(self) -> str:
        """The router's path prefix (`/pub/job/NAME/VERSION`), for links in pages and docs."""
        prefix = (self.headers.get("X-Forwarded-Prefix") or "").rstrip("/")
        return prefix if PREFIX_RE.fullmatch(prefix) else ""


def swagger_assets_dir() -> Path:
    configured = os.environ.get("RACETRACK_SWAGGER_UI_DIR")
    return Path(configured) if configured else Path(__file__).parent / "swagger_ui"


class Router:
    def __init__(self, state: JobState) -> None:
        self.state = state
        self._openapi: dict[str, Any] | None = None

    def job_endpoint(self, request: Request) -> str | None:
        """Which of the job's own endpoints `request` is for (None: the wrapper's, or none):
        a callable or static file path, a static directory's prefix, or the webview. It names
        the endpoint in metrics too, so that counts never use raw paths."""
        api = self.state.api
        if api is None:
            return None
        path = request.path
        if path in api.endpoints or path in api.static_files or path == PARAMETERS_PATH:
            return path
        if api.webview_static is not None and path.startswith(WEBVIEW_STATIC_PATH + "/"):
            return WEBVIEW_STATIC_PATH
        if path == WEBVIEW_PATH or path.startswith(WEBVIEW_PATH + "/"):
            return WEBVIEW_PATH
        for prefix in api.static_dirs:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    def route(self, request: Request, endpoint: str | None) -> Response:
        """The answer to `request`, whose job endpoint (`job_endpoint`) the caller found."""
        method = "GET" if request.method == "HEAD" else request.method
        path = request.path
        if method == "GET" and path in PLATFORM_PATHS:
            return self._platform(path)
        if method == "GET" and path == "/metrics/":  # where Racetrack's runner serves them
            return self._platform("/metrics")
        if method == "GET" and path in ("/", "/docs", "/openapi.json"):
            return self._docs(path, request)
        if method == "GET" and path.startswith("/docs/assets/"):
            return self._asset(path.removeprefix("/docs/assets/"))
        api = self.state.api
        if api is None:
            return error(503, f"the job is not ready ({self.state.status})", "NotReady")
        if endpoint is None:
            return not_found(f"no endpoint {path}")
        return self._job(api, method, request, endpoint)

    # the wrapper's endpoints

    def _platform(self, path: str) -> Response:
        """The probes with Racetrack's fields and statuses (500 while not live or not ready)."""
        state = self.state
        live, ready = state.error is None, state.ready.is_set()
        if path == "/live":
            stamp = state.deployment_timestamp
            body: dict[str, Any] = {"live": live, "deployment_timestamp": stamp}
            if not live:
                body["error"] = state.error
            return json_response(200 if live else 500, body)
        if path == "/ready":
            return json_response(200 if ready else 500, {"ready": ready})
        if path == "/health":
            body = {
                "service": "job",
                "job_name": state.job_name,
                "live": live,
                "ready": ready,
                "status": "pass" if ready else "fail",
                "error": state.error,
                "job_version": state.job_version or None,
                "git_version": state.git_version or None,
                "deployed_by_racetrack_version": state.platform_version,
                "deployment_timestamp": state.deployment_timestamp,
                "job_type_version": state.job_type_version,
            }
            return json_response(200 if live and ready else 500, body)
        api = state.api
        text = state.metrics.render(api.metrics if api else None)
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _docs(self, path: str, request: Request) -> Response:
        prefix = request.prefix
        if path == "/":
            return redirect(prefix + self.state.home_page)
        if path == "/docs":
            page = swagger_ui_page(
                title=f"{self.state.job_name} {self.state.job_version}".strip() or "job",
                openapi_url=f"{prefix}/openapi.json",
                assets_url=f"{prefix}/docs/assets",
            )
            return Response(200, page.encode(), "text/html; charset=utf-8")
        if self.state.api is None:
            return error(503, f"the job is not ready ({self.state.status})", "NotReady")
        document = {**self._document(self.state.api), "servers": [{"url": prefix or "/"}]}
        return json_response(200, document)

    def _document(self, api: JobApi) -> dict[str, Any]:
        if self._openapi is None:
            self._openapi = openapi_document(
                title=self.state.job_name or type(api.entrypoint).__name__,
                version=self.state.job_version or "0.0.0",
                description=inspect.getdoc(type(api.entrypoint)) or "",
                endpoints=api.endpoints,
                examples=api.examples,
                static_files=list(api.static_files),
                static_dirs=list(api.static_dirs),
                webview=api.webview is not None,
            )
        return self._openapi

    def _asset(self, name: str) -> Response:
        path = swagger_assets_dir() / name
        if name not in SWAGGER_ASSETS or not path.is_file():
            return not_found(f"no asset {name}")
        content_type = ASSET_TYPES.get(path.suffix, "application/octet-stream")
        return Response(200, content_type=content_type, file=path,
                        headers=[("Cache-Control", "public, max-age=86400")])  # fmt: skip

    # the job's endpoints

    def _job(self, api: JobApi, method: str, request: Request, endpoint: str) -> Response:
        path = request.path
        if endpoint in api.endpoints:
            if method != "POST":
                return method_not_allowed(f"use POST for {path}", "POST")
            return self._call(api, path, request.body)
        if endpoint == WEBVIEW_PATH:
            if api.webview is None:
                return not_found("this job has no webview_app")
            answer = api.webview(_web_request(request, path.removeprefix(WEBVIEW_PATH) or "/"))
            return _from_web_response(answer)
        if method != "GET":
            return method_not_allowed(f"use GET for {path}", "GET")
        if endpoint == PARAMETERS_PATH:
            return self._parameters(api)
        if endpoint in api.static_files:
            static = api.static_files[endpoint]
            return Response(200, content_type=static.mimetype, file=static.path)
        if endpoint == WEBVIEW_STATIC_PATH and api.webview_static is not None:
            root, fallback = api.webview_static, "application/octet-stream"  # as Starlette's
        else:
            root, fallback = api.static_dirs[endpoint], "text/plain"
        found = static_dir_file(root, unquote(path.removeprefix(endpoint)))
        if found is None:
            return not_found(f"no file {path}")
        return Response(200, content_type=guess_mimetype(found, fallback), file=found)

    def _call(self, api: JobApi, path: str, body: bytes) -> Response:
        """Call an endpoint as Racetrack's runner does: an empty body is the endpoint's docs
        example (or no arguments), a body that is not a JSON object is a 422 in FastAPI's
        words, and a call that does not fit the signature is a 400 ValueError."""
        if not body.strip():
            kwargs: Any = dict(api.examples.get(path, {}))
        else:
            try:
                kwargs = json.loads(body)
            except ValueError as exc:
                return invalid_body(exc)
            except RecursionError:
                return error(400, "request body nests too deep to decode", "BadRequest",
                             detail="There was an error parsing the body")  # fmt: skip
            if not isinstance(kwargs, dict):
                return not_an_object(kwargs)
        function = api.endpoints[path]
        problem = argument_problem(function, kwargs)
        if problem is not None:
            return error(400, f"{CALL_FAILED}{problem}", "ValueError")
        try:
            with self.state.limit.slot():
                return json_response(200, self._run(function, kwargs))
        except TooBusy as exc:
            return error(429, f"too many concurrent calls ({exc})", "TooManyRequests",
                         [("Retry-After", "1")])  # fmt: skip
        except TypeError as exc:  # Racetrack reads any TypeError as a call that did not fit
            log.error("%s failed:\n%s", path, traceback.format_exc())
            return error(400, f"{CALL_FAILED}{exc}", "ValueError")
        except ValueError as exc:
            return error(400, str(exc), type(exc).__name__)
        except Exception as exc:
            log.error("%s failed:\n%s", path, traceback.format_exc())
            return error(500, str(exc), type(exc).__name__)

    def _parameters(self, api: JobApi) -> Response:
        perform = getattr(api.entrypoint, "perform", None)
        if perform is None:
            return error(400, MISSING_PERFORM, "ValueError")
        return json_response(200, perform_parameters(perform))

    def _run(self, function: Any, kwargs: dict[str, Any]) -> Any:
        result = function(**kwargs)
        if inspect.isawaitable(result):  # `async def perform`: run on the wrapper's event loop
            result = self.state.runner.run(_in_request_context(result, current_request.get()))
        return result


def argument_problem(function: Any, kwargs: dict[str, Any]) -> str | None:
    """What is wrong with calling `function(**kwargs)`: every unexpected and missing argument
    at once, with the names it takes; None when the call fits (or cannot be checked)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None  # no signature to check (a builtin): the call itself will tell
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = [p for p in parameters if p.kind in keyword_kinds]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    known = {p.name for p in named}
    unexpected = [] if takes_any else [key for key in kwargs if key not in known]
    missing = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and (p.name not in kwargs or p.kind is inspect.Parameter.POSITIONAL_ONLY)
    ]
    problems = []
    if unexpected:
        takes = ", ".join(p.name for p in named) or "no arguments"
        problems.append(f"unexpected {_names(unexpected)} (it takes: {takes})")
    if missing:
        problems.append(f"missing required {_names(missing)}")
    return "; ".join(problems) or None


def _names(names: list[str]) -> str:
    quoted = ", ".join(repr(n) for n in names)
    return f"argument {quoted}" if len(names) == 1 else f"arguments {quoted}"


async def _in_request_context(awaitable: Any, context: RequestContext | None) -> Any:
    token = current_request.set(context)
    try:
        return await awaitable
    finally:
        current_request.reset(token)


def _web_request(request: Request, rest: str) -> WebRequest:
    return WebRequest(
        method=request.method,
        path=rest,
        query=request.query,
        headers=list(request.headers.items()),
        body=request.body,
        client=request.client,
        server=request.server,
        scheme=request.headers.get("X-Forwarded-Proto") or "http",
    )


def _from_web_response(answer: WebResponse) -> Response:
    """The webview app's answer; the server writes Content-Type and Content-Length itself."""
    content_type = "application/octet-stream"
    headers = []
    for name, value in answer.headers:
        lowered = name.lower()
        if lowered == "content-type":
            content_type = value
        else:
            headers.append((name, value))  # the server keeps Content-Length for HEAD only
    return Response(answer.status, answer.body, content_type, headers)
