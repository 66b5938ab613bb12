"""The SSH server: public-key authentication only, then git or an admin command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncssh
from dulwich.errors import GitProtocolError, HangupException

from gitreceiver.channel import BlockingChannel, ChannelClosed, ChannelIdle
from gitreceiver.commands import AdminCommand, CommandError, GitCommand, parse_exec_command
from gitreceiver.git_service import run_git_service
from gitreceiver.interface import Identity, Operations
from gitreceiver.pack_limits import PackLimits
from gitreceiver.repos import RepoStore
from gitreceiver.throttle import AuthThrottle

log = logging.getLogger("racetrack.gitreceiver")


def _exec_commands_keep_invalid_utf8() -> None:
    """asyncssh refuses an exec request whose command is not UTF-8 before any code of ours
    sees it, and the client only learns "exec request failed". Decode such bytes with
    surrogateescape instead, so that the command parser refuses them with a reason."""
    channel = asyncssh.SSHServerChannel
    if getattr(channel, "_racetrack_exec_decoding", False):
        return

    def _process_exec_request(self: Any, packet: Any) -> bool:
        command = packet.get_string()
        packet.check_end()
        return bool(self._start_session(command=command.decode("utf-8", "surrogateescape")))

    channel._process_exec_request = _process_exec_request  # type: ignore[method-assign]
    channel._racetrack_exec_decoding = True  # type: ignore[attr-defined]


_exec_commands_keep_invalid_utf8()

NO_SHELL_MESSAGE = (
    "Racetrack has no interactive shell.\n"
    "Push with git, or run a command: ssh -p PORT git@HOST help\n"
)


class _Session(asyncssh.SSHServer):
    """One SSH connection: remembers whose key authenticated it, and reports refusals to the
    throttle (see there for the rules)."""

    def __init__(
        self, operations: Operations, throttle: AuthThrottle, users: UserConnections
    ) -> None:
        self._operations = operations
        self._throttle = throttle
        self._users = users
        self._counted_user: str | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self.identity: Identity | None = None
        self.address = "?"
        self.peer = "?"
        self._pending = False  # counted by the throttle as not yet authenticated
        self._over_limit: str | None = None  # why this connection is refused, if it is
        self._refused_keys = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._pending = True
        self._over_limit = self._throttle.opened(self.address)
        if self._throttle.crowded:
            log.warning("dropped %s at once: %s", self.peer, self._over_limit)
            asyncio.get_running_loop().call_soon(conn.abort)

    def _settle(self) -> None:
        if self._pending:
            self._pending = False
            self._throttle.settled(self.address)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending and not self._refused_keys and not self._over_limit:
            self._throttle.failed(self.address)
        self._settle()
        if self._counted_user is not None:
            self._users.closed(self._counted_user)
            self._counted_user = None

    def _disconnect(self, code: int, reason: str) -> None:
        log.warning("disconnected %s: %s", self.peer, reason)
        assert self._conn is not None
        self._conn.disconnect(code, reason)

    def begin_auth(self, username: str) -> bool:
        if self._over_limit:
            self._disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, self._over_limit)
        return True  # authentication is always required

    def auth_completed(self) -> None:
        self._settle()
        self._throttle.succeeded(self.address)
        assert self.identity is not None
        name = self.identity.name
        if not self._users.opened(name):
            self._disconnect(
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                f"you have {self._users.per_user} connections open already, the limit per user",
            )
            return
        self._counted_user = name

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        public = key.export_public_key("openssh").decode("ascii").strip()
        identity = self._operations.identify(public, key.get_fingerprint("sha256"))
        if identity is not None:
            self.identity = identity
            return True
        log.info("refused unknown key %s from %s", key.get_fingerprint("sha256"), self.peer)
        delay = self._throttle.delay(self.address)
        self._throttle.failed(self.address)
        self._refused_keys += 1
        if delay > 0:
            log.warning("slowing down %s: %.0fs before its refusal", self.address, delay)
            await asyncio.sleep(delay)  # the penalty itself, not a wait for a condition
        if self._refused_keys >= self._throttle.per_connection:
            self._disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )
        return False


class UserConnections:
    """Authenticated SSH connections per user: each holds a descriptor and can open channels,
    so one user's are capped (the unauthenticated ones are the throttle's)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def opened(self, user: str) -> bool:
        """Count a connection of `user`; False (not counted) if it is over the cap."""
        if self._open.get(user, 0) >= self.per_user:
            return False
        self._open[user] = self._open.get(user, 0) + 1
        return True

    def closed(self, user: str) -> None:
        left = self._open.get(user, 1) - 1
        if left > 0:
            self._open[user] = left
        else:
            self._open.pop(user, None)


class _ProcessIO:
    """An admin command's view of the SSH channel (implements interface.CommandIO)."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._process = process

    def out(self, text: str) -> None:
        if not self.closed:
            self._process.stdout.write(text.encode("utf-8", "replace"))

    def err(self, text: str) -> None:
        if not self.closed:
            self._process.stderr.write(text.encode("utf-8", "replace"))

    async def read_input(self, limit: int) -> bytes:
        data = await self._process.stdin.read(limit + 1)
        chunks = [data]
        total = len(data)
        while data and total <= limit:
            data = await self._process.stdin.read(limit + 1 - total)
            chunks.append(data)
            total += len(data)
        if total > limit:
            raise ValueError(f"input is larger than {limit} bytes")
        return b"".join(chunks)

    async def drain(self) -> None:
        if not self.closed:
            await self._process.stdout.drain()

    @property
    def closed(self) -> bool:
        return self._process.stdout.is_closing()


class GitReceiver:
    """Serves `ssh://git@HOST:PORT/<job>` and admin commands over SSH."""

    def __init__(
        self,
        operations: Operations,
        repos: RepoStore,
        host_key: asyncssh.SSHKey,
        *,
        keepalive_interval: float = 15.0,
        max_git_sessions: int = 64,
        max_git_sessions_per_user: int = 8,
        max_unauthenticated: int = 200,
        max_connections_per_user: int = 32,
        idle_timeout: float = 120.0,
        max_push_bytes: int = 100 * 1024 * 1024,
        pack_limits: PackLimits | None = None,
    ) -> None:
        self._operations = operations
        self._repos = repos
        self._host_key = host_key
        self._keepalive_interval = keepalive_interval
        self._max_push_bytes = max_push_bytes
        self._pack_limits = pack_limits or PackLimits()
        self._idle_timeout = idle_timeout
        self._max_unauthenticated = max_unauthenticated
        self._max_connections_per_user = max_connections_per_user
        self._executor = ThreadPoolExecutor(max_git_sessions, thread_name_prefix="git")
        self._sessions = GitSessions(max_git_sessions, max_git_sessions_per_user)
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; return the bound port (useful when `port` is 0)."""
        throttle = AuthThrottle(unauthenticated_total=self._max_unauthenticated)
        users = UserConnections(self._max_connections_per_user)
        self._server = await asyncssh.create_server(
            lambda: _Session(self._operations, throttle, users),
            host,
            port,
            server_host_keys=[self._host_key],
            process_factory=self._handle_process,
            encoding=None,
            allow_pty=False,
            x11_forwarding=False,
            agent_forwarding=False,
            allow_scp=False,
            keepalive_interval=self._keepalive_interval,
            login_timeout=30,
            server_version="Racetrack",
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _handle_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        session: Any = process.get_extra_info("connection").get_owner()
        identity: Identity = session.identity
        status = 1
        try:
            status = await self._run(process, identity, process.command)
        except Exception:
            # only the command's name: its arguments may hold secrets (config:set KEY=VALUE)
            name = (process.command or "").split(" ", 1)[0]
            log.exception("command %r of %s failed", name, identity.name)
            _write_error(process, "internal error (see the server log)")
        finally:
            process.exit(status)

    async def _run(
        self, process: asyncssh.SSHServerProcess[bytes], identity: Identity, command: str | None
    ) -> int:
        if command is None:
            _write_error(process, NO_SHELL_MESSAGE.rstrip("\n"))
            return 1
        try:
            parsed = parse_exec_command(command)
        except CommandError as exc:
            _write_error(process, str(exc))
            return 1
        if isinstance(parsed, AdminCommand):
            return await self._operations.run_command(
                identity, list(parsed.argv), _ProcessIO(process)
            )
        return await self._serve_git(process, identity, parsed)

    async def _serve_git(
        self, process: asyncssh.SSHServerProcess[bytes], identity: Identity, command: GitCommand
    ) -> int:
        refused = await self._operations.authorize(identity, command.service, command.job)
        if refused is not None:
            _write_error(process, refused)
            return 1
        if command.service == "git-upload-pack" and not self._repos.exists(command.job):
            _write_error(process, f"no repository for job {command.job!r}; push to create it")
            return 1
        try:
            with self._sessions.open(identity.name, command.job):
                return await self._run_git(process, identity, command)
        except SessionRefused as exc:
            _write_error(process, str(exc))
            return 1
        finally:
            if command.service == "git-receive-pack" and not self._sessions.busy(command.job):
                # a first push that stored nothing leaves no repository behind
                self._repos.remove_if_empty(command.job)

    async def _run_git(
        self, process: asyncssh.SSHServerProcess[bytes], identity: Identity, command: GitCommand
    ) -> int:
        loop = asyncio.get_running_loop()
        repo = self._repos.ensure(command.job)
        log.info("%s by %s on %s", command.service, identity.name, command.job)
        try:
            return await loop.run_in_executor(
                self._executor,
                lambda: run_git_service(
                    command.service,
                    repo,
                    BlockingChannel(process, loop, self._idle_timeout),
                    job=command.job,
                    identity=identity,
                    operations=self._operations,
                    loop=loop,
                    max_push_bytes=self._max_push_bytes,
                    pack_limits=self._pack_limits,
                ),
            )
        except ChannelIdle as exc:
            log.info("%s of %s by %s: %s", command.service, command.job, identity.name, exc)
            _write_error(process, f"{exc}: the session is closed")
            return 1
        except (ChannelClosed, HangupException):
            log.info("%s of %s: the client went away", command.service, command.job)
            return 1
        except GitProtocolError as exc:
            _write_error(process, f"git protocol error: {exc}")
            return 1
        finally:
            repo.close()


class SessionRefused(Exception):
    """A git session over a cap; the message names it."""


class GitSessions:
    """Git sessions running now: each holds a worker thread while it runs, so their number is
    capped, in all and per user (one user's stalled clients must not hold every thread)."""

    def __init__(self, total: int, per_user: int) -> None:
        self._total = total
        self._per_user = per_user
        self._by_user: dict[str, int] = {}
        self._by_job: dict[str, int] = {}

    @contextlib.contextmanager
    def open(self, user: str, job: str) -> Iterator[None]:
        if self._by_user.get(user, 0) >= self._per_user:
            raise SessionRefused(
                f"you have {self._per_user} git sessions open already, the limit per user;"
                " let one finish and try again"
            )
        if sum(self._by_user.values()) >= self._total:
            raise SessionRefused(
                f"the server runs {self._total} git sessions already, its limit; try again shortly"
            )
        self._by_user[user] = self._by_user.get(user, 0) + 1
        self._by_job[job] = self._by_job.get(job, 0) + 1
        try:
            yield
        finally:
            _decrement(self._by_user, user)
            _decrement(self._by_job, job)

    def busy(self, job: str) -> bool:
        return job in self._by_job


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def _write_error(process: asyncssh.SSHServerProcess[bytes], message: str) -> None:
    with contextlib.suppress(OSError):
        process.stderr.write(f"racetrack: {message}\n".encode())
