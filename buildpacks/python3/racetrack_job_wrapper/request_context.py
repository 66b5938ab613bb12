"""The request being handled, for whatever runs on its behalf: logs and calls to other jobs.

`entrypoint.request_context.get()` is how Racetrack jobs read the incoming request's headers.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message

TRACING_HEADER = "X-Request-Tracing-Id"
CALLER_HEADER = "X-Caller-Name"


@dataclass(frozen=True)
class RequestContext:
    method: str
    path: str
    headers: Message  # case-insensitive `.get(name)`, like the request objects jobs expect
    tracing_id: str


current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "racetrack_current_request", default=None
)


def tracing_id_of(headers: Message) -> str:
    """The caller's tracing id (the router sets one on every call), else a new one."""
    given = (headers.get(TRACING_HEADER) or "").strip()
    return given[:128] if given and given.isprintable() else uuid.uuid4().hex


@contextmanager
def handling(method: str, path: str, headers: Message) -> Iterator[RequestContext]:
    context = RequestContext(method, path, headers, tracing_id_of(headers))
    token = current_request.set(context)
    try:
        yield context
    finally:
        current_request.reset(token)


def current_tracing_id() -> str | None:
    context = current_request.get()
    return None if context is None else context.tracing_id
