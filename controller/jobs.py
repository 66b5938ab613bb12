"""What `jobs:list` and `GET /api/v1/jobs` show: one row per job version."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from controller.releases import Releases
from controller.store import Release, ReleaseStatus, Store
from router.versions import SemVer


@dataclass(frozen=True)
class JobRow:
    name: str
    version: str
    status: str  # running, degraded (n/m up), restarting, down, deploying, failed, deleted
    release: str
    url: str | None
    commit: str
    deployed_by: str
    updated_at: str
    error: str | None = None
    restarts: int = 0  # instances of this release restarted after a crash

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _row(release: Release, status: str, url: str | None, restarts: int = 0) -> JobRow:
    return JobRow(
        name=release.job,
        version=release.version or "-",
        status=status,
        release=release.label,
        url=url,
        commit=release.commit_sha[:12],
        deployed_by=release.deployed_by,
        updated_at=release.finished_at or release.created_at,
        error=release.error if status == "failed" else None,
        restarts=restarts,
    )


async def list_jobs(
    store: Store, releases: Releases, *, include_deleted: bool = False
) -> list[JobRow]:
    """One row per job version; versions removed with `jobs:delete` only with
    `include_deleted` (status `deleted`)."""
    latest: dict[tuple[str, str | None], Release] = {}
    serving: dict[tuple[str, str | None], Release] = {}
    for release in store.releases():  # ordered by job, number
        key = (release.job, release.version)
        latest[key] = release
        if release.status == ReleaseStatus.SERVING:
            serving[key] = release

    versioned_jobs = {job for job, version in latest if version is not None}
    rows: list[JobRow] = []
    for key, last in latest.items():
        job, version = key
        if version is None and job in versioned_jobs:
            continue  # a push whose manifest never parsed; the job's versions say more
        current = serving.get(key)
        if current is not None and version is not None:
            live = releases.serving.get((job, version))
            url = releases.job_url(job, version)
            if live is None or live.release.id != current.id:
                rows.append(_row(current, "down", url))
            else:
                restarts = await releases.restarts(live)
                rows.append(_row(current, live.state, url, restarts))
        elif last.status == ReleaseStatus.DEPLOYING:
            rows.append(_row(last, "deploying", None))
        elif last.status == ReleaseStatus.DELETED:
            if include_deleted:
                rows.append(_row(last, "deleted", None))
        else:
            rows.append(_row(last, "failed", None))

    def order(row: JobRow) -> tuple[str, Any]:
        parsed = SemVer.parse(row.version)
        return (row.name, parsed or SemVer(-1, 0, 0))

    rows.sort(key=order)
    return rows
