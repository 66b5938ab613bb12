"""What the store hands out: immutable records, read from rows."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from buildpacks.build import Artifact, artifact_from_record


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ReleaseStatus:
    DEPLOYING = "deploying"
    SERVING = "serving"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    DELETED = "deleted"


class Cause:
    """Why a release exists."""

    PUSH = "push"
    ROLLBACK = "rollback"
    CONFIG = "config"
    RESTART = "restart"
    SCALE = "scale"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    token_generation: int
    created_at: str


@dataclass(frozen=True)
class SshKey:
    id: int
    user: str
    fingerprint: str
    public_key: str
    created_at: str


@dataclass(frozen=True)
class Release:
    id: int
    job: str
    number: int
    version: str | None
    commit_sha: str
    jobtype: str | None
    manifest: dict[str, Any] | None
    artifact: Artifact | None  # parsed once, here
    status: str
    error: str | None
    build_log: str
    deployed_by: str
    created_at: str
    finished_at: str | None
    config: dict[str, str]
    rollback_of: int | None  # the release whose artifact this one deploys again
    cause: str
    # the values of its commit's secret_runtime_env_file: never shown
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"r{self.number}"


@dataclass(frozen=True)
class Family:
    """A job name and who owns it. `claimed_until`: set while the name is only held by a first
    deploy that has not succeeded (yet); once it passes, the name is free again."""

    name: str
    owner: str
    created_at: str
    claimed_until: str | None = None
    slot: int = 0

    def holds(self, at: str | None = None) -> bool:
        """Whether the owner holds the name (for good, or by a claim that has not expired)."""
        return self.claimed_until is None or self.claimed_until > (at or now())


@dataclass(frozen=True)
class Esc:
    id: int
    name: str
    created_by: str
    created_at: str


@dataclass(frozen=True)
class Token:
    id: int
    subject: str  # esc:NAME or family:NAME
    created_by: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class Grant:
    id: int
    subject: str  # user:NAME, esc:NAME or family:NAME
    scope: str
    family: str | None
    version: str | None
    endpoint: str | None
    created_by: str
    created_at: str


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: str
    actor: str
    action: str
    job: str | None
    detail: str


@dataclass(frozen=True)
class EndpointApproval:
    """An admin's yes to one public endpoint of one job version (`path` normalised)."""

    job: str
    version: str
    path: str
    approved_by: str
    approved_at: str


def user_of(row: sqlite3.Row) -> User:
    return User(
        row["id"], row["name"], bool(row["is_admin"]), row["token_generation"], row["created_at"]
    )


def release_of(row: sqlite3.Row, *, config: dict[str, str], secret_env: dict[str, str]) -> Release:
    """A release from its row; `config` and `secret_env` are its opened (unsealed) values."""
    return Release(
        id=row["id"],
        job=row["job"],
        number=row["number"],
        version=row["version"],
        commit_sha=row["commit_sha"],
        jobtype=row["jobtype"],
        manifest=json.loads(row["manifest"]) if row["manifest"] else None,
        artifact=artifact_from_record(json.loads(row["artifact"])) if row["artifact"] else None,
        status=row["status"],
        error=row["error"],
        build_log=row["build_log"],
        deployed_by=row["deployed_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        config=config,
        rollback_of=row["rollback_of"],
        cause=row["cause"],
        secret_env=secret_env,
    )


def record_of(kind: type[Any], row: sqlite3.Row) -> Any:
    """Records whose fields are exactly the row's columns."""
    return kind(**{key: row[key] for key in row.keys()})  # noqa: SIM118 (sqlite3.Row)
