"""The controller seen from the SSH receiver: the `gitreceiver.interface.Operations` it needs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from buildpacks.failures import shorten
from controller.commands import run_command
from controller.errors import DeployFailed
from controller.permissions import (
    ANY_VERSION,
    DEPLOY_JOB,
    DEPLOY_NEW_FAMILY,
    READ_JOB,
    Forbidden,
    Principal,
)
from controller.services import Services
from gitreceiver.interface import (
    CommandIO,
    DeployRejected,
    Identity,
    RefMoved,
    RefUpdate,
    RefUpdateFailed,
)


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _claimed_message(job: str, until: str) -> str:
    return (
        f"the job name {job!r} is held by another user's first deploy"
        f" (free again at {until} unless that deploy succeeds)"
    )


class SshOperations:
    def __init__(self, services: Services) -> None:
        self._services = services

    def identify(self, public_key: str, fingerprint: str) -> Principal | None:
        return self._services.accounts.identify(fingerprint)

    async def authorize(self, identity: Identity, service: str, job: str) -> str | None:
        """Before any pack moves: may this identity push to (or fetch) this job? Pushing a new
        job name needs deploy_new_family (the name is claimed only by the deploy itself, see
        `deploy`). Fetching needs read_job on the whole job: the repository holds every
        version's code."""
        assert isinstance(identity, Principal)
        permissions, store = self._services.permissions, self._services.store
        try:
            if service == "git-upload-pack":
                permissions.require(identity, READ_JOB, job)
                return None
            family = store.family(job)
            if family is None:
                permissions.require(identity, DEPLOY_NEW_FAMILY, job)
            elif family.claimed_until is not None and family.owner != identity.name:
                return _claimed_message(job, family.claimed_until)
            else:
                permissions.require(identity, DEPLOY_JOB, job, ANY_VERSION)
        except Forbidden as exc:
            return str(exc)
        return None

    async def allow_ref(self, identity: Identity, job: str, ref: str) -> str | None:
        """A branch or tag that does not deploy may only be stored in a job that exists: a
        new name is claimed by a successful deploy, not by parking a branch on it."""
        family = self._services.store.family(job)
        if family is None or family.claimed_until is not None:
            return f"{job} has not been deployed yet: its first push must deploy main or master"
        return None

    async def deploy(
        self,
        identity: Identity,
        job: str,
        commit: str,
        progress: Callable[[str], None],
        branch: RefUpdate,
    ) -> None:
        assert isinstance(identity, Principal)
        services = self._services
        store = services.store

        def claim() -> None:
            """Under the job's deploy lock, before the release exists: the branch must not
            have moved since the push began, and a new name is held for this deploy (and for a
            grace after it fails, for a retry), not for anyone else."""
            try:
                branch.check()
            except RefMoved as exc:
                raise DeployFailed(str(exc)) from None
            family = store.family(job)
            if family is not None and family.claimed_until is None:
                return
            held = store.claim_family(job, identity.name, until=_later(services.claim_grace))
            if held.owner != identity.name:
                raise DeployFailed(_claimed_message(job, held.claimed_until or ""))

        def permit(version: str) -> None:
            """Once the manifest names the version: grants may be narrowed to versions."""
            try:
                services.permissions.require(identity, DEPLOY_JOB, job, version)
            except Forbidden as exc:
                raise DeployFailed(str(exc)) from None

        def commit_point() -> None:
            """The branch moves: from here on the new release is the job's."""
            try:
                branch.apply()
            except RefUpdateFailed as exc:
                raise DeployFailed(str(exc)) from None

        try:
            release = await services.releases.deploy(
                job, commit, identity.name, progress, commit_point, permit=permit, claim=claim
            )
        except DeployFailed as exc:
            held = store.family(job)
            if held is not None and held.claimed_until is not None and held.owner == identity.name:
                # the grace for a retry runs from the failure
                store.claim_family(job, identity.name, until=_later(services.claim_grace))
            store.audit(identity.subject, "deploy:failed", job, f"{commit[:12]}: {exc}")
            raise DeployRejected(shorten(str(exc))) from None  # whole: builds:log
        held = store.family(job)
        if held is not None and held.claimed_until is not None:
            store.confirm_family(job)
            store.audit(identity.subject, "family:create", job)
        store.audit(
            identity.subject, "deploy", job, f"{release.version} {release.label} {commit[:12]}"
        )

    async def run_command(self, identity: Identity, argv: list[str], io: CommandIO) -> int:
        assert isinstance(identity, Principal)
        return await run_command(self._services, identity, argv, io)
