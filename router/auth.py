"""The router's side of authentication: find the caller's token and ask whoever decides.

The router does not know users or tokens; the controller injects an `Authorizer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

AUTH_HEADER = "X-Racetrack-Auth"


@dataclass(frozen=True)
class AuthDenied:
    status: int  # 401: who are you?  403: not allowed.
    reason: str


class Authorizer(Protocol):
    async def __call__(
        self, token: str | None, job: str, version: str, path: str
    ) -> AuthDenied | None:
        """None when the call may go through, else why not."""
        ...


def token_from_request(request: web.BaseRequest) -> str | None:
    """The token from the `X-Racetrack-Auth` header, else from the cookie of that name."""
    return request.headers.get(AUTH_HEADER) or request.cookies.get(AUTH_HEADER) or None
