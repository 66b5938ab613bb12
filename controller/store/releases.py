"""Releases: every deploy of a job, numbered r1, r2, … per job."""

from __future__ import annotations

import json
from sqlite3 import Row
from typing import Any

from buildpacks.build import Artifact
from controller.store.base import RELEASE_SECRET_COLUMNS, StoreBase, release_place
from controller.store.records import Cause, Release, ReleaseStatus, now, release_of


class ReleaseStore(StoreBase):
    def create_release(
        self,
        job: str,
        commit_sha: str,
        deployed_by: str,
        *,
        config: dict[str, str] | None = None,
        rollback_of: int | None = None,
        cause: str = Cause.PUSH,
        secret_env: dict[str, str] | None = None,
    ) -> Release:
        """A new release numbered after the job's highest one (r1, r2, ...)."""
        with self._transaction(immediate=True):
            row = self._one("SELECT MAX(number) FROM releases WHERE job = ?", (job,))
            number = (row[0] if row and row[0] else 0) + 1
            release_id = self._insert(
                "INSERT INTO releases (job, number, commit_sha, status, deployed_by, created_at,"
                " config, rollback_of, cause, secret_env) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job,
                    number,
                    commit_sha,
                    ReleaseStatus.DEPLOYING,
                    deployed_by,
                    now(),
                    self._seal_json("config", job, config or {}),
                    rollback_of,
                    cause,
                    self._seal_json("secret_env", job, secret_env or {}),
                ),
            )
        release = self.release_by_id(release_id)
        assert release is not None
        return release

    def release_by_id(self, release_id: int) -> Release | None:
        row = self._one("SELECT * FROM releases WHERE id = ?", (release_id,))
        return self._release(row) if row else None

    def release_by_number(self, job: str, number: int) -> Release | None:
        row = self._one("SELECT * FROM releases WHERE job = ? AND number = ?", (job, number))
        return self._release(row) if row else None

    def describe_release(
        self, release: Release, *, version: str, jobtype: str, manifest: dict[str, Any]
    ) -> Release:
        self._db.execute(
            "UPDATE releases SET version = ?, jobtype = ?, manifest = ? WHERE id = ?",
            (version, jobtype, json.dumps(manifest), release.id),
        )
        return self._reload(release)

    def set_secret_env(self, release: Release, secret_env: dict[str, str]) -> Release:
        """The values of the release's secret_runtime_env_file (read from its commit)."""
        self._db.execute(
            "UPDATE releases SET secret_env = ? WHERE id = ?",
            (self._seal_json("secret_env", release.job, secret_env), release.id),
        )
        return self._reload(release)

    def set_artifact(self, release: Release, artifact: Artifact) -> Release:
        self._db.execute(
            "UPDATE releases SET artifact = ? WHERE id = ?",
            (json.dumps(artifact.to_record()), release.id),
        )
        return self._reload(release)

    def finish_release(
        self, release: Release, status: str, *, build_log: str, error: str | None = None
    ) -> Release:
        self._db.execute(
            "UPDATE releases SET status = ?, error = ?, build_log = ?, finished_at = ?"
            " WHERE id = ?",
            (status, error, build_log, now(), release.id),
        )
        return self._reload(release)

    def set_release_status(self, release: Release, status: str) -> Release:
        self._db.execute("UPDATE releases SET status = ? WHERE id = ?", (status, release.id))
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

    def _seal_json(self, column: str, job: str, values: dict[str, str]) -> str:
        return self._seal(json.dumps(values), release_place(column, job))

    def _release(self, row: Row) -> Release:
        """A release from its row, its config and secret values opened."""
        opened = {
            column: json.loads(self._open(row[column], release_place(column, row["job"])))
            for column in RELEASE_SECRET_COLUMNS
        }
        return release_of(row, **opened)

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
        return [self._release(r) for r in self._all(sql + " ORDER BY job, number", params)]

    def jobs(self) -> list[str]:
        return [r["job"] for r in self._all("SELECT DISTINCT job FROM releases ORDER BY job")]

    def fail_interrupted_deploys(self, reason: str) -> list[Release]:
        """Deploys that were running when the server stopped can never finish: mark them."""
        interrupted = self.releases(status=ReleaseStatus.DEPLOYING)
        for release in interrupted:
            self.finish_release(
                release, ReleaseStatus.FAILED, build_log=release.build_log, error=reason
            )
        return interrupted
