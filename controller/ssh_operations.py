"""The controller seen from the SSH receiver: the `gitreceiver.interface.Operations` it needs."""

from __future__ import annotations

from collections.abc import Callable

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
from gitreceiver.interface import CommandIO, DeployRejected, Identity, RefUpdate


class SshOperations:
    def __init__(self, services: Services) -> None:
        self._services = services

    def identify(self, public_key: str, fingerprint: str) -> Principal | None:
        return self._services.accounts.identify(fingerprint)

    async def authorize(self, identity: Identity, service: str, job: str) -> str | None:
        """Before any pack moves: may this identity push to (or fetch) this job? A push that
        creates a family needs deploy_new_family, and makes the pusher its owner. Fetching needs
        read_job on the whole job: the repository holds every version's code."""
        assert isinstance(identity, Principal)
        permissions, store = self._services.permissions, self._services.store
        try:
            if service == "git-upload-pack":
                permissions.require(identity, READ_JOB, job)
            elif store.family(job) is None:
                permissions.require(identity, DEPLOY_NEW_FAMILY, job)
                if store.create_family(job, identity.name).owner == identity.name:
                    store.audit(identity.subject, "family:create", job)
                else:  # someone else's push created it a moment ago
                    permissions.require(identity, DEPLOY_JOB, job, ANY_VERSION)
            else:
                permissions.require(identity, DEPLOY_JOB, job, ANY_VERSION)
        except Forbidden as exc:
            return str(exc)
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

        def permit(version: str) -> None:
            """Once the manifest names the version: grants may be narrowed to versions."""
            try:
                services.permissions.require(identity, DEPLOY_JOB, job, version)
            except Forbidden as exc:
                raise DeployFailed(str(exc)) from None

        try:
            release = await services.deployer.deploy(
                job, commit, identity.name, progress, branch, permit=permit
            )
        except DeployFailed as exc:
            services.store.audit(identity.subject, "deploy:failed", job, f"{commit[:12]}: {exc}")
            raise DeployRejected(str(exc)) from None
        services.store.audit(
            identity.subject, "deploy", job, f"{release.version} {release.label} {commit[:12]}"
        )

    async def run_command(self, identity: Identity, argv: list[str], io: CommandIO) -> int:
        assert isinstance(identity, Principal)
        return await run_command(self._services, identity, argv, io)
