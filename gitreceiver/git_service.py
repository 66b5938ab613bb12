"""git-receive-pack and git-upload-pack over dulwich, with deploys before refs move.

dulwich calls `_on_update` for each ref after the pack is stored and before the ref is set, so a
deploy run there has pre-receive semantics: when it fails the ref is reported `ng` with the
reason and stays where it was, and the branch always names what is deployed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Sequence
from typing import Any

from dulwich.protocol import (
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
    ReceivableProtocol,
)
from dulwich.repo import Repo
from dulwich.server import Backend, BackendRepo, ReceivePackHandler, UploadPackHandler

from gitreceiver.channel import BlockingChannel, ChannelClosed
from gitreceiver.interface import DeployRejected, Identity, Operations

log = logging.getLogger("racetrack.gitreceiver")

ZERO_SHA = b"0" * 40
DEPLOY_BRANCHES = (b"refs/heads/main", b"refs/heads/master")


class _SingleRepoBackend(Backend):
    """The repository was resolved from the job name already; dulwich gets exactly that one."""

    def __init__(self, repo: Repo) -> None:
        self._repo = repo

    def open_repository(self, path: str) -> BackendRepo:
        return self._repo  # type: ignore[return-value]


class DeployingReceivePackHandler(ReceivePackHandler):
    """Receive-pack that deploys pushes to main/master before their refs move."""

    def __init__(
        self,
        backend: Backend,
        args: Sequence[str],
        proto: ReceivableProtocol,
        *,
        job: str,
        identity: Identity,
        operations: Operations,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(backend, args, proto)
        self._job = job
        self._identity = identity
        self._operations = operations
        self._loop = loop
        self._client_gone = False
        self.failed = False

    def progress(self, text: str) -> None:
        """A `remote:` line for the pusher; a vanished client never stops the deploy."""
        if self._client_gone or not self.has_capability(CAPABILITY_SIDE_BAND_64K):
            return
        try:
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, text.encode("utf-8", "replace"))
        except ChannelClosed:
            self._client_gone = True
            log.info("pusher of %s disconnected; the deploy carries on", self._job)

    def _on_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
        branch = ref_name.removeprefix(b"refs/heads/").decode("utf-8", "replace")
        if ref_name in DEPLOY_BRANCHES:
            if new_sha == ZERO_SHA:
                return b"deleting the deployed branch is refused; use jobs:delete to remove a job"
            return self._deploy(new_sha.decode("ascii"))
        if ref_name.startswith(b"refs/heads/") and new_sha != ZERO_SHA:
            self.progress(
                f"Branch {branch!r} stored, not deployed: only main and master deploy.\n"
                f"To deploy it: git push <remote> {branch}:main\n"
            )
        return None

    def _deploy(self, commit: str) -> bytes | None:
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(
            self._operations.deploy(self._identity, self._job, commit, lines.put), self._loop
        )
        future.add_done_callback(lambda _future: lines.put(None))
        while (line := lines.get()) is not None:
            self.progress(line if line.endswith("\n") else line + "\n")
        try:
            future.result()
        except DeployRejected as exc:
            reason = " ".join(str(exc).split()) or "deploy failed"
            return reason.encode("utf-8", "replace")[:1000]
        except Exception:
            log.exception("deploy of %s %s crashed", self._job, commit)
            return b"deploy failed: internal error (see the server log)"
        return None

    def _report_status(self, status: Sequence[tuple[bytes, bytes]]) -> None:
        self.failed = any(message != b"ok" for _name, message in status)
        super()._report_status(status)


def run_git_service(
    service: str,
    repo: Repo,
    channel: BlockingChannel,
    *,
    job: str,
    identity: Identity,
    operations: Operations,
    loop: asyncio.AbstractEventLoop,
) -> int:
    """Serve one git command to completion (blocking; run it in a worker thread)."""
    proto = ReceivableProtocol(channel.recv, channel.write)
    backend = _SingleRepoBackend(repo)
    handler: Any
    if service == "git-receive-pack":
        handler = DeployingReceivePackHandler(
            backend,
            [job],
            proto,
            job=job,
            identity=identity,
            operations=operations,
            loop=loop,
        )
    else:
        handler = UploadPackHandler(backend, [job], proto)
    handler.handle()
    return 1 if getattr(handler, "failed", False) else 0
