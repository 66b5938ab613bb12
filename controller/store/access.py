"""Job families (who created each), permission grants, the audit log and per-job config
(the runtime config and the build config)."""

from __future__ import annotations

from controller.store.base import StoreBase, config_place
from controller.store.records import AuditEvent, Family, Grant, now, record_of


class AccessStore(StoreBase):
    # families

    def family(self, name: str) -> Family | None:
        """The family of this name, if anyone holds it (an expired claim is no one's)."""
        row = self._one("SELECT * FROM families WHERE name = ?", (name,))
        if row is None:
            return None
        family: Family = record_of(Family, row)
        return family if family.holds() else None

    def claim_family(self, name: str, owner: str, *, until: str) -> Family:
        """Hold `name` for `owner` until `until` (a first deploy), unless someone else holds
        it; return the family as it stands, whoever holds it. A claim that expired is taken
        over: what its deploys left (releases, config) goes, and the family gets a new slot."""
        with self._transaction(immediate=True):
            row = self._one("SELECT * FROM families WHERE name = ?", (name,))
            held: Family | None = record_of(Family, row) if row else None
            if held is not None and held.claimed_until is None:
                return held
            if held is not None and held.owner == owner:
                self._db.execute(
                    "UPDATE families SET claimed_until = ? WHERE name = ?", (until, name)
                )
            elif held is None or not held.holds():
                if held is not None:
                    self._forget_job(name)
                slot = self._insert("INSERT INTO family_slots (family) VALUES (?)", (name,))
                self._db.execute(
                    "INSERT INTO families (name, owner, created_at, claimed_until, slot)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, owner, now(), until, slot),
                )
            row = self._one("SELECT * FROM families WHERE name = ?", (name,))
        assert row is not None
        return record_of(Family, row)  # type: ignore[no-any-return]

    def family_slot(self, name: str) -> int:
        """The family's number (0 if it has none): the local runtime's uid derives from it."""
        row = self._one("SELECT slot FROM families WHERE name = ?", (name,))
        return int(row["slot"] or 0) if row else 0

    def confirm_family(self, name: str) -> None:
        """A deploy of the family succeeded: the name is its owner's for good."""
        self._db.execute("UPDATE families SET claimed_until = NULL WHERE name = ?", (name,))

    def _forget_job(self, name: str) -> None:
        """What an expired claim left: its failed releases, config, endpoint approvals and the
        family row."""
        for table in ("releases", "job_config", "job_build_config", "public_endpoint_approvals"):
            self._db.execute(f"DELETE FROM {table} WHERE job = ?", (name,))
        self._db.execute("DELETE FROM families WHERE name = ?", (name,))

    # grants

    def grant(
        self,
        subject: str,
        scope: str,
        *,
        family: str | None,
        version: str | None,
        endpoint: str | None,
        created_by: str,
    ) -> Grant:
        grant_id = self._insert(
            "INSERT INTO permissions (subject, scope, family, version, endpoint, created_by,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (subject, scope, family, version, endpoint, created_by, now()),
        )
        grant = self.grant_by_id(grant_id)
        assert grant is not None
        self._auth_changed()
        return grant

    def grant_by_id(self, grant_id: int) -> Grant | None:
        row = self._one("SELECT * FROM permissions WHERE id = ?", (grant_id,))
        return record_of(Grant, row) if row else None

    def grants(self, subject: str | None = None) -> list[Grant]:
        if subject is None:
            rows = self._all("SELECT * FROM permissions ORDER BY id")
        else:
            rows = self._all("SELECT * FROM permissions WHERE subject = ? ORDER BY id", (subject,))
        return [record_of(Grant, r) for r in rows]

    def revoke_grant(self, grant: Grant) -> None:
        self._db.execute("DELETE FROM permissions WHERE id = ?", (grant.id,))
        self._auth_changed()

    # audit

    def audit(self, actor: str, action: str, job: str | None = None, detail: str = "") -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, action, job, detail) VALUES (?, ?, ?, ?, ?)",
            (now(), actor, action, job, detail),
        )

    def audit_log(self, job: str | None = None, limit: int = 1000) -> list[AuditEvent]:
        if job is None:
            rows = self._all("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._all(
                "SELECT * FROM audit WHERE job = ? ORDER BY id DESC LIMIT ?", (job, limit)
            )
        return [record_of(AuditEvent, r) for r in rows]

    # per-job config (the environment every release of the job runs with) and build config (the
    # environment of the job's builds: `config:set --build`); values are sealed at rest

    def job_config(self, job: str) -> dict[str, str]:
        return self._config("job_config", job)

    def replace_job_config(self, job: str, config: dict[str, str]) -> None:
        self._replace_config("job_config", job, config)

    def job_build_config(self, job: str) -> dict[str, str]:
        return self._config("job_build_config", job)

    def replace_job_build_config(self, job: str, config: dict[str, str]) -> None:
        self._replace_config("job_build_config", job, config)

    def _config(self, table: str, job: str) -> dict[str, str]:
        rows = self._all(f"SELECT key, value FROM {table} WHERE job = ? ORDER BY key", (job,))
        return {r["key"]: self._open(r["value"], config_place(table, job, r["key"])) for r in rows}

    def _replace_config(self, table: str, job: str, config: dict[str, str]) -> None:
        sealed = [
            (job, key, self._seal(value, config_place(table, job, key)))
            for key, value in config.items()
        ]
        with self._transaction():
            self._db.execute(f"DELETE FROM {table} WHERE job = ?", (job,))
            self._db.executemany(f"INSERT INTO {table} (job, key, value) VALUES (?, ?, ?)", sealed)
