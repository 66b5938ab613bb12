"""The router's authorizer: who may call which job, asked once per (token, job, version,
endpoint) and remembered for a short while.

A revoked grant or token therefore stops working within the cache's lifetime
(`--auth-cache`, 10 s by default), not at once; the router never waits on the store for a call
it has seen recently.
"""

from __future__ import annotations

import time

from controller.accounts import Accounts, NotAuthenticated
from controller.permissions import CALL_JOB, Permissions
from controller.tokens import hash_token
from router.auth import AuthDenied

MAX_CACHED = 10_000


class CallAuthorizer:
    def __init__(
        self, accounts: Accounts, permissions: Permissions, cache_seconds: float = 10.0
    ) -> None:
        self._accounts = accounts
        self._permissions = permissions
        self._ttl = cache_seconds
        self._cache: dict[tuple[str, str, str, str], tuple[float, AuthDenied | None]] = {}

    async def __call__(
        self, token: str | None, job: str, version: str, path: str
    ) -> AuthDenied | None:
        if not token:
            return self._decide(token, job, version, path)
        key = (hash_token(token), job, version, path)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        decision = self._decide(token, job, version, path)
        if len(self._cache) >= MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (now + self._ttl, decision)
        return decision

    def _decide(self, token: str | None, job: str, version: str, path: str) -> AuthDenied | None:
        try:
            who = self._accounts.authenticate(token)
        except NotAuthenticated as exc:
            return AuthDenied(401, str(exc))
        if not self._permissions.allowed(who, CALL_JOB, job, version, path):
            return AuthDenied(403, f"{who.display} may not call {job} {version} {path}")
        return None
