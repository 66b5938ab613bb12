"""The router's authorizer: who may call which job.

For now any user with a valid token may call every job (the default that a new user gets);
per-job grants narrow this later.
"""

from __future__ import annotations

from controller.accounts import Accounts, NotAuthenticated
from router.auth import AuthDenied


class CallAuthorizer:
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def __call__(
        self, token: str | None, job: str, version: str, path: str
    ) -> AuthDenied | None:
        try:
            self._accounts.authenticate(token)
        except NotAuthenticated as exc:
            return AuthDenied(401, str(exc))
        return None
