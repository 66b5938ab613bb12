"""Who may do what: Racetrack's permission model, stricter by default.

Scopes `read_job`, `deploy_job`, `deploy_new_family`, `delete_job`, `call_job`, `full_access`,
each optionally narrowed to a family, a version and an endpoint, matched exactly (a grant for
`foo` never covers `foobar`). Admins have `full_access`. A user may read and call every job,
create new families, and deploy and delete the families they created; anything else is granted.
An External Service Consumer (ESC) and a job family (calling other jobs with its token) have
nothing until granted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from controller.store import Grant, Store

READ_JOB: Final = "read_job"
DEPLOY_JOB: Final = "deploy_job"
DEPLOY_NEW_FAMILY: Final = "deploy_new_family"
DELETE_JOB: Final = "delete_job"
CALL_JOB: Final = "call_job"
FULL_ACCESS: Final = "full_access"
SCOPES = (READ_JOB, DEPLOY_JOB, DEPLOY_NEW_FAMILY, DELETE_JOB, CALL_JOB, FULL_ACCESS)
SUBJECT_KINDS = ("user", "esc", "family")


class AnyVersion:
    """For checks made before a version is known: a grant for any version will do."""

    def __repr__(self) -> str:
        return "ANY_VERSION"


ANY_VERSION: Final = AnyVersion()


class Forbidden(Exception):
    """The principal may not do this; the message names who, what and on what."""


@dataclass(frozen=True)
class Principal:
    """Whoever a request comes from: a user (SSH key or token), an ESC, or a job family."""

    kind: str  # user | esc | family
    name: str
    is_admin: bool = False

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def display(self) -> str:
        return {"user": "user", "esc": "ESC", "family": "job family"}[self.kind] + f" {self.name}"


def _matches(
    grant: Grant,
    scope: str,
    family: str | None,
    version: str | AnyVersion | None,
    endpoint: str | None,
) -> bool:
    if grant.scope not in (scope, FULL_ACCESS):
        return False
    if grant.family is not None and grant.family != family:
        return False
    if (
        grant.version is not None
        and not isinstance(version, AnyVersion)
        and grant.version != version
    ):
        return False
    return grant.endpoint is None or grant.endpoint == endpoint


def _describe(scope: str, family: str | None, version: object, endpoint: str | None) -> str:
    target = ""
    if family is not None:
        target = f" on {family}"
        if isinstance(version, str):
            target += f" {version}"
        if endpoint is not None:
            target += f" {endpoint}"
    return f"{scope}{target}"


class Permissions:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _by_default(self, who: Principal, scope: str, family: str | None) -> bool:
        if who.is_admin:
            return True
        if who.kind != "user":
            return False
        if scope in (READ_JOB, CALL_JOB, DEPLOY_NEW_FAMILY):
            return True
        if scope in (DEPLOY_JOB, DELETE_JOB) and family is not None:
            owned = self._store.family(family)
            return owned is not None and owned.owner == who.name
        return False

    def allowed(
        self,
        who: Principal,
        scope: str,
        family: str | None = None,
        version: str | AnyVersion | None = None,
        endpoint: str | None = None,
    ) -> bool:
        if self._by_default(who, scope, family):
            return True
        return any(
            _matches(grant, scope, family, version, endpoint)
            for grant in self._store.grants(who.subject)
        )

    def require(
        self,
        who: Principal,
        scope: str,
        family: str | None = None,
        version: str | AnyVersion | None = None,
        endpoint: str | None = None,
    ) -> None:
        if not self.allowed(who, scope, family, version, endpoint):
            needed = _describe(scope, family, version, endpoint)
            raise Forbidden(f"permission denied: {who.display} lacks {needed}")

    def require_admin(self, who: Principal) -> None:
        if not self.allowed(who, FULL_ACCESS):
            raise Forbidden(f"permission denied: {who.display} is not an admin")
