"""What every runtime offers the controller: it runs releases, not instances.

A runtime starts a release with N replicas, says when they are ready (or why they will not be,
as a typed reason), gives the upstreams the router should use, stops a release, lists what it
holds, streams events (a replica died, came back, stopped being ready) and converges what runs
with what should (`reconcile`). Restarting a crashed replica is the runtime's own business, as
it is Kubernetes' and the Docker engine's: the controller only hears about it, and routes to
what `upstreams` says.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from buildpacks.build import Artifact
from buildpacks.manifest import Resources
from controller.runtimes.names import release_name, replica_name


def free_port(host: str) -> int:
    """A port that is free now (the kernel may hand it out again later: bind it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class FailureReason(StrEnum):
    """Why a release did not become ready."""

    CRASHED = "crashed"  # exited before it was ready (CrashLoopBackOff on Kubernetes)
    OUT_OF_MEMORY = "out of memory"  # killed at resources.memory_max
    IMAGE_PULL = "image pull failed"
    UNSCHEDULABLE = "unschedulable"  # no node can hold what resources ask for
    INIT_ERROR = "init error"  # the job's /live reported that its code failed to load
    TIMEOUT = "not ready in time"
    START_FAILED = "could not start"  # refused before anything ran (a port, a name, an image)
    UNREACHABLE = "runtime unreachable"


class ReleaseFailed(Exception):
    """A release did not become ready; `reason` says what kind of failure, the message says
    what happened in one line."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReleaseSpec:
    """What a runtime needs to run one release of a job version."""

    job: str
    version: str
    release: int
    artifact: Artifact
    env: Mapping[str, str]
    replicas: int = 1
    resources: Resources | None = None
    # the job family's number, never reused: the local runtime runs the family as its own uid
    family_slot: int = 0

    @property
    def name(self) -> str:
        """The name of everything that runs this release (see `names.release_name`)."""
        return release_name(self.job, self.version, self.release)

    def replica_name(self, index: int) -> str:
        return replica_name(self.name, index)


@dataclass(frozen=True)
class Replica:
    """One replica as the runtime sees it now: `up` means ready to receive calls."""

    name: str
    url: str
    up: bool


class RunningRelease(Protocol):
    """A runtime's handle on a release it started or adopted."""

    @property
    def spec(self) -> ReleaseSpec: ...

    def replicas(self) -> list[Replica]:
        """Every replica the release should have, ready or not."""
        ...


@dataclass(frozen=True)
class OwnedRelease:
    """Something a runtime holds for this platform, found by its labels or names."""

    name: str  # the release's name (`ReleaseSpec.name`)
    job: str
    version: str
    release: int


class EventKind(StrEnum):
    DIED = "died"  # a replica stopped without being asked to (crash, OOM, removed by hand)
    RESTARTED = "restarted"  # a replica that died is ready again
    UNREADY = "unready"  # a replica runs but fails its readiness probe
    READY = "ready"  # an unready replica is ready again


@dataclass(frozen=True)
class RuntimeEvent:
    kind: EventKind
    release: str  # the release's name
    replica: str
    detail: str = ""


class Runtime(Protocol):
    name: str
    artifact_kind: str  # what the buildpacks must build for it: "directory" or "image"

    @property
    def exclusive_ports(self) -> bool:
        """True when an artifact with a fixed port (`Artifact.fixed_port`) holds that port on
        the machine itself (docker's host network): a release replacing another of the same
        job version cannot start beside it, so the old one is stopped first."""
        ...

    def isolation(self, spec: ReleaseSpec) -> str:
        """One line for the push: how a replica of `spec` is isolated, which limits apply."""
        ...

    async def start(self, spec: ReleaseSpec) -> RunningRelease:
        """Start the release's replicas (without waiting for them); ReleaseFailed if the
        runtime refuses."""
        ...

    async def adopt(self, spec: ReleaseSpec) -> RunningRelease | None:
        """After a restart of the platform: the release still running from before, if this
        runtime keeps releases across restarts."""
        ...

    async def wait_ready(self, release: RunningRelease, timeout: float) -> None:
        """Return once every replica is ready; raise ReleaseFailed with the reason otherwise."""
        ...

    def upstreams(self, release: RunningRelease) -> list[str]:
        """The base URLs the router should send calls to now: ready replicas only."""
        ...

    async def stop(self, release: RunningRelease) -> None:
        """Stop every replica (SIGTERM, SIGKILL after `--stop-grace`) and remove what the
        release made. The router has drained it before."""
        ...

    async def list_owned(self) -> list[OwnedRelease]:
        """What this runtime holds for this platform, whether started by this process or not."""
        ...

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Replicas that died, came back, or stopped being ready, as they happen. One
        consumer (the supervisor); the stream ends when the runtime closes."""
        ...

    async def reconcile(self, desired: Collection[str]) -> list[str]:
        """Converge with what should run: remove what this platform owns whose release name is
        neither in `desired` nor held by this process (left by deploys or retirements a
        previous platform did not finish), and bring back replicas of held releases that are
        gone (a container removed by hand). Return one line per change."""
        ...

    async def restarts(self, release: RunningRelease) -> int:
        """How often the release's replicas were restarted after a crash."""
        ...

    def logs(self, release: RunningRelease, tail: int, follow: bool) -> AsyncIterator[str]:
        """Each replica's last `tail` output lines, prefixed `[<replica>] `, then (with
        `follow`) new ones as they come."""
        ...

    async def artifact_available(self, artifact: Artifact) -> bool:
        """Whether the artifact still exists (a rollback needs it)."""
        ...

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        """Remove old artifacts of `job` beyond the newest `keep` releases, never those in
        `in_use`; return what was removed."""
        ...

    async def close(self) -> None:
        """Stop what this runtime started that does not outlive the platform."""
        ...


class EventQueue:
    """The runtime side of `Runtime.events`: replicas report here, the supervisor reads."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()

    def put(self, event: RuntimeEvent) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[RuntimeEvent]:
        while (event := await self._queue.get()) is not None:
            yield event


async def merged_lines(streams: Mapping[str, AsyncIterator[str]]) -> AsyncIterator[str]:
    """The lines of several replicas' logs as they come, each prefixed `[<replica>] `."""
    merged: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump(name: str, lines: AsyncIterator[str]) -> None:
        try:
            async for line in lines:
                await merged.put(f"[{name}] {line}")
        finally:
            await merged.put(None)

    pumps = [asyncio.ensure_future(pump(name, lines)) for name, lines in streams.items()]
    try:
        remaining = len(pumps)
        while remaining:
            line = await merged.get()
            if line is None:
                remaining -= 1
            else:
                yield line
    finally:
        for task in pumps:
            task.cancel()
