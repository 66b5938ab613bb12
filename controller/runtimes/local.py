"""The local runtime: each instance is a child process on a free loopback port.

Each instance runs in a sandbox (see `sandbox.py`) as its job family's own user, under a cgroup
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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from buildpacks.build import DirectoryArtifact
from controller.runtimes.base import CrashHandler, Instance, InstanceFailed, InstanceSpec, free_port
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


@dataclass(eq=False)  # identity semantics: instances live in a set
class LocalInstance:
    spec: InstanceSpec
    host: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process
    limits: AppliedLimits
    scratch: Path
    # leader of the job's process group (the sandbox's init, whose child is the job); without a
    # sandbox, the process we started
    job_pid: int = 0
    stopping: bool = field(default=False)
    output: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LocalRuntime:
    name = "local"
    artifact_kind = DirectoryArtifact.kind

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        shutdown_grace: float = 10.0,
        *,
        sandbox: Sandbox | None = None,
        limiter: Limiter | None = None,
        log_settings: LogSettings | None = None,
    ) -> None:
        self._logs = data_dir / "logs"
        self._scratch = data_dir / "instances"
        self._artifacts = data_dir / "artifacts"
        self._host = host
        self._shutdown_grace = shutdown_grace
        self.sandbox = sandbox
        self.limiter = limiter or RlimitOnly()
        self._log_settings = log_settings or LogSettings()
        self._instances: set[LocalInstance] = set()
        self._watches: set[asyncio.Future[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.on_crash: CrashHandler | None = None

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        return self._session

    def isolation(self, spec: InstanceSpec) -> str:
        """One line for the push: how this instance is isolated and limited."""
        if self.sandbox is None:
            where = "not isolated (--insecure-single-user): it runs with the platform's rights"
        else:
            where = self.sandbox.describe(self.sandbox.uid_for(spec.family_slot))
        return f"{where}; limits: {self._describe_limits(spec)}"

    def _describe_limits(self, spec: InstanceSpec) -> str:
        limits = Limits.of(spec.resources)
        if isinstance(self.limiter, RlimitOnly):
            return self.limiter.apply(spec.name, limits).description
        return f"{limits.describe()} ({self.limiter.kind})"

    async def start(self, spec: InstanceSpec) -> LocalInstance:
        artifact = DirectoryArtifact.from_record(spec.artifact)
        port = free_port(self._host)
        uid = self.sandbox.uid_for(spec.family_slot) if self.sandbox is not None else None
        scratch = await asyncio.to_thread(self._fresh_scratch, spec.name, uid)
        home = scratch / "home"
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
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
        limits = await asyncio.to_thread(
            self.limiter.apply, self._group_name(spec), Limits.of(spec.resources)
        )
        log_path = self._logs / spec.job / f"{spec.name}.log"
        output = await asyncio.to_thread(RotatingLog, log_path, self._log_settings)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        output.write(f"--- {stamp} starting {spec.name} on port {port}\n".encode())
        try:
            process, job_pid = await self._spawn(artifact, argv, cwd, env, uid, home, spec, limits)
        except BaseException:
            output.close()
            await self._release(limits, scratch)
            raise
        instance = LocalInstance(
            spec, self._host, port, log_path, process, limits, scratch, job_pid=job_pid
        )
        assert process.stdout is not None
        instance.output = asyncio.ensure_future(_copy_output(process.stdout, output))
        self._instances.add(instance)
        watch = asyncio.ensure_future(self._watch(instance))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        log.info("started %s (pid %d, port %d)", spec.name, job_pid, port)
        return instance

    def _group_name(self, spec: InstanceSpec) -> str:
        return spec.name

    def _fresh_scratch(self, name: str, uid: int | None) -> Path:
        """`instances/<name>/{home,tmp}`, empty, owned by the instance's user: nothing of an
        earlier instance of the same name (or of an earlier owner of the job name) is left."""
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
        spec: InstanceSpec,
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
            hostname=spec.name[:63],
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
            raise InstanceFailed(f"{spec.name}: the sandbox did not start ({exc})") from None
        return process, job_pid

    async def _watch(self, instance: LocalInstance) -> None:
        status = await instance.process.wait()
        self._kill_groups(instance)  # whatever the job started goes with it
        if instance.output is not None:
            await asyncio.shield(asyncio.wait([instance.output]))
        if instance.stopping:
            return
        why = self._exit_reason(instance, status)
        log.warning("%s %s: %s", instance.name, why, await self._tail(instance))
        self._instances.discard(instance)
        await self._release(instance.limits, instance.scratch)
        if self.on_crash is not None:
            self.on_crash(instance)

    def _exit_reason(self, instance: LocalInstance, status: int | None) -> str:
        if instance.limits.out_of_memory():
            memory = instance.spec.resources.memory_max if instance.spec.resources else None
            return f"was killed: out of memory (resources.memory_max {memory})"
        return f"exited with status {status}"

    def _kill_groups(self, instance: LocalInstance) -> None:
        for group in {instance.process.pid, instance.job_pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    async def _release(self, limits: AppliedLimits, scratch: Path) -> None:
        """Remove the instance's cgroups (waiting, with a deadline, for the kernel to free
        their last tasks) and its scratch space."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CGROUP_RELEASE_TIMEOUT
        while not await asyncio.to_thread(limits.try_remove):
            if loop.time() > deadline:
                log.warning("cgroups of %s are still busy; removed at the next start", scratch)
                break
            await asyncio.sleep(CGROUP_RELEASE_INTERVAL)
        await asyncio.to_thread(_remove_scratch, scratch)

    async def _tail(self, instance: LocalInstance, lines: int = FAILURE_TAIL_LINES) -> str:
        found, _ = await asyncio.to_thread(
            tail_lines, instance.log_path, lines, self._log_settings.keep
        )
        text = (line.decode("utf-8", "replace").rstrip() for line in found)
        return " | ".join(line for line in text if line.strip())

    async def wait_ready(self, instance: Instance, timeout: float) -> None:
        assert isinstance(instance, LocalInstance)
        artifact = DirectoryArtifact.from_record(instance.spec.artifact)
        session = self._probe_session()
        exited = asyncio.ensure_future(instance.process.wait())

        async def failure() -> str | None:
            if not exited.done():
                return None
            why = self._exit_reason(instance, instance.process.returncode)
            return f"{instance.name} {why} before it was ready: {await self._tail(instance)}"

        try:
            await wait_until_ready(
                instance.name,
                timeout,
                ready=lambda: probe_once(session, instance.name, instance.url, artifact.probe),
                failure=failure,
                log_tail=lambda: self._tail(instance),
                wake=exited,
            )
        finally:
            if not exited.done():
                exited.cancel()

    async def adopt(self, spec: InstanceSpec) -> None:
        return None  # child processes end with the platform; they are always started anew

    def exclusive_port(self, artifact: Mapping[str, Any]) -> int | None:
        return None

    def port_taken(self, port: int) -> bool:
        return False  # no artifact of this runtime holds a fixed port

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        return []  # release directories are small (venvs are shared) and are kept

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[str]:
        """The last `tail` lines (read from the end of the log, in a thread), then with
        `follow` new lines as they are written, across rotations."""
        assert isinstance(instance, LocalInstance)
        lines, position = await asyncio.to_thread(
            tail_lines, instance.log_path, tail, self._log_settings.keep
        )
        for line in lines:
            yield line.decode("utf-8", "replace")
        if follow:
            async for line in follow_lines(instance.log_path, position, self._log_settings.keep):
                yield line.decode("utf-8", "replace")

    async def artifact_available(self, artifact: Mapping[str, Any]) -> bool:
        return DirectoryArtifact.from_record(artifact).path.is_dir()

    async def restarts(self, instance: Instance) -> int:
        return 0  # the deployer restarts crashed local instances and counts them itself

    async def remove_strays(self, keep: set[str]) -> list[str]:
        """Job processes of this data dir left by a platform that was killed (children die with
        the platform, but a job's own children may not): their process groups are killed. Their
        cgroups and scratch spaces are removed. Called before anything starts, so every such
        process is a leftover."""
        removed = await asyncio.to_thread(self._kill_leftovers)
        groups = await asyncio.to_thread(self.limiter.remove_strays, set())
        removed += [f"cgroup {group}" for group in groups]
        if self._scratch.is_dir():
            for scratch in self._scratch.iterdir():
                await asyncio.to_thread(_remove_scratch, scratch)
        return removed

    def _kill_leftovers(self) -> list[str]:
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
        groups.pop(own_group, None)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        return [f"process group {group}" for group in groups]

    async def stop(self, instance: Instance) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace; then SIGKILL to the
        groups anyway, so that no child of the job outlives it."""
        assert isinstance(instance, LocalInstance)
        instance.stopping = True
        process = instance.process
        if process.returncode is not None:
            # exited earlier (and its groups were killed then): its pid may be someone else's now
            self._instances.discard(instance)
            await self._release(instance.limits, instance.scratch)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(instance.job_pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._shutdown_grace)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0fs", instance.name, self._shutdown_grace)
        self._kill_groups(instance)
        await process.wait()
        if instance.output is not None:
            await asyncio.shield(asyncio.wait([instance.output]))
        self._instances.discard(instance)
        await self._release(instance.limits, instance.scratch)
        log.info("stopped %s (status %s)", instance.name, process.returncode)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(instance) for instance in list(self._instances)))
        for watch in self._watches:
            watch.cancel()
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
