"""Public endpoints as Racetrack has them: a job version's `public_endpoints` (path prefixes a
call without a token may reach) take effect once an admin approves them, per job name, version
and path (`endpoints:approve`); until then they are pending. `--auto-approve-public-endpoints`
approves what a push declares (single-user installations). Approvals live in the store, so
they survive restarts and redeploys of the same version; the router is given, per version, the
approved paths that its serving manifest declares, and nothing else.

Paths are kept and compared in the router's normalised form (`router.paths.normalize_path`),
so `/api/v1/webview/` and `/api/v1/webview` are one endpoint.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from controller.store import Store
from router.paths import normalize_path

AUTO_APPROVE_FLAG = "--auto-approve-public-endpoints"
PLATFORM_ACTOR = "platform"  # who the audit log names for approvals made by the flag


def declared_paths(endpoints: Iterable[str]) -> list[str]:
    """A manifest's `public_endpoints`, normalised, each once, in their order (one the router
    could not match is left out: the manifest's own check refuses those first)."""
    paths: list[str] = []
    for endpoint in endpoints:
        path = normalize_path(endpoint)
        if path is not None and path not in paths:
            paths.append(path)
    return paths


def effective_paths(endpoints: Iterable[str], approved: frozenset[str]) -> frozenset[str]:
    """What the router opens for a version: what its manifest declares and an admin approved."""
    return frozenset(path for path in declared_paths(endpoints) if path in approved)


def approve_command(ssh_command: str, job: str, version: str, path: str) -> str:
    return f"{ssh_command} endpoints:approve {job} {version} {shlex.quote(path)}"


def on_push(
    store: Store,
    job: str,
    version: str,
    endpoints: Iterable[str],
    *,
    deployed_by: str,
    auto_approve: bool,
    ssh_command: str,
) -> list[str]:
    """At a push, once its manifest is read: approve what it declares if the platform
    auto-approves, and return the push's lines about them (pending ones with the command that
    approves each)."""
    lines: list[str] = []
    for path in declared_paths(endpoints):
        if store.endpoint_approval(job, version, path) is not None:
            lines.append(f"Public endpoint {path} of {job} {version}: approved")
        elif auto_approve:
            store.approve_endpoint(job, version, path, AUTO_APPROVE_FLAG)
            store.audit(
                PLATFORM_ACTOR,
                "endpoints:approve",
                job,
                f"{version} {path} ({AUTO_APPROVE_FLAG}, push by {deployed_by})",
            )
            lines.append(
                f"Public endpoint {path} of {job} {version}: approved ({AUTO_APPROVE_FLAG})"
            )
        else:
            lines.append(
                f"Public endpoint {path} of {job} {version} is pending: it needs a token until an"
                f" admin approves it with: {approve_command(ssh_command, job, version, path)}"
            )
    return lines
