"""endpoints:list, endpoints:approve, endpoints:revoke: public endpoints, approved by admins.

An approval or a revocation publishes a new route snapshot at once: it applies from the next
call on, without a redeploy. Both are in the audit log.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from controller.commands import arguments
from controller.commands.jobs import releases_of
from controller.commands.registry import (
    CommandContext,
    CommandFailed,
    NotFound,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.permissions import ANY_VERSION, READ_JOB
from controller.public_endpoints import approve_command, declared_paths
from controller.store import EndpointApproval, Release, ReleaseStatus
from router.paths import normalize_path

Key = tuple[str, str]  # (job, version)

APPROVED = "approved"  # declared and approved: in effect while the version serves
PENDING = "pending"  # declared, not approved: calls need a token
NOT_DECLARED = "approved, not declared"  # what serves (or deploys) does not declare it
NOT_SERVING = "approved, not serving"  # the version neither serves nor is being deployed


@dataclass(frozen=True)
class EndpointRow:
    job: str
    version: str
    path: str
    status: str
    approved_by: str | None = None
    approved_at: str | None = None


def _manifest_paths(release: Release) -> list[str]:
    return declared_paths((release.manifest or {}).get("public_endpoints") or [])


def _declarations(ctx: CommandContext, job: str | None) -> dict[Key, list[str]]:
    """What each job version declares: the release that serves it, else a deploy under way."""
    found: dict[Key, list[str]] = {}
    for serving in ctx.services.releases.serving:
        if job in (None, serving.release.job):
            found[serving.key] = declared_paths(serving.manifest.public_endpoints)
    for release in ctx.services.store.releases(job=job, status=ReleaseStatus.DEPLOYING):
        key = (release.job, release.version or "")
        if release.version is not None and release.manifest and key not in found:
            found[key] = _manifest_paths(release)
    return found


def endpoint_rows(ctx: CommandContext, job: str | None, version: str | None) -> list[EndpointRow]:
    """Declared and approved endpoints of the versions the caller may read."""
    declared = _declarations(ctx, job)
    approvals: dict[Key, dict[str, EndpointApproval]] = {}
    for approval in ctx.services.store.endpoint_approvals(job, version):
        approvals.setdefault((approval.job, approval.version), {})[approval.path] = approval
    rows: list[EndpointRow] = []
    for key in sorted(set(declared) | set(approvals)):
        if version not in (None, key[1]) or not ctx.allowed(READ_JOB, key[0], key[1]):
            continue
        approved = approvals.get(key, {})
        paths = declared.get(key, [])
        for path in paths:
            approval = approved.get(path)
            rows.append(_row(key, path, APPROVED if approval else PENDING, approval))
        lapsed = NOT_DECLARED if key in declared else NOT_SERVING
        rows += [_row(key, path, lapsed, a) for path, a in approved.items() if path not in paths]
    return rows


def _row(key: Key, path: str, status: str, approval: EndpointApproval | None) -> EndpointRow:
    if approval is None:
        return EndpointRow(key[0], key[1], path, status)
    return EndpointRow(key[0], key[1], path, status, approval.approved_by, approval.approved_at)


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name, nargs="?")
    parser.add_argument("version", type=arguments.version, nargs="?")
    json_flag(parser)


@command(
    "endpoints:list",
    "public endpoints of job versions: approved (no token needed) or pending",
    _list_args,
)
async def _endpoints_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    if args.job is not None:
        ctx.require(READ_JOB, args.job, args.version or ANY_VERSION)
        releases_of(ctx, args.job)
    rows = endpoint_rows(ctx, args.job, args.version)
    text = "No public endpoints declared.\n"
    if rows:
        text = format_table(
            ["JOB", "VERSION", "PATH", "STATUS", "APPROVED BY"],
            [[r.job, r.version, r.path, r.status, r.approved_by or "-"] for r in rows],
        )
        pending = next((r for r in rows if r.status == PENDING), None)
        if pending is not None:
            ssh = ctx.services.releases.ssh_command
            example = approve_command(ssh, pending.job, pending.version, pending.path)
            text += f"Pending endpoints need a token until an admin approves them: {example}\n"
    return Result([asdict(r) for r in rows], text)


def _endpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("version", type=arguments.version)
    parser.add_argument(
        "path", type=arguments.public_endpoint, help="as in job.yaml, e.g. /api/v1/webview"
    )
    json_flag(parser)


def _normalized(path: str) -> str:
    normalized = normalize_path(path)
    assert normalized is not None, path  # arguments.public_endpoint let only such paths in
    return normalized


def _declared_by_version(ctx: CommandContext, job: str, version: str) -> list[str]:
    """What the version declares: the release that serves it, and its newest release (a deploy
    under way may declare more); NotFound if the job has no such version."""
    releases = [r for r in releases_of(ctx, job) if r.version == version and r.manifest]
    if not releases:
        raise NotFound(f"{job} has no version {version}")
    paths = _manifest_paths(releases[-1])
    serving = ctx.services.releases.serving.get((job, version))
    if serving is not None:
        paths += declared_paths(serving.manifest.public_endpoints)
    return list(dict.fromkeys(paths))


@command(
    "endpoints:approve",
    "let calls without a token reach a public endpoint that a job version declares",
    _endpoint_args,
)
async def _endpoints_approve(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    job, version, path = args.job, args.version, _normalized(args.path)
    declared = _declared_by_version(ctx, job, version)
    if path not in declared:
        listed = ", ".join(declared) if declared else "none"
        raise CommandFailed(
            f"{job} {version} does not declare {path} in public_endpoints (its job.yaml"
            f" declares: {listed}); only a declared endpoint can be approved"
        )
    store = ctx.services.store
    before = store.endpoint_approval(job, version, path)
    approval = store.approve_endpoint(job, version, path, ctx.who.name)
    data = asdict(approval)
    if before is not None:
        return Result(
            data,
            f"{path} of {job} {version} was already approved by {before.approved_by}"
            f" at {before.approved_at}\n",
        )
    ctx.audit("endpoints:approve", job, f"{version} {path}")
    ctx.services.releases.serving.publish()
    serves = ctx.services.releases.serving.get((job, version)) is not None
    return Result(
        data,
        f"Approved public endpoint {path} of {job} {version}: calls without a token reach it"
        f" (and what is below it) {'from now on' if serves else 'once it serves'}\n",
    )


@command(
    "endpoints:revoke",
    "a public endpoint needs a token again (from the next call on)",
    _endpoint_args,
)
async def _endpoints_revoke(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    job, version, path = args.job, args.version, _normalized(args.path)
    store = ctx.services.store
    approval = store.endpoint_approval(job, version, path)
    if approval is None or not store.revoke_endpoint(job, version, path):
        raise NotFound(f"public endpoint {path} of {job} {version} is not approved")
    ctx.audit("endpoints:revoke", job, f"{version} {path}")
    ctx.services.releases.serving.publish()
    return Result(
        asdict(approval),
        f"Revoked public endpoint {path} of {job} {version}: calls to it need a token again\n",
    )
