"""Approvals of public endpoints: per job name, version and (normalised) path."""

from __future__ import annotations

from collections.abc import Mapping

from controller.store.base import StoreBase
from controller.store.records import EndpointApproval, now, record_of

Key = tuple[str, str]  # (job, version)


class EndpointStore(StoreBase):
    def approve_endpoint(self, job: str, version: str, path: str, by: str) -> EndpointApproval:
        """Record the approval (kept as it was if there is one already); return it."""
        self._db.execute(
            "INSERT INTO public_endpoint_approvals (job, version, path, approved_by, approved_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job, version, path) DO NOTHING",
            (job, version, path, by, now()),
        )
        approval = self.endpoint_approval(job, version, path)
        assert approval is not None
        return approval

    def endpoint_approval(self, job: str, version: str, path: str) -> EndpointApproval | None:
        row = self._one(
            "SELECT * FROM public_endpoint_approvals WHERE job = ? AND version = ? AND path = ?",
            (job, version, path),
        )
        return record_of(EndpointApproval, row) if row else None

    def revoke_endpoint(self, job: str, version: str, path: str) -> bool:
        """Delete the approval; False if there was none."""
        cursor = self._db.execute(
            "DELETE FROM public_endpoint_approvals WHERE job = ? AND version = ? AND path = ?",
            (job, version, path),
        )
        return cursor.rowcount > 0

    def endpoint_approvals(
        self, job: str | None = None, version: str | None = None
    ) -> list[EndpointApproval]:
        """Approvals, of one job (and version) if named, in job, version, path order."""
        sql = "SELECT * FROM public_endpoint_approvals"
        conditions = [(c, v) for c, v in (("job", job), ("version", version)) if v is not None]
        if conditions:
            sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in conditions)
        rows = self._all(sql + " ORDER BY job, version, path", [v for _, v in conditions])
        return [record_of(EndpointApproval, r) for r in rows]

    def approved_endpoints(self) -> Mapping[Key, frozenset[str]]:
        """Every approved path by job version, in one query (what the router is given)."""
        approved: dict[Key, set[str]] = {}
        for row in self._all("SELECT job, version, path FROM public_endpoint_approvals"):
            approved.setdefault((row["job"], row["version"]), set()).add(row["path"])
        return {key: frozenset(paths) for key, paths in approved.items()}
