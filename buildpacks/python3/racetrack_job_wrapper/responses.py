"""What a handler answers: a JSON payload, raw bytes, or a file streamed from disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .serialization import to_json

JSON = "application/json"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    file: Path | None = None  # streamed instead of `body` when set


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    """`payload` as JSON; a result that cannot be serialised is a 500 naming the type."""
    try:
        body = to_json(payload)
    except (TypeError, ValueError) as exc:
        return error(500, f"result is not JSON serializable: {exc}", "TypeError")
    return Response(status, body, JSON, headers or [])


def error(
    status: int,
    message: str,
    kind: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    detail: Any = None,
) -> Response:
    """Every error of the wrapper and the job has this shape: `{"error": ..., "type": ...}`;
    where Racetrack's runner answers FastAPI's `{"detail": ...}`, `detail` is that too."""
    body: dict[str, Any] = {} if detail is None else {"detail": detail}
    body.update(error=message, type=kind)
    return Response(status, to_json(body), JSON, headers or [])


def not_found(message: str) -> Response:
    return error(404, message, "NotFound", detail="Not Found")


def method_not_allowed(message: str, allow: str) -> Response:
    return error(405, message, "MethodNotAllowed", [("Allow", allow)], detail="Method Not Allowed")


def invalid_body(exc: Exception) -> Response:
    """A body that is not JSON: 422, with the detail FastAPI gives (`json_invalid`)."""
    position = getattr(exc, "pos", 0)
    reason = getattr(exc, "msg", None) or f"{type(exc).__name__}: {exc}"[:200]
    detail = [{"type": "json_invalid", "loc": ["body", position], "msg": "JSON decode error",
               "input": {}, "ctx": {"error": reason}}]  # fmt: skip
    return error(422, f"request body is not valid JSON: {reason} (at {position})",
                 "RequestValidationError", detail=detail)  # fmt: skip


def not_an_object(value: Any) -> Response:
    """JSON that is not an object of arguments: 422, FastAPI's `dict_type` detail."""
    detail = [{"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary",
               "input": value}]  # fmt: skip
    kind = "null" if value is None else type(value).__name__
    return error(422, f"request body must be a JSON object of arguments, not {kind}",
                 "RequestValidationError", detail=detail)  # fmt: skip


def redirect(location: str) -> Response:
    """Racetrack's runner redirects with 307 and no body."""
    return Response(307, b"", "", [("Location", location)])
