"""The controller seen from the SSH receiver: the `gitreceiver.interface.Operations` it needs."""

from __future__ import annotations

from collections.abc import Callable

from controller.commands import run_command
from controller.deployer import DeployFailed
from controller.services import Services
from controller.store import User
from gitreceiver.interface import CommandIO, DeployRejected, Identity, RefUpdate


class SshOperations:
    def __init__(self, services: Services) -> None:
        self._services = services

    def identify(self, public_key: str, fingerprint: str) -> User | None:
        return self._services.accounts.identify(fingerprint)

    async def deploy(
        self,
        identity: Identity,
        job: str,
        commit: str,
        progress: Callable[[str], None],
        branch: RefUpdate,
    ) -> None:
        assert isinstance(identity, User)
        try:
            await self._services.deployer.deploy(job, commit, identity.name, progress, branch)
        except DeployFailed as exc:
            raise DeployRejected(str(exc)) from None

    async def run_command(self, identity: Identity, argv: list[str], io: CommandIO) -> int:
        assert isinstance(identity, User)
        return await run_command(self._services, identity, argv, io)
