"""The platform's records, in SQL. Everything else reaches the database through this module.

SQLite in the data dir is the embedded default. The SQL is kept to what PostgreSQL also speaks
(placeholders aside), so a PostgreSQL store is this class with another connection.
Calls are synchronous and short; they run on the event loop thread, which serialises them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        token_generation INTEGER NOT NULL DEFAULT 1,
        token_hash TEXT UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        number INTEGER NOT NULL,
        version TEXT,
        commit_sha TEXT NOT NULL,
        jobtype TEXT,
        manifest TEXT,
        artifact TEXT,
        status TEXT NOT NULL,
        error TEXT,
        build_log TEXT NOT NULL DEFAULT '',
        deployed_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE (job, number)
    );
    CREATE INDEX releases_by_job_version ON releases (job, version);
    """,
    # config: the environment the release runs with on top of its manifest (rollbacks keep it);
    # rollback_of: the release whose artifact and config a rollback re-deployed
    """
    ALTER TABLE releases ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE releases ADD COLUMN rollback_of INTEGER;
    """,
]


class ReleaseStatus:
    DEPLOYING = "deploying"
    SERVING = "serving"
    SUPERSEDED = "superseded"
    FAILED = "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    token_generation: int
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
    artifact: dict[str, Any] | None
    status: str
    error: str | None
    build_log: str
    deployed_by: str
    created_at: str
    finished_at: str | None
    config: dict[str, str]
    rollback_of: int | None

    @property
    def label(self) -> str:
        return f"r{self.number}"


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        is_admin=bool(row["is_admin"]),
        token_generation=row["token_generation"],
        created_at=row["created_at"],
    )


def _release(row: sqlite3.Row) -> Release:
    return Release(
        id=row["id"],
        job=row["job"],
        number=row["number"],
        version=row["version"],
        commit_sha=row["commit_sha"],
        jobtype=row["jobtype"],
        manifest=json.loads(row["manifest"]) if row["manifest"] else None,
        artifact=json.loads(row["artifact"]) if row["artifact"] else None,
        status=row["status"],
        error=row["error"],
        build_log=row["build_log"],
        deployed_by=row["deployed_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        config=json.loads(row["config"]),
        rollback_of=row["rollback_of"],
    )


class Store:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            self._db.executescript(
                f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
            )

    def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self._db.execute(sql, tuple(params)).fetchone()

    # users and keys

    def create_user(self, name: str, is_admin: bool, token_hash_for: Callable[[User], str]) -> User:
        """Create a user and store the hash of its first token, in one transaction."""
        self._db.execute("BEGIN")
        try:
            cursor = self._db.execute(
                "INSERT INTO users (name, is_admin, created_at) VALUES (?, ?, ?)",
                (name, int(is_admin), _now()),
            )
            user = self.user_by_id(int(cursor.lastrowid or 0))
            assert user is not None
            self._db.execute(
                "UPDATE users SET token_hash = ? WHERE id = ?", (token_hash_for(user), user.id)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return user

    def user_by_id(self, user_id: int) -> User | None:
        row = self._one("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    def user_by_name(self, name: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE name = ?", (name,))
        return _user(row) if row else None

    def user_by_token_hash(self, token_hash: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE token_hash = ?", (token_hash,))
        return _user(row) if row else None

    def user_by_fingerprint(self, fingerprint: str) -> User | None:
        row = self._one(
            "SELECT users.* FROM users JOIN ssh_keys ON ssh_keys.user_id = users.id"
            " WHERE ssh_keys.fingerprint = ?",
            (fingerprint,),
        )
        return _user(row) if row else None

    def add_key(self, user: User, fingerprint: str, public_key: str) -> None:
        self._db.execute(
            "INSERT INTO ssh_keys (user_id, fingerprint, public_key, created_at)"
            " VALUES (?, ?, ?, ?)",
            (user.id, fingerprint, public_key, _now()),
        )

    # releases

    def create_release(
        self,
        job: str,
        commit_sha: str,
        deployed_by: str,
        *,
        config: dict[str, str] | None = None,
        rollback_of: int | None = None,
    ) -> Release:
        """A new release numbered after the job's highest one (r1, r2, ...)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._one("SELECT MAX(number) FROM releases WHERE job = ?", (job,))
            number = (row[0] if row and row[0] else 0) + 1
            cursor = self._db.execute(
                "INSERT INTO releases (job, number, commit_sha, status, deployed_by, created_at,"
                " config, rollback_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job,
                    number,
                    commit_sha,
                    ReleaseStatus.DEPLOYING,
                    deployed_by,
                    _now(),
                    json.dumps(config or {}),
                    rollback_of,
                ),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        release = self.release_by_id(int(cursor.lastrowid or 0))
        assert release is not None
        return release

    def release_by_number(self, job: str, number: int) -> Release | None:
        row = self._one("SELECT * FROM releases WHERE job = ? AND number = ?", (job, number))
        return _release(row) if row else None

    def latest_config(self, job: str) -> dict[str, str]:
        """The config of the job's newest release: a push keeps what was configured."""
        row = self._one(
            "SELECT config FROM releases WHERE job = ? ORDER BY number DESC LIMIT 1", (job,)
        )
        return json.loads(row["config"]) if row else {}

    def release_by_id(self, release_id: int) -> Release | None:
        row = self._one("SELECT * FROM releases WHERE id = ?", (release_id,))
        return _release(row) if row else None

    def describe_release(
        self, release: Release, *, version: str, jobtype: str, manifest: dict[str, Any]
    ) -> Release:
        self._db.execute(
            "UPDATE releases SET version = ?, jobtype = ?, manifest = ? WHERE id = ?",
            (version, jobtype, json.dumps(manifest), release.id),
        )
        return self._reload(release)

    def set_artifact(self, release: Release, artifact: dict[str, Any]) -> Release:
        self._db.execute(
            "UPDATE releases SET artifact = ? WHERE id = ?", (json.dumps(artifact), release.id)
        )
        return self._reload(release)

    def finish_release(
        self, release: Release, status: str, *, build_log: str, error: str | None = None
    ) -> Release:
        self._db.execute(
            "UPDATE releases SET status = ?, error = ?, build_log = ?, finished_at = ?"
            " WHERE id = ?",
            (status, error, build_log, _now(), release.id),
        )
        return self._reload(release)

    def supersede_serving(self, release: Release) -> None:
        """`release` now serves its job version: every other serving one of it is superseded."""
        self._db.execute(
            "UPDATE releases SET status = ?"
            " WHERE job = ? AND version = ? AND status = ? AND id != ?",
            (
                ReleaseStatus.SUPERSEDED,
                release.job,
                release.version,
                ReleaseStatus.SERVING,
                release.id,
            ),
        )

    def _reload(self, release: Release) -> Release:
        reloaded = self.release_by_id(release.id)
        assert reloaded is not None
        return reloaded

    def releases(self, *, job: str | None = None, status: str | None = None) -> list[Release]:
        sql = "SELECT * FROM releases WHERE 1 = 1"
        params: list[Any] = []
        if job is not None:
            sql += " AND job = ?"
            params.append(job)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        return [_release(r) for r in self._db.execute(sql + " ORDER BY job, number", params)]

    def fail_interrupted_deploys(self, reason: str) -> list[Release]:
        """Deploys that were running when the server stopped can never finish: mark them."""
        interrupted = self.releases(status=ReleaseStatus.DEPLOYING)
        for release in interrupted:
            self.finish_release(
                release, ReleaseStatus.FAILED, build_log=release.build_log, error=reason
            )
        return interrupted
