"""The router's authorizer: who may call which job, asked once per (token, job, version,
endpoint) and, when the answer is yes, remembered for a short while (`--auth-cache`).

A refusal is never remembered, so a grant works from the next call on. A yes is forgotten the
moment anything changes who may do what (a grant or its revocation, a token revoked, a user or a
key removed: the store tells `invalidate`), so a revocation works from the next call on too. The
router never waits on the store for a call it has allowed recently.
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
        self._allowed: dict[tuple[str, str, str, str], float] = {}  # key → when it expires
        # bumped by every invalidation: an answer decided before one is not remembered after it
        self._generation = 0

    def invalidate(self) -> None:
        """Who may do what changed: forget every remembered answer."""
        self._generation += 1
        self._allowed.clear()

    async def __call__(
        self, token: str | None, job: str, version: str, path: str
    ) -> AuthDenied | None:
        if not token:
            return self._decide(token, job, version, path)
        key = (hash_token(token), job, version, path)
        now = time.monotonic()
        expires = self._allowed.get(key)
        if expires is not None and expires > now:
            return None
        generation = self._generation
        decision = self._decide(token, job, version, path)
        if decision is None and generation == self._generation:
            self._remember(key, now)
        return decision

    def _remember(self, key: tuple[str, str, str, str], now: float) -> None:
        if len(self._allowed) >= MAX_CACHED:
            self._allowed = {k: v for k, v in self._allowed.items() if v > now}
            if len(self._allowed) >= MAX_CACHED:
                self._allowed.clear()
        self._allowed[key] = now + self._ttl

    def _decide(self, token: str | None, job: str, version: str, path: str) -> AuthDenied | None:
        try:
            who = self._accounts.authenticate(token)
        except NotAuthenticated as exc:
            return AuthDenied(401, str(exc))
        if not self._permissions.allowed(who, CALL_JOB, job, version, path):
            return AuthDenied(403, f"{who.display} may not call {job} {version} {path}")
        return None
