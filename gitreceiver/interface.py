"""What the receiver needs from the platform, injected by the controller.

The receiver knows SSH and git; deciding who a key belongs to, deploying a commit and running
an admin command are the controller's business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class DeployRejected(Exception):
    """A deploy failed; the message (one line) becomes the reason the push was refused."""


class RefUpdateFailed(Exception):
    """A ref could not be moved; the message (one line) says why."""


class RefMoved(RefUpdateFailed):
    """The branch a push wants to move has moved since the pusher looked."""


class RefUpdate(Protocol):
    """The branch move a push asks for, carried out by the deploy at its commit point."""

    @property
    def branch(self) -> str: ...

    def check(self) -> None:
        """Raise RefMoved if the branch already moved (checked early, to skip a wasted build)."""
        ...

    def apply(self) -> None:
        """Compare-and-swap the branch to the pushed commit; raise RefMoved if it moved,
        RefUpdateFailed if it cannot be written."""
        ...


class Identity(Protocol):
    """Whoever a public key belongs to."""

    @property
    def name(self) -> str: ...


class CommandIO(Protocol):
    """The SSH channel as an admin command sees it."""

    def out(self, text: str) -> None: ...

    def err(self, text: str) -> None: ...

    async def read_input(self, limit: int) -> bytes:
        """All of stdin, refusing more than `limit` bytes."""
        ...

    async def drain(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class Operations(Protocol):
    def identify(self, public_key: str, fingerprint: str) -> Identity | None:
        """The identity owning this OpenSSH public key, or None to refuse it."""
        ...

    async def authorize(self, identity: Identity, service: str, job: str) -> str | None:
        """Before anything is read or written: None to go ahead, else why not (one line)."""
        ...

    async def allow_ref(self, identity: Identity, job: str, ref: str) -> str | None:
        """Before a ref that does not deploy is stored: None to go ahead, else why not."""
        ...

    async def deploy(
        self,
        identity: Identity,
        job: str,
        commit: str,
        progress: Callable[[str], None],
        branch: RefUpdate,
    ) -> None:
        """Deploy `commit` of `job`, moving `branch` once the release is ready and before it
        serves; raise DeployRejected to refuse the push (the branch then stays put)."""
        ...

    async def run_command(self, identity: Identity, argv: list[str], io: CommandIO) -> int:
        """Run an admin command; return its exit status."""
        ...
