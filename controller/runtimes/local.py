"""The local runtime: each replica of a release is a child process on a free loopback port.

Each replica runs in a sandbox (see `sandbox.py`) as its job family's own user, under a cgroup
with the manifest's `resources` (see `limits.py`), with a fresh scratch space
(`instances/<name>/home`, its $HOME) and a private /tmp. Its output reaches the platform through
a pipe and is written to a log that rotates by size (see `log_files.py`).

Without a sandbox (`--insecure-single-user`) an instance runs as the platform's own user and can
read everything the platform can: that mode is for one person on their own machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from buildpacks.build import Artifact, DirectoryArtifact
from controller.runtimes.base import (
    EventKind,
    EventQueue,
    FailureReason,
    OwnedRelease,
    ReleaseFailed,
    ReleaseSpec,
    Replica,
    RunningRelease,
    RuntimeEvent,
    free_port,
    merged_lines,
)
from controller.runtimes.limits import AppliedLimits, Limiter, Limits, RlimitOnly
from controller.runtimes.log_files import LogSettings, RotatingLog, follow_lines, tail_lines
from controller.runtimes.probes import PROBE_TIMEOUT, probe_once, wait_until_ready
from controller.runtimes.sandbox import Sandbox

log = logging.getLogger("racetrack.runtime.local")

# Only these are passed through from the platform's environment: a job must not inherit the
# platform's secrets by accident.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
OUTPUT_CHUNK = 64 * 1024
SANDBOX_SETUP_TIMEOUT = 30.0  # bwrap reports the job's pid within this, or it failed
CGROUP_RELEASE_TIMEOUT = 5.0
CGROUP_RELEASE_INTERVAL = 0.05
FAILURE_TAIL_LINES = 5
CRASH_BACKOFF_FIRST = 1.0
CRASH_BACKOFF_MAX = 60.0

_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, in the platform


def _child_setup(parent: int, limits: AppliedLimits) -> Callable[[], None]:
    """Run in the child between fork and exec (so: as little as possible): SIGKILL when the
    platform dies, even by SIGKILL itself (and if it died before this line, exit now); then
    join the instance's cgroups and set its rlimits, before anything of the job runs."""

    def set_up() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        limits.join()

    return set_up


@dataclass(eq=False)  # identity semantics: replicas live in sets
class LocalReplica:
    """One process of a release."""

    name: str
    host: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process
    limits: AppliedLimits
    scratch: Path
    # leader of the job's process group (the sandbox's init, whose child is the job); without a
    # sandbox, the process we started
    job_pid: int = 0
    ready: bool = False
    stopping: bool = False
    output: asyncio.Future[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(eq=False)
class LocalRelease:
    """A release's replicas by index; a slot is None while its replica is being revived."""

    spec: ReleaseSpec
    slots: list[LocalReplica | None]
    restarts: int = 0
    stopped: bool = False
    reviving: set[asyncio.Task[None]] = field(default_factory=set)

    def replicas(self) -> list[Replica]:
        return [
            Replica(
                self.spec.replica_name(index),
                replica.url if replica is not None else "",
                replica is not None and replica.ready,
            )
            for index, replica in enumerate(self.slots)
        ]


class LocalRuntime:
    name = "local"
    artifact_kind = DirectoryArtifact.kind
    exclusive_ports = False  # every replica gets a free port of its own

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        shutdown_grace: float = 10.0,
        *,
        sandbox: Sandbox | None = None,
        limiter: Limiter | None = None,
        log_settings: LogSettings | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self._logs = data_dir / "logs"
        self._scratch = data_dir / "instances"
        self._artifacts = data_dir / "artifacts"
        self._host = host
        self._shutdown_grace = shutdown_grace
        self._ready_timeout = ready_timeout  # for a replica revived after a crash
        self.sandbox = sandbox
        self.limiter = limiter or RlimitOnly()
        self._log_settings = log_settings or LogSettings()
        self._releases: dict[str, LocalRelease] = {}
        # every replica process of this runtime, from its spawn until it is gone; held while
        # spawning, so that a reconcile never takes a process being started for a leftover
        self._processes: set[LocalReplica] = set()
        self._spawning = asyncio.Lock()
        self._watches: set[asyncio.Future[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._events = EventQueue()

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        return self._session

    def isolation(self, spec: ReleaseSpec) -> str:
        """One line for the push: how a replica is isolated and limited."""
        if self.sandbox is None:
            where = "not isolated (--insecure-single-user): it runs with the platform's rights"
        else:
            where = self.sandbox.describe(self.sandbox.uid_for(spec.family_slot))
        return f"{where}; limits: {self._describe_limits(spec)}"

    def _describe_limits(self, spec: ReleaseSpec) -> str:
        limits = Limits.of(spec.resources)
        if isinstance(self.limiter, RlimitOnly):
            described = self.limiter.apply(spec.replica_name(0), limits).description
        else:
            described = f"{limits.describe()} ({self.limiter.kind})"
        resources = spec.resources
        unreserved = [
            name for name in ("memory_min", "cpu_min") if getattr(resources, name, None)
        ]  # a machine of its own has no scheduler to reserve them with
        if unreserved:
            described += f"; resources.{' and '.join(unreserved)} cannot be reserved on local"
        return described

    # a release

    async def start(self, spec: ReleaseSpec) -> LocalRelease:
        release = LocalRelease(spec, [None] * spec.replicas)
        self._releases[spec.name] = release
        try:
            for index in range(spec.replicas):
                release.slots[index] = await self._start_replica(release, index)
        except BaseException:
            await asyncio.shield(self.stop(release))
            raise
        return release

    async def adopt(self, spec: ReleaseSpec) -> None:
        return None  # child processes end with the platform; they are always started anew

    async def wait_ready(self, release: RunningRelease, timeout: float) -> None:
        assert isinstance(release, LocalRelease)
        replicas = [r for r in release.slots if r is not None]
        await asyncio.gather(*(self._wait_replica(release, r, timeout) for r in replicas))

    def upstreams(self, release: RunningRelease) -> list[str]:
        assert isinstance(release, LocalRelease)
        return [r.url for r in release.slots if r is not None and r.ready]

    async def stop(self, release: RunningRelease) -> None:
        assert isinstance(release, LocalRelease)
        release.stopped = True
        for task in release.reviving:
            task.cancel()
        await asyncio.gather(*release.reviving, return_exceptions=True)
        await asyncio.gather(
            *(self._stop_replica(r) for r in release.slots if r is not None),
            return_exceptions=True,
        )
        if self._releases.get(release.spec.name) is release:
            del self._releases[release.spec.name]

    async def list_owned(self) -> list[OwnedRelease]:
        """Only what this process started: local replicas never outlive the platform."""
        return [
            OwnedRelease(name, r.spec.job, r.spec.version, r.spec.release)
            for name, r in self._releases.items()
        ]

    def events(self) -> AsyncIterator[RuntimeEvent]:
        return self._events.stream()

    async def restarts(self, release: RunningRelease) -> int:
        assert isinstance(release, LocalRelease)
        return release.restarts

    def logs(self, release: RunningRelease, tail: int, follow: bool) -> AsyncIterator[str]:
        assert isinstance(release, LocalRelease)
        spec = release.spec
        return merged_lines(
            {
                spec.replica_name(i): self._replica_logs(self._log_path(spec, i), tail, follow)
                for i in range(len(release.slots))
            }
        )

    async def reconcile(self, desired: Collection[str]) -> list[str]:
        """Job processes of this data dir that no release of this process holds (left by a
        platform that was killed: children die with the platform, but a job's own children may
        not) are killed; their cgroups and scratch spaces are removed. Held releases revive
        their own replicas, so nothing of theirs is brought back here."""
        async with self._spawning:  # nothing is being spawned while leftovers are sought
            held = list(self._processes)  # every live replica, serving or being revived
            own_groups = {group for r in held for group in (r.process.pid, r.job_pid)}
            removed = await asyncio.to_thread(self._kill_leftovers, own_groups)
            groups = await asyncio.to_thread(self.limiter.remove_strays, {r.name for r in held})
            removed += [f"cgroup {group}" for group in groups]
            held_scratch = {r.scratch.name for r in held}
            if self._scratch.is_dir():
                for scratch in self._scratch.iterdir():
                    if scratch.name not in held_scratch:
                        await asyncio.to_thread(_remove_scratch, scratch)
                        removed.append(f"scratch space {scratch.name}")
        return removed

    # a replica

    def _log_path(self, spec: ReleaseSpec, index: int) -> Path:
        return self._logs / spec.job / f"{spec.replica_name(index)}.log"

    async def _start_replica(self, release: LocalRelease, index: int) -> LocalReplica:
        async with self._spawning:
            return await self._spawn_replica(release, index)

    async def _spawn_replica(self, release: LocalRelease, index: int) -> LocalReplica:
        spec = release.spec
        name = spec.replica_name(index)
        artifact = spec.artifact
        assert isinstance(artifact, DirectoryArtifact)
        port = free_port(self._host)
        uid = self.sandbox.uid_for(spec.family_slot) if self.sandbox is not None else None
        scratch = await asyncio.to_thread(self._fresh_scratch, name, uid)
        home = scratch / "home"
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(spec.env)  # the job's: its manifest, secrets and config
        env.update({k: artifact.expand(v) for k, v in artifact.env.items()})  # wins over those
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": "/tmp" if self.sandbox is not None else str(scratch / "tmp"),
                "PORT": str(port),
                "LISTEN_HOST": self._host,
                # the job's own deadline ends before ours sends SIGKILL
                "RACETRACK_SHUTDOWN_GRACE": str(self._shutdown_grace * 0.8),
            }
        )
        argv = [artifact.expand(part) for part in artifact.command]
        cwd = Path(artifact.expand(artifact.cwd))
        limits = await asyncio.to_thread(self.limiter.apply, name, Limits.of(spec.resources))
        log_path = self._log_path(spec, index)
        output = await asyncio.to_thread(RotatingLog, log_path, self._log_settings)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        output.write(f"--- {stamp} starting {name} on port {port}\n".encode())
        try:
            process, job_pid = await self._spawn(artifact, argv, cwd, env, uid, home, name, limits)
        except BaseException:
            output.close()
            await self._release(limits, scratch)
            raise
        replica = LocalReplica(
            name, self._host, port, log_path, process, limits, scratch, job_pid=job_pid
        )
        assert process.stdout is not None
        replica.output = asyncio.ensure_future(_copy_output(process.stdout, output))
        self._processes.add(replica)
        watch = asyncio.ensure_future(self._watch(release, index, replica))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        log.info("started %s (pid %d, port %d)", name, job_pid, port)
        return replica

    def _fresh_scratch(self, name: str, uid: int | None) -> Path:
        """`instances/<name>/{home,tmp}`, empty, owned by the replica's user: nothing of an
        earlier replica of the same name (or of an earlier owner of the job name) is left."""
        scratch = self._scratch / name
        if scratch.exists():
            _remove_scratch(scratch)
        for directory in (scratch, scratch / "home", scratch / "tmp"):
            directory.mkdir(mode=0o700, parents=True)
            if uid is not None:
                os.chown(directory, uid, uid)
        return scratch

    async def _spawn(
        self,
        artifact: DirectoryArtifact,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        uid: int | None,
        home: Path,
        name: str,
        limits: AppliedLimits,
    ) -> tuple[asyncio.subprocess.Process, int]:
        setup = _child_setup(os.getpid(), limits)
        common: dict[str, Any] = {
            "env": env,
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.STDOUT,
            "start_new_session": True,  # its own process group: stop() signals the whole job
            "preexec_fn": setup,
        }
        if self.sandbox is None:
            process = await asyncio.create_subprocess_exec(*argv, cwd=cwd, **common)
            return process, process.pid
        info_read, info_write = os.pipe()
        command = self.sandbox.command(
            argv,
            uid=uid,
            cwd=cwd,
            read_only=[artifact.path, *_linked_from(artifact.path)],
            writable=[home],
            hostname=name[:63],
            home=home,
            info_fd=info_write,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv, pass_fds=command.pass_fds, **common
            )
        finally:
            command.close()
            os.close(info_write)
        try:
            job_pid = await asyncio.wait_for(_read_child_pid(info_read), SANDBOX_SETUP_TIMEOUT)
        except (TimeoutError, ValueError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise ReleaseFailed(
                FailureReason.START_FAILED, f"{name}: the sandbox did not start ({exc})"
            ) from None
        return process, job_pid

    async def _wait_replica(
        self, release: LocalRelease, replica: LocalReplica, timeout: float
    ) -> None:
        artifact = release.spec.artifact
        session = self._probe_session()
        exited = asyncio.ensure_future(replica.process.wait())

        async def failure() -> ReleaseFailed | None:
            if not exited.done():
                return None
            reason, why = self._exit_reason(release, replica, replica.process.returncode)
            tail = await self._tail(replica)
            return ReleaseFailed(reason, f"{replica.name} {why} before it was ready: {tail}")

        try:
            await wait_until_ready(
                replica.name,
                timeout,
                ready=lambda: probe_once(session, replica.name, replica.url, artifact.probe),
                failure=failure,
                log_tail=lambda: self._tail(replica),
                wake=exited,
            )
        finally:
            if not exited.done():
                exited.cancel()
        replica.ready = True

    async def _watch(self, release: LocalRelease, index: int, replica: LocalReplica) -> None:
        """When a replica exits unasked: its process groups are killed, and, if it was
        serving, the release routes around it and it is started again (with backoff) until it
        is ready or the release stops. One that exits before it was ready fails its start."""
        status = await replica.process.wait()
        self._kill_groups(replica)  # whatever the job started goes with it
        if replica.output is not None:
            await asyncio.shield(asyncio.wait([replica.output]))
        if replica.stopping:
            return
        _reason, why = self._exit_reason(release, replica, status)
        log.warning("%s %s: %s", replica.name, why, await self._tail(replica))
        if release.stopped or not replica.ready:
            return  # stopping, or wait_ready reports it
        replica.ready = False
        release.slots[index] = None
        release.restarts += 1
        await self._release_replica(replica)
        self._events.put(RuntimeEvent(EventKind.DIED, release.spec.name, replica.name, why))
        task = asyncio.ensure_future(self._revive(release, index))
        release.reviving.add(task)
        task.add_done_callback(release.reviving.discard)

    async def _revive(self, release: LocalRelease, index: int) -> None:
        delay = CRASH_BACKOFF_FIRST
        name = release.spec.replica_name(index)
        while not release.stopped:
            # backoff between attempts: a job that crashes at once must not spin the machine
            await asyncio.sleep(delay)
            try:
                replica = await self._start_replica(release, index)
            except (ReleaseFailed, OSError) as exc:
                delay = min(delay * 2, CRASH_BACKOFF_MAX)
                log.warning("%s did not start again (next try in %.0fs): %s", name, delay, exc)
                continue
            try:
                await self._wait_replica(release, replica, self._ready_timeout)
            except ReleaseFailed as exc:
                await self._stop_replica(replica)
                delay = min(delay * 2, CRASH_BACKOFF_MAX)
                log.warning("%s did not come back (next try in %.0fs): %s", name, delay, exc)
                continue
            except BaseException:
                await asyncio.shield(self._stop_replica(replica))
                raise
            release.slots[index] = replica
            self._events.put(RuntimeEvent(EventKind.RESTARTED, release.spec.name, name))
            log.info("%s is back", name)
            return

    def _exit_reason(
        self, release: LocalRelease, replica: LocalReplica, status: int | None
    ) -> tuple[FailureReason, str]:
        if replica.limits.out_of_memory():
            memory = release.spec.resources.memory_max if release.spec.resources else None
            return (
                FailureReason.OUT_OF_MEMORY,
                f"was killed: out of memory (resources.memory_max {memory})",
            )
        return FailureReason.CRASHED, f"exited with status {status}"

    def _kill_groups(self, replica: LocalReplica) -> None:
        for group in {replica.process.pid, replica.job_pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    async def _release_replica(self, replica: LocalReplica) -> None:
        self._processes.discard(replica)
        await self._release(replica.limits, replica.scratch)

    async def _release(self, limits: AppliedLimits, scratch: Path) -> None:
        """Remove the replica's cgroups (waiting, with a deadline, for the kernel to free
        their last tasks) and its scratch space."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CGROUP_RELEASE_TIMEOUT
        while not await asyncio.to_thread(limits.try_remove):
            if loop.time() > deadline:
                log.warning("cgroups of %s are still busy; removed at the next start", scratch)
                break
            await asyncio.sleep(CGROUP_RELEASE_INTERVAL)
        await asyncio.to_thread(_remove_scratch, scratch)

    async def _tail(self, replica: LocalReplica, lines: int = FAILURE_TAIL_LINES) -> str:
        found, _ = await asyncio.to_thread(
            tail_lines, replica.log_path, lines, self._log_settings.keep
        )
        text = (line.decode("utf-8", "replace").rstrip() for line in found)
        return " | ".join(line for line in text if line.strip())

    async def _replica_logs(self, path: Path, tail: int, follow: bool) -> AsyncIterator[str]:
        """The last `tail` lines (read from the end of the log, in a thread), then with
        `follow` new lines as they are written, across rotations and restarts."""
        lines, position = await asyncio.to_thread(tail_lines, path, tail, self._log_settings.keep)
        for line in lines:
            yield line.decode("utf-8", "replace")
        if follow:
            async for line in follow_lines(path, position, self._log_settings.keep):
                yield line.decode("utf-8", "replace")

    async def _stop_replica(self, replica: LocalReplica) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace; then SIGKILL to the
        groups anyway, so that no child of the job outlives it."""
        replica.stopping = True
        replica.ready = False
        process = replica.process
        if process.returncode is not None:
            # exited earlier (and its groups were killed then): its pid may be someone else's now
            await self._release_replica(replica)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(replica.job_pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._shutdown_grace)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0fs", replica.name, self._shutdown_grace)
        self._kill_groups(replica)
        await process.wait()
        if replica.output is not None:
            await asyncio.shield(asyncio.wait([replica.output]))
        await self._release_replica(replica)
        log.info("stopped %s (status %s)", replica.name, process.returncode)

    # the platform's own leftovers

    def _kill_leftovers(self, own_groups: set[int]) -> list[str]:
        marker = f"JOB_DIR={self._artifacts}/".encode()
        own_group = os.getpgid(0)
        groups: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                variables = (entry / "environ").read_bytes().split(b"\0")
                if any(v.startswith(marker) for v in variables):
                    groups[os.getpgid(int(entry.name))] = entry.name
            except (OSError, ProcessLookupError):
                continue  # gone meanwhile, or not ours to read
        for group in (own_group, *own_groups):
            groups.pop(group, None)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        return [f"process group {group}" for group in groups]

    async def artifact_available(self, artifact: Artifact) -> bool:
        return isinstance(artifact, DirectoryArtifact) and artifact.path.is_dir()

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        return []  # release directories are small (venvs are shared) and are kept

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(release) for release in list(self._releases.values())))
        for watch in self._watches:
            watch.cancel()
        self._events.close()
        if self._session is not None:
            await self._session.close()


def _remove_scratch(scratch: Path) -> None:
    """Remove an instance's scratch space, whatever modes the job left in it (a job of the
    platform's own uid could make a directory unreadable to stop its removal)."""
    pending = [str(scratch)]
    while pending:  # a loop, not recursion: the job decides how deep it goes
        directory = pending.pop()
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
        try:
            with os.scandir(directory) as entries:
                pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    shutil.rmtree(scratch, ignore_errors=True)


def _linked_from(directory: Path) -> list[Path]:
    """What the links at the top of a release directory lead to (its shared dependency
    environment): the sandbox must show those too."""
    targets = []
    for entry in directory.iterdir():
        if entry.is_symlink() and entry.exists():
            targets.append(entry.resolve())
    return targets


async def _read_child_pid(fd: int) -> int:
    """The job's pid from bwrap's --info-fd JSON (the descriptor is closed afterwards);
    ValueError if bwrap ended without one."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        data = b""
        while not data.rstrip().endswith(b"}"):
            chunk = await reader.read(4096)
            if not chunk:
                raise ValueError("bubblewrap exited during set-up; see the instance's log")
            data += chunk
        return int(json.loads(data)["child-pid"])
    finally:
        transport.close()


async def _copy_output(stream: asyncio.StreamReader, output: RotatingLog) -> None:
    """The instance's stdout and stderr into its rotating log, until the pipe closes. Output
    that cannot be written (a full disk) is dropped, never left in the pipe: a job must not
    block on its own log."""
    failing = False
    try:
        while chunk := await stream.read(OUTPUT_CHUNK):
            try:
                output.write(chunk)
                failing = False
            except OSError as exc:
                if not failing:
                    log.warning("cannot write %s (output dropped): %s", output.path, exc)
                failing = True
    finally:
        output.close()
