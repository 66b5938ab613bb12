"""git-receive-pack and git-upload-pack over dulwich, with deploys before refs move.

The pack is stored first; then each ref command is decided. A push to main/master deploys the
commit and the branch moves (compare-and-swap) inside the deploy, after the new release is
ready and before the router switches to it, so that concurrent pushes to one job cannot leave
the branch naming something other than what serves. When the deploy fails, the ref is reported
`ng` with the reason and stays where it was.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from dulwich.errors import ApplyDeltaError, ChecksumMismatch, ObjectFormatException
from dulwich.file import FileLocked
from dulwich.object_store import PackInputTooLarge
from dulwich.protocol import (
    CAPABILITY_ATOMIC,
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
    ReceivableProtocol,
)
from dulwich.refs import RefsContainer, check_ref_format
from dulwich.repo import Repo
from dulwich.server import Backend, BackendRepo, ReceivePackHandler, UploadPackHandler

from gitreceiver.channel import BlockingChannel, ChannelClosed
from gitreceiver.interface import (
    DeployRejected,
    Identity,
    Operations,
    RefMoved,
    RefUpdateFailed,
)
from gitreceiver.pack_limits import PackGuard, PackLimits, PackTooLarge
from gitreceiver.quarantine import admit, quarantine

log = logging.getLogger("racetrack.gitreceiver")

ZERO_SHA = b"0" * 40
MAX_PENDING_LINES = 10_000
DEPLOY_BRANCHES = (b"refs/heads/main", b"refs/heads/master")
# What a broken or hostile pack can raise while dulwich reads it.
PACK_ERRORS = (
    OSError,
    ChecksumMismatch,
    ApplyDeltaError,
    AssertionError,
    socket.error,
    zlib.error,
    ObjectFormatException,
)


class _SingleRepoBackend(Backend):
    """The repository was resolved from the job name already; dulwich gets exactly that one."""

    def __init__(self, repo: Repo) -> None:
        self._repo = repo

    def open_repository(self, path: str) -> BackendRepo:
        return self._repo  # type: ignore[return-value]


class RefChange:
    """Moving (or deleting) one ref from `old` to `new` by compare-and-swap. For a deploy
    branch the deploy calls `check` and `apply` under its job lock (gitreceiver.RefUpdate)."""

    def __init__(self, refs: RefsContainer, ref: bytes, old: bytes, new: bytes) -> None:
        self._refs = refs
        self._ref = ref
        self._old = old
        self._new = new

    @property
    def branch(self) -> str:
        return self._ref.removeprefix(b"refs/heads/").decode("utf-8", "replace")

    def _current(self) -> bytes:
        try:
            return self._refs[self._ref]
        except KeyError:
            return ZERO_SHA

    def _moved(self) -> RefMoved:
        current = self._current()
        where = "was deleted" if current == ZERO_SHA else f"moved to {current[:12].decode()}"
        return RefMoved(f"{self.branch} {where} during this push; fetch and push again")

    def check(self) -> None:
        """Raise RefMoved if the branch is no longer where the pusher saw it."""
        if self._current() != self._old:
            raise self._moved()

    def apply(self) -> None:
        """Compare-and-swap the ref; raise RefMoved if someone else moved it first."""
        try:
            if self._new == ZERO_SHA:
                done = self._refs.remove_if_equals(self._ref, self._old)  # type: ignore[arg-type]
            else:
                done = self._refs.set_if_equals(self._ref, self._old, self._new)  # type: ignore[arg-type]
        except FileLocked:
            raise RefUpdateFailed(
                f"{self._ref.decode('utf-8', 'replace')} is locked: its .lock file exists in the"
                " job's repository (left by a crashed writer?); an operator must remove it"
            ) from None
        if not done:
            raise self._moved()


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
        max_push_bytes: int,
        pack_limits: PackLimits,
    ) -> None:
        super().__init__(backend, args, proto)
        self._max_push_bytes = max_push_bytes
        self._pack_limits = pack_limits
        self._job = job
        self._identity = identity
        self._operations = operations
        self._loop = loop
        self._client_gone = False
        self.failed = False

    def capabilities(self) -> list[bytes]:
        # A deploy cannot be rolled back with the other refs of a push, so no --atomic.
        return [c for c in super().capabilities() if c != CAPABILITY_ATOMIC]

    def progress(self, text: str) -> None:
        """A `remote:` line for the pusher; a vanished client never stops the deploy."""
        if self._client_gone or not self.has_capability(CAPABILITY_SIDE_BAND_64K):
            return
        try:
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, text.encode("utf-8", "replace"))
        except ChannelClosed:
            self._client_gone = True
            log.info("pusher of %s disconnected; the deploy carries on", self._job)

    def _apply_pack(self, refs: list[tuple[Any, Any, Any]]) -> Iterator[tuple[bytes, bytes]]:
        if any(new != ZERO_SHA for _old, new, _ref in refs):
            # what the pack inflates to is bounded while it streams in, before dulwich
            # inflates any object in memory (a small pack may hold a huge blob of zeros)
            read_all, read_some = PackGuard(self._pack_limits).wrap(
                self.proto.read, self.proto.recv
            )
            try:
                with quarantine(self.repo) as incoming:  # type: ignore[arg-type]
                    incoming.add_thin_pack(read_all, read_some, max_input_size=self._max_push_bytes)
                    admit(incoming, self.repo)  # type: ignore[arg-type]
            except PackTooLarge as exc:
                yield (b"unpack", str(exc).encode("utf-8", "replace"))
                return
            except PackInputTooLarge:
                limit = self._max_push_bytes
                yield (b"unpack", f"the push is larger than the limit of {limit} bytes".encode())
                return
            except PACK_ERRORS as exc:
                yield (b"unpack", " ".join(str(exc).split()).encode("utf-8", "replace"))
                return
            except (
                TypeError,
                ValueError,
                IndexError,
                OverflowError,
            ):  # dulwich reading past the end
                yield (b"unpack", b"the pack ended early or is malformed")
                return
        yield (b"unpack", b"ok")
        for old, new, ref in refs:
            yield (ref, self._update_ref(ref, old, new))

    def _update_ref(self, ref: bytes, old: bytes, new: bytes) -> bytes:
        if not ref.startswith(b"refs/") or not check_ref_format(ref):  # type: ignore[arg-type]
            return b"funny refname"
        if new != ZERO_SHA and (missing := self._not_pointable(ref, new)):
            return missing
        change = RefChange(self.repo.refs, ref, old, new)
        if ref in DEPLOY_BRANCHES:
            if new == ZERO_SHA:
                return b"deleting the deployed branch is refused; use jobs:delete to remove a job"
            return self._deploy(change, new.decode("ascii"))
        refused = asyncio.run_coroutine_threadsafe(
            self._operations.allow_ref(self._identity, self._job, ref.decode("utf-8", "replace")),
            self._loop,
        ).result()
        if refused is not None:
            return refused.encode("utf-8", "replace")
        try:
            change.apply()
        except RefUpdateFailed as exc:
            return str(exc).encode("utf-8", "replace")
        except OSError as exc:
            log.warning("cannot update %r of %s: %r", ref, self._job, exc)
            return b"failed to write the ref (see the server log)"
        if ref.startswith(b"refs/heads/") and new != ZERO_SHA:
            self.progress(
                f"Branch {change.branch!r} stored, not deployed: only main and master deploy.\n"
                f"To deploy it: git push <remote> {change.branch}:main\n"
            )
        return b"ok"

    def _not_pointable(self, ref: bytes, new: bytes) -> bytes | None:
        """Why `ref` may not point at `new` (None if it may): the object must have arrived,
        and a branch must point at a commit."""
        try:
            kind = self.repo.object_store[new].type_name
        except (KeyError, ValueError):
            return b"missing object " + new
        if ref.startswith(b"refs/heads/") and kind != b"commit":
            return b"not a commit: " + new
        return None

    def _deploy(self, branch: RefChange, commit: str) -> bytes:
        lines = _PusherLines()
        future = asyncio.run_coroutine_threadsafe(
            self._operations.deploy(self._identity, self._job, commit, lines.put, branch),
            self._loop,
        )
        future.add_done_callback(lambda _future: lines.end())
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
        return b"ok"

    def _report_status(self, status: Sequence[tuple[bytes, bytes]]) -> None:
        self.failed = any(message != b"ok" for _name, message in status)
        super()._report_status(status)


class _PusherLines:
    """Deploy output on its way to a pusher who may read slower than the build prints: at most
    MAX_PENDING_LINES wait; beyond that lines are counted, not kept, and the pusher is told how
    many it missed (the release keeps the output: builds:log)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._dropped = 0
        self._lock = threading.Lock()

    def put(self, line: str) -> None:
        if self._queue.qsize() >= MAX_PENDING_LINES:
            with self._lock:
                self._dropped += 1
            return
        self._queue.put(line)

    def end(self) -> None:
        self._queue.put(None)

    def get(self) -> str | None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            return f"[... {dropped} lines not shown: builds:log has the whole output]"
        return self._queue.get()


def run_git_service(
    service: str,
    repo: Repo,
    channel: BlockingChannel,
    *,
    job: str,
    identity: Identity,
    operations: Operations,
    loop: asyncio.AbstractEventLoop,
    max_push_bytes: int,
    pack_limits: PackLimits,
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
            max_push_bytes=max_push_bytes,
            pack_limits=pack_limits,
        )
    else:
        handler = UploadPackHandler(backend, [job], proto)
    handler.handle()
    return 1 if getattr(handler, "failed", False) else 0
