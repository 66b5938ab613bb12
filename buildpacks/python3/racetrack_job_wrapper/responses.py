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
    status: int, message: str, kind: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """Every error of the wrapper and the job has this shape: `{"error": ..., "type": ...}`."""
    return Response(status, to_json({"error": message, "type": kind}), JSON, headers or [])


def redirect(location: str) -> Response:
    return Response(302, b"", "text/plain", [("Location", location)])
