"""The local runtime: each instance is a child process on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from buildpacks.build import DirectoryArtifact
from controller.runtimes.base import CrashHandler, Instance, InstanceSpec, free_port
from controller.runtimes.probes import PROBE_TIMEOUT, probe_once, wait_until_ready

log = logging.getLogger("racetrack.runtime.local")

# Only these are passed through from the platform's environment: a job must not inherit the
# platform's secrets by accident.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOG_POLL_INTERVAL = 0.2


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as handle:
            tail = deque(handle, maxlen=lines)
    except OSError:
        return ""
    return " | ".join(line.decode("utf-8", "replace").rstrip() for line in tail if line.strip())


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, in the platform


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Run in the child between fork and exec (so: as little as possible): SIGKILL when the
    platform dies, even by SIGKILL itself; and if it died before this line, exit now."""

    def set_up() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return set_up


@dataclass(eq=False)  # identity semantics: instances live in a set
class LocalInstance:
    spec: InstanceSpec
    host: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process
    stopping: bool = field(default=False)

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
        self, data_dir: Path, host: str = "127.0.0.1", shutdown_grace: float = 10.0
    ) -> None:
        self._logs = data_dir / "logs"
        self._homes = data_dir / "instances"
        self._artifacts = data_dir / "artifacts"
        self._host = host
        self._shutdown_grace = shutdown_grace
        self._instances: set[LocalInstance] = set()
        self._watches: set[asyncio.Future[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.on_crash: CrashHandler | None = None

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        return self._session

    async def start(self, spec: InstanceSpec) -> LocalInstance:
        artifact = DirectoryArtifact.from_record(spec.artifact)
        port = free_port(self._host)
        log_path = self._logs / spec.job / f"{spec.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        home = self._homes / spec.name
        home.mkdir(parents=True, exist_ok=True)
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update({k: artifact.expand(v) for k, v in artifact.env.items()})
        env.update(spec.env)
        env.update(
            {
                "HOME": str(home),
                "PORT": str(port),
                "LISTEN_HOST": self._host,
                # the job's own deadline ends before ours sends SIGKILL
                "RACETRACK_SHUTDOWN_GRACE": str(self._shutdown_grace * 0.8),
            }
        )
        with log_path.open("ab") as log_file:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log_file.write(f"--- {stamp} starting {spec.name} on port {port}\n".encode())
            log_file.flush()
            process = await asyncio.create_subprocess_exec(
                *(artifact.expand(part) for part in artifact.command),
                cwd=artifact.expand(artifact.cwd),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the whole job
                preexec_fn=_die_with_parent(os.getpid()),
            )
        instance = LocalInstance(spec, self._host, port, log_path, process)
        self._instances.add(instance)
        watch = asyncio.ensure_future(self._watch(instance))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        log.info("started %s (pid %d, port %d)", spec.name, process.pid, port)
        return instance

    async def _watch(self, instance: LocalInstance) -> None:
        status = await instance.process.wait()
        if instance.stopping:
            return
        # whatever the job started goes with it, before its process group id can be reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(instance.process.pid, signal.SIGKILL)
        log.warning(
            "%s exited with status %s: %s", instance.name, status, log_tail(instance.log_path)
        )
        self._instances.discard(instance)
        if self.on_crash is not None:
            self.on_crash(instance)

    async def wait_ready(self, instance: Instance, timeout: float) -> None:
        assert isinstance(instance, LocalInstance)
        artifact = DirectoryArtifact.from_record(instance.spec.artifact)
        session = self._probe_session()
        exited = asyncio.ensure_future(instance.process.wait())

        async def failure() -> str | None:
            if not exited.done():
                return None
            return (
                f"{instance.name} exited with status {instance.process.returncode}"
                f" before it was ready: {log_tail(instance.log_path)}"
            )

        async def tail() -> str:
            return log_tail(instance.log_path)

        try:
            await wait_until_ready(
                instance.name,
                timeout,
                ready=lambda: probe_once(session, instance.name, instance.url, artifact.probe),
                failure=failure,
                log_tail=tail,
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
        assert isinstance(instance, LocalInstance)
        with instance.log_path.open("rb") as handle:
            for line in deque(handle, maxlen=tail):
                yield line.decode("utf-8", "replace").rstrip("\n")
            pending = b""
            while follow:
                chunk = handle.read(65536)
                if not chunk:
                    # the file has no change notification to wait on: look again shortly
                    await asyncio.sleep(LOG_POLL_INTERVAL)
                    continue
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", "replace")

    async def artifact_available(self, artifact: Mapping[str, Any]) -> bool:
        return DirectoryArtifact.from_record(artifact).path.is_dir()

    async def restarts(self, instance: Instance) -> int:
        return 0  # the deployer restarts crashed local instances and counts them itself

    async def remove_strays(self, keep: set[str]) -> list[str]:
        """Job processes of this data dir left by a platform that was killed (children die with
        the platform, but a job's own children may not): their process groups are killed.
        Called before anything starts, so every such process is a leftover."""
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
        """SIGTERM to the instance's process group, SIGKILL after the grace; then SIGKILL to
        the group anyway, so that no child of the job outlives it."""
        assert isinstance(instance, LocalInstance)
        instance.stopping = True
        process = instance.process
        if process.returncode is not None:
            # exited earlier (and its group was killed then): its pid may be someone else's now
            self._instances.discard(instance)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._shutdown_grace)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0fs", instance.name, self._shutdown_grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        self._instances.discard(instance)
        log.info("stopped %s (status %s)", instance.name, process.returncode)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(instance) for instance in list(self._instances)))
        for watch in self._watches:
            watch.cancel()
        if self._session is not None:
            await self._session.close()
