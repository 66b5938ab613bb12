"""What a loaded entrypoint offers over HTTP, checked once at start-up.

Anything wrong here (an example that is not a JSON object, a static file that is missing, an
auxiliary endpoint that is not callable) is an initialization error: `/live` reports it and the
push that deployed the job shows it, instead of a job that half works.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .async_runner import AsyncRunner
from .loader import InitError
from .serialization import to_json
from .webview import WebRequest, WebResponse, mount_webview

API_PREFIX = "/api/v1"
PERFORM_PATH = f"{API_PREFIX}/perform"
PARAMETERS_PATH = f"{API_PREFIX}/parameters"
WEBVIEW_PATH = f"{API_PREFIX}/webview"
WEBVIEW_STATIC_PATH = f"{WEBVIEW_PATH}/static"  # the job's ./static, beside a webview
MAX_EXAMPLE_BYTES = 1024 * 1024
ENDPOINT_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%/-]+$")


@dataclass(frozen=True)
class StaticFile:
    path: Path
    mimetype: str


@dataclass
class JobApi:
    """The job's endpoints by full path, as the server and the API docs need them."""

    entrypoint: Any
    endpoints: dict[str, Callable[..., Any]]
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    static_files: dict[str, StaticFile] = field(default_factory=dict)
    static_dirs: dict[str, Path] = field(default_factory=dict)
    webview: Callable[[WebRequest], WebResponse] | None = None
    webview_static: Path | None = None  # ./static of a job with a webview, served beside it
    metrics: Callable[[], Any] | None = None


MISSING_PERFORM = "entrypoint doesn't have 'perform' method implemented"


def missing_perform(**_kwargs: Any) -> Any:
    """What /api/v1/perform runs for a job without `perform`: a 400, worded as Racetrack's."""
    raise ValueError(MISSING_PERFORM)


def describe_api(
    entrypoint: Any, job_dir: Path, webview_base_url: str, runner: AsyncRunner
) -> JobApi:
    perform = getattr(entrypoint, "perform", None)
    api = JobApi(
        entrypoint=entrypoint,
        endpoints={PERFORM_PATH: perform if callable(perform) else missing_perform},
    )
    api.endpoints.update(_auxiliary_endpoints(entrypoint))
    api.examples = _examples(entrypoint, set(api.endpoints))
    api.static_files, api.static_dirs = _static_endpoints(entrypoint, job_dir, set(api.endpoints))
    webview_app = _optional_call(entrypoint, "webview_app", webview_base_url)
    if webview_app is not None:
        try:
            api.webview = mount_webview(webview_app, webview_base_url, runner)
        except Exception as exc:
            raise InitError(f"webview_app: {exc}") from exc
        static = (job_dir / "static").resolve()
        if static.is_dir() and static.is_relative_to(job_dir.resolve()):
            api.webview_static = static
    metrics = getattr(entrypoint, "metrics", None)
    api.metrics = metrics if callable(metrics) else None
    return api


def _optional_call(entrypoint: Any, method: str, *args: Any) -> Any:
    function = getattr(entrypoint, method, None)
    if function is None:
        return None
    if not callable(function):
        raise InitError(f"{method} is not a method")
    return function(*args)


def endpoint_path(name: str, method: str) -> str:
    """`/explain` (Racetrack's form), `explain` or `/api/v1/explain` → `/api/v1/explain`."""
    if not isinstance(name, str) or not name.strip("/"):
        raise InitError(f"{method}: {name!r} is not an endpoint path like '/explain'")
    path = "/" + name.strip("/")
    if not path.startswith(API_PREFIX + "/"):
        path = API_PREFIX + path
    if not ENDPOINT_RE.fullmatch(path) or ".." in path.split("/") or "//" in path:
        raise InitError(f"{method}: {name!r} is not an endpoint path like '/explain'")
    if path == WEBVIEW_PATH or path.startswith(WEBVIEW_PATH + "/"):
        raise InitError(f"{method}: {name!r} is taken by the webview")
    return path


def _auxiliary_endpoints(entrypoint: Any) -> dict[str, Callable[..., Any]]:
    declared = _optional_call(entrypoint, "auxiliary_endpoints")
    if declared is None:
        return {}
    if not isinstance(declared, dict):
        raise InitError("auxiliary_endpoints must return a dict of paths to methods")
    endpoints: dict[str, Callable[..., Any]] = {}
    for name, function in declared.items():
        path = endpoint_path(name, "auxiliary_endpoints")
        if path == PERFORM_PATH or path in endpoints:
            raise InitError(f"auxiliary_endpoints: {name!r} is declared twice")
        if not callable(function):
            raise InitError(f"auxiliary_endpoints: {name!r} is not callable")
        endpoints[path] = function
    return endpoints


def _examples(entrypoint: Any, endpoints: set[str]) -> dict[str, dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = {}
    single = _optional_call(entrypoint, "docs_input_example")
    if single is not None:
        examples[PERFORM_PATH] = _checked_example("docs_input_example", single)
    several = _optional_call(entrypoint, "docs_input_examples")
    if several is not None:
        if not isinstance(several, dict):
            raise InitError("docs_input_examples must return a dict of endpoint paths to inputs")
        for name, example in several.items():
            path = endpoint_path(name, "docs_input_examples")
            if path not in endpoints:
                raise InitError(f"docs_input_examples: {name!r} is not an endpoint of this job")
            examples[path] = _checked_example(f"docs_input_examples[{name!r}]", example)
    return examples


def _checked_example(what: str, example: Any) -> dict[str, Any]:
    if not isinstance(example, dict):
        raise InitError(f"{what} must be a JSON object (a dict), not {type(example).__name__}")
    try:
        encoded = to_json(example)
    except (TypeError, ValueError) as exc:
        raise InitError(f"{what} is not JSON serializable: {exc}") from exc
    if len(encoded) > MAX_EXAMPLE_BYTES:
        size = len(encoded)
        raise InitError(f"{what} is {size} bytes as JSON; the limit is {MAX_EXAMPLE_BYTES}")
    return json.loads(encoded)  # as the docs will show it: dates as strings, tuples as lists


def _static_endpoints(
    entrypoint: Any, job_dir: Path, endpoints: set[str]
) -> tuple[dict[str, StaticFile], dict[str, Path]]:
    declared = _optional_call(entrypoint, "static_endpoints")
    files: dict[str, StaticFile] = {}
    dirs: dict[str, Path] = {}
    if declared is None:
        return files, dirs
    if not isinstance(declared, dict):
        raise InitError("static_endpoints must return a dict of paths to files")
    root = job_dir.resolve()
    for name, target in declared.items():
        path = endpoint_path(name, "static_endpoints")
        if path in endpoints or path in files or path in dirs:
            raise InitError(f"static_endpoints: {name!r} is already an endpoint")
        relative, mimetype = _static_target(name, target)
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root):
            raise InitError(f"static_endpoints: {relative!r} is outside the job's directory")
        if resolved.is_dir():
            dirs[path] = resolved
        elif resolved.is_file():
            files[path] = StaticFile(
                resolved, with_charset(mimetype) if mimetype else guess_mimetype(resolved)
            )
        else:
            raise InitError(f"static_endpoints: {relative!r} does not exist in the job's directory")
    return files, dirs


def _static_target(name: str, target: Any) -> tuple[str, str | None]:
    if isinstance(target, str):
        return target, None
    if (
        isinstance(target, tuple | list)
        and len(target) == 2
        and all(isinstance(part, str) for part in target)
    ):
        return target[0], target[1]
    raise InitError(f"static_endpoints: {name!r} must map to a file or a (file, mimetype) pair")


def guess_mimetype(path: Path, fallback: str = "text/plain") -> str:
    """The type of a static file, as Racetrack's runner names it: by extension (non-strict),
    `text/plain` when unknown, with `charset=utf-8` on text types."""
    mimetype = mimetypes.guess_type(path.name, strict=False)[0] or fallback
    return with_charset(mimetype)


def with_charset(mimetype: str) -> str:
    if mimetype.startswith("text/") and "charset=" not in mimetype.lower():
        return f"{mimetype}; charset=utf-8"
    return mimetype


def static_dir_file(root: Path, rest: str) -> Path | None:
    """The file `rest` names below a served directory, or None (missing, or outside it)."""
    try:
        candidate = (root / rest.lstrip("/")).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):  # a NUL byte, a name too long
        return None
    return candidate
